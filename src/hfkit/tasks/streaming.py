"""Streaming generation: the new tokens of generate_tokens as they are chosen, and text pieces from them.

generate_tokens runs in a worker thread (as transformers' TextIteratorStreamer does) and each token reaches the
stream as the loop feeds it back to the model; the text pieces join to exactly the decode of all new tokens.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import torch

from ..generation.decode import generate_tokens


def run_generation(model, input_ids: torch.Tensor, options: dict, tap=None) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return generate_tokens(model if tap is None else _Tap(model, tap), input_ids, torch.ones_like(input_ids),
                                   **options)
    finally:
        model.train(was_training)


class _Cancelled(Exception):
    """The consumer closed the stream: stop generating."""


class _Tap:
    """The model as generate_tokens sees it, reporting the tokens fed to one-row decode steps as they become final:
    a step's first token is the one just chosen (so the stream runs one step behind the loop; the last token comes
    with the result). Speculative decoding feeds candidates after it; those the model kept are reported at the next
    step, whose position tells how many were kept."""

    def __init__(self, model, on_token):
        self._model, self._on_token = model, on_token
        self._candidates: list[int] = []  # the last step's tokens after its first, not yet known to be kept
        self._position = 0  # that step's first position

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, input_ids, *args, **kwargs):
        if "logits_to_keep" not in kwargs and input_ids.shape[0] == 1:  # a decode step, not a prefill
            if self._candidates:
                kept = int(args[1][0, 0]) - self._position - 1  # args: attention_mask, position_ids, cache
                for token in self._candidates[:kept]:
                    self._on_token(token)
            tokens = input_ids[0].tolist()
            self._on_token(tokens[0])
            self._candidates = tokens[1:]
            self._position = int(args[1][0, 0]) if self._candidates else 0
        return self._model(input_ids, *args, **kwargs)


def token_stream(model, input_ids: torch.Tensor, options: dict) -> Iterator[int]:
    """The new token ids of generate_tokens as they are chosen: it runs in a worker thread while this yields.
    (Beam search decodes several rows at once: its tokens all come at the end.)"""
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()

    def on_token(token: int) -> None:
        if cancelled.is_set():
            raise _Cancelled
        events.put(("token", token))

    def work() -> None:
        try:
            events.put(("done", run_generation(model, input_ids, options, tap=on_token)))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            events.put(("error", err))

    worker = threading.Thread(target=work, name="hfkit-stream", daemon=True)
    worker.start()
    sent = 0
    try:
        while True:
            kind, value = events.get()
            if kind == "token":
                sent += 1
                yield value
            elif kind == "error":
                raise value
            else:
                yield from value[0, input_ids.shape[1] + sent:].tolist()
                return
    finally:
        cancelled.set()
        worker.join()


def text_pieces(tokenizer, tokens: Iterator[int], skip_special_tokens: bool) -> Iterator[str]:
    """Token ids → text pieces whose concatenation is the decode of all ids. A piece is emitted once the text so far
    no longer ends in an incomplete character (U+FFFD from a partial UTF-8 sequence); with the tokenizer's space
    clean-up on, the last word is held back too, as clean-up may still change it. (Decoding is assumed prefix-stable,
    as byte-level BPE, WordPiece and Metaspace decoders are.)"""
    ids: list[int] = []
    emitted = ""
    hold_word = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        if text.endswith("\ufffd") or not text.startswith(emitted):
            continue
        end = len(text)
        if hold_word:
            end = max((i for i, c in enumerate(text) if c.isspace()), default=len(emitted))
        if end > len(emitted):
            yield text[len(emitted):end]
            emitted = text[:end]
    text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    if text != emitted:
        yield text[len(emitted):]
