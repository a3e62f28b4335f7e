"""Stop strings with transformers' StopStringCriteria semantics.

Each token id maps to its text piece (bytes for byte-level and byte-fallback vocabularies); a row stops when,
in the concatenated pieces of its last `W` tokens (W = the longest stop string's length), a stop string occurs
with its end inside the final token's piece. The check reads the last W ids back to the host, so it costs a
sync per step, and only when stop strings are given.
"""

from __future__ import annotations

import json

import torch

PREFIX = "abcdef"  # decoded before each token so decoders that strip a leading space keep it, as transformers


def byte_level_chars() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: char → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def decoder_types(backend) -> set[str]:
    """The `type`s anywhere in the backend decoder's JSON state."""
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return set()
    found = {type(decoder).__name__}
    try:
        state = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return found

    def walk(node):
        if isinstance(node, dict):
            found.add(node.get("type"))
            [walk(v) for v in node.values()]
        elif isinstance(node, list):
            [walk(v) for v in node]

    walk(state)
    return found


def token_pieces(tokenizer) -> dict[int, str | bytes]:
    """Each vocabulary id's text piece, cleaned as transformers' `StopStringCriteria.clean_tokenizer_vocab`."""
    backend = tokenizer.backend_tokenizer
    types = decoder_types(backend)
    mode = "byte_fallback" if "ByteFallback" in types else "byte_level" if "ByteLevel" in types else None
    byte_of = byte_level_chars() if mode == "byte_level" else None
    base = [backend.id_to_token(i) for i in backend.encode(PREFIX, add_special_tokens=False).ids]
    pieces = {}
    for token, index in backend.get_vocab(with_added_tokens=True).items():
        if mode == "byte_level" and all(c in byte_of for c in token):
            pieces[index] = bytes(byte_of[c] for c in token)
            continue
        if mode == "byte_fallback" and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            pieces[index] = bytes([int(token[3:5], 16)])
            continue
        text = backend.decoder.decode(base + [token]) if backend.decoder is not None else " ".join(base + [token])
        text = text[text.index(PREFIX) + len(PREFIX):]
        pieces[index] = text.encode("utf-8") if mode else text
    return pieces


class StopStrings:
    """Callable on ids (B, L) → (B,) bool: the rows whose text now ends a stop string."""

    def __init__(self, tokenizer, stop_strings: str | list[str]):
        strings = [stop_strings] if isinstance(stop_strings, str) else list(stop_strings)
        self.pieces = token_pieces(tokenizer)
        as_bytes = isinstance(next(iter(self.pieces.values())), bytes)
        self.strings = [s.encode("utf-8") for s in strings] if as_bytes else strings
        self.window = max(len(s) for s in self.strings)
        self.empty = b"" if as_bytes else ""

    def matches(self, ids: list[int]) -> bool:
        pieces = [self.pieces.get(i, self.empty) for i in ids]
        text = self.empty.join(pieces)
        last_start = len(text) - len(pieces[-1])  # a match must end inside the final token's piece
        for stop in self.strings:
            start = text.find(stop)
            while start != -1:
                if start + len(stop) > last_start:
                    return True
                start = text.find(stop, start + 1)
        return False

    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B,)
        rows = input_ids[:, -self.window:].tolist()
        return torch.tensor([self.matches(row) for row in rows], dtype=torch.bool, device=input_ids.device)
