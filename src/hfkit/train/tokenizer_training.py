"""Train a byte-level BPE tokenizer (GPT-2 / Llama-3 style) from text files, for pretraining from scratch."""

from __future__ import annotations

import glob
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from ..errors import ConfigError
from ..tokenizer import SPECIAL_TOKENS, VERY_LARGE_INTEGER, Tokenizer

DEFAULT_SPECIAL_TOKENS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}
BYTE_ALPHABET = len(pre_tokenizers.ByteLevel.alphabet())  # 256: every byte is a token, so nothing is unknown


def expand_files(files: list[str | Path]) -> list[Path]:
    """Paths and (recursive) glob patterns → the files they name, in order, without duplicates."""
    if isinstance(files, (str, Path)):
        files = [files]
    found: dict[Path, None] = {}
    for entry in files:
        if os.path.isfile(entry):
            matches = [Path(entry)]
        elif os.path.isdir(entry):
            raise ConfigError(f"{str(entry)!r} is a folder. Fix: pass a pattern for its files, e.g. '{entry}/**/*.txt'.")
        elif glob.has_magic(str(entry)):
            matches = [Path(p) for p in sorted(glob.glob(str(entry), recursive=True)) if os.path.isfile(p)]
            if not matches:
                raise ConfigError(f"The pattern {str(entry)!r} matches no file (from {os.getcwd()}). "
                                  f"Fix: check the pattern; use '**' to descend into folders, e.g. 'src/**/*.py'.")
        else:
            raise ConfigError(f"The training file {str(entry)!r} does not exist. Fix: check the path.")
        found.update(dict.fromkeys(matches))
    if not found:
        raise ConfigError("No training files given. Fix: pass at least one text file or glob pattern.")
    return list(found)


def _lines(paths: list[Path], skipped: list[Path]) -> Iterator[str]:
    """The lines of every readable file (UTF-8, bad bytes replaced); unreadable files go to `skipped`."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                yield from f
        except OSError:
            skipped.append(path)


def _specials(special_tokens: dict | None) -> dict[str, str | list[str]]:
    specials = dict(DEFAULT_SPECIAL_TOKENS if special_tokens is None else special_tokens)
    unknown = set(specials) - {*SPECIAL_TOKENS, "additional_special_tokens"}
    if unknown:
        raise ConfigError(f"Unknown special token names {sorted(unknown)}. Fix: use {list(SPECIAL_TOKENS)} "
                          f"or 'additional_special_tokens' (a list).")
    return {name: token for name, token in specials.items() if token}


def _write_atomic(path: Path, data: str) -> None:
    """Write to a temp file beside `path`, then replace it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def train_bpe_tokenizer(files: list[str | Path], vocab_size: int, out_dir: str | Path, *, min_frequency: int = 2,
                        special_tokens: dict | None = None, model_max_length: int | None = None) -> Tokenizer:
    """Train a byte-level BPE on text files or glob patterns; save it in transformers' layout to `out_dir`.

    `special_tokens` maps names (bos_token, eos_token, pad_token, ..., additional_special_tokens) to tokens,
    by default `<|endoftext|>` as bos and eos and `<|pad|>` as pad; they take the first ids, in order. Any byte
    sequence is encodable, so no unk token is needed. `vocab_size` counts the special tokens and the 256 bytes;
    the result has at most that many tokens. `model_max_length` None means no limit. Returns the loaded tokenizer.
    """
    specials = _specials(special_tokens)
    extras = list(specials.pop("additional_special_tokens", []))
    tokens = list(dict.fromkeys([*specials.values(), *extras]))
    if vocab_size < BYTE_ALPHABET + len(tokens):
        raise ConfigError(f"vocab_size={vocab_size} leaves no room for the {BYTE_ALPHABET} byte tokens and "
                          f"{len(tokens)} special tokens. Fix: ask for at least {BYTE_ALPHABET + len(tokens)}.")
    paths = expand_files(files)

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    skipped: list[Path] = []
    backend.train_from_iterator(_lines(paths, skipped), trainer)
    if len(skipped) == len(paths):
        raise ConfigError(f"None of the {len(paths)} training files could be read (first: {paths[0]}). "
                          f"Fix: check their permissions.")
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} unreadable training file(s), e.g. {skipped[0]}.", UserWarning,
                      stacklevel=2)

    config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials,
              "model_max_length": VERY_LARGE_INTEGER if model_max_length is None else model_max_length,
              "add_bos_token": False, "add_eos_token": False, "clean_up_tokenization_spaces": False}
    special_map = dict(specials)
    if extras:
        config["additional_special_tokens"] = special_map["additional_special_tokens"] = extras
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "tokenizer.json", backend.to_str(pretty=True))
    _write_atomic(out_dir / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(out_dir / "special_tokens_map.json", json.dumps(special_map, indent=2, ensure_ascii=False) + "\n")
    return Tokenizer.from_dir(out_dir)


def tokenizer_special_ids(tokenizer) -> dict[str, int | None]:
    """The ids a model config needs from its tokenizer: bos/eos/pad token ids and the vocabulary size."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}
