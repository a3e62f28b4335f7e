"""Extractive question answering with the transformers (<= 5.2) `question-answering` pipeline's semantics.

Each (question, context) pair is cut into overlapping windows (`[CLS] question [SEP] context-part [SEP]`).
Per window, start and end logits outside the context (question, special and pad tokens; the CLS token
stays in) are set to -10000 and softmaxed; a span scores p(start) * p(end) with start <= end and at
most `max_answer_len` tokens. Spans are widened to whole words, equal answers (case-insensitive) from
several windows add their scores, and the empty answer scores the lowest p(CLS start) * p(CLS end).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import TaskInputError, rows, run_batched, unpad

MASKED = -10000.0  # the pipeline's fill value: masked tokens keep a (vanishing) share of the softmax


def _pairs(question: str | Sequence[str], context: str | Sequence[str]) -> tuple[list[str], list[str], bool]:
    single = isinstance(question, str) and isinstance(context, str)
    questions = [question] if isinstance(question, str) else list(question)
    contexts = [context] * len(questions) if isinstance(context, str) else list(context)
    if len(questions) != len(contexts):
        raise TaskInputError(f"Got {len(questions)} questions but {len(contexts)} contexts; pass one context per question.")
    for name, values in (("question", questions), ("context", contexts)):
        if not all(isinstance(value, str) and value for value in values):
            raise TaskInputError(f"Every {name} must be a non-empty string.")
    return questions, contexts, single


def _word_span(offsets: list, word_ids: list, sequence_ids: list, s: int, e: int) -> tuple[int, int]:
    """Char span of the context words holding tokens s..e, within this window (tokenizers' `word_to_chars`)."""
    def chars(token: int, side: int) -> int:
        word = word_ids[token]
        same = [j for j, (w, q) in enumerate(zip(word_ids, sequence_ids)) if w == word and q == 1]
        return offsets[same[0] if side == 0 else same[-1]][side]

    if word_ids[s] is None or word_ids[e] is None:
        return offsets[s][0], offsets[e][1]
    return chars(s, 0), chars(e, 1)


def _window_spans(start: torch.Tensor, end: torch.Tensor, allowed: torch.Tensor, top_k: int,
                  max_answer_len: int) -> tuple[list[tuple[int, int, float]], float]:
    """The best (start, end, score) spans of one window, best first, and its null (CLS) score."""
    start = start.masked_fill(~allowed, MASKED).softmax(-1)  # (T,)
    end = end.masked_fill(~allowed, MASKED).softmax(-1)  # (T,)
    null = (start[0] * end[0]).item()
    start[0] = end[0] = 0.0
    scores = torch.outer(start, end).triu().tril(max_answer_len - 1)  # (T, T): start <= end < start + len
    values, flat = scores.flatten().topk(min(top_k, scores.numel()))
    spans = []
    for value, index in zip(values.tolist(), flat.tolist()):
        s, e = divmod(index, scores.shape[1])
        if value > 0 and allowed[s] and allowed[e]:
            spans.append((s, e, value))
    return spans, null


def answer(
    model: torch.nn.Module,
    tokenizer: Any,
    question: str | Sequence[str],
    context: str | Sequence[str],
    top_k: int = 1,
    max_answer_len: int = 15,
    doc_stride: int = 128,
    max_seq_len: int = 384,
    handle_impossible_answer: bool = False,
    batch_size: int = 32,
) -> dict[str, Any] | list[dict[str, Any]] | list:
    """`{"score", "start", "end", "answer"}` with the answer's char span in the context; a list of the
    `top_k` best when `top_k > 1`; lists of questions/contexts give a list of those (one context is
    shared by all questions; None where a context has no tokens). `max_seq_len` is capped at the
    tokenizer's `model_max_length`."""
    if top_k < 1 or max_answer_len < 1:
        raise TaskInputError(f"top_k and max_answer_len must be >= 1, got {top_k} and {max_answer_len}.")
    max_seq_len = min(max_seq_len, getattr(tokenizer, "model_max_length", max_seq_len))
    if doc_stride >= max_seq_len:
        raise TaskInputError(f"doc_stride ({doc_stride}) must be smaller than max_seq_len ({max_seq_len}).")
    questions, contexts, single = _pairs(question, context)
    if not questions:
        return []

    encoding = tokenizer(questions, contexts, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
                         return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
                         return_tensors=None)
    logits = run_batched(model, tokenizer, rows(encoding), batch_size,
                         lambda out, batch: zip(unpad(out.start_logits, batch["attention_mask"]),
                                                unpad(out.end_logits, batch["attention_mask"])))  # (T_i,) pairs

    cls_id = getattr(tokenizer, "cls_token_id", None)
    answers: list[list[dict[str, Any]]] = [[] for _ in questions]
    null_scores = [1_000_000.0] * len(questions)
    for window, (start, end) in enumerate(logits):
        example = encoding["overflow_to_sample_mapping"][window]
        ids, offsets = encoding["input_ids"][window], encoding["offset_mapping"][window]
        sequence_ids, word_ids = encoding.sequence_ids(window), encoding.word_ids(window)
        allowed = torch.tensor([q == 1 or t == cls_id for q, t in zip(sequence_ids, ids)])  # (T,)
        spans, null = _window_spans(start, end, allowed, top_k * 2 + 10, max_answer_len)
        null_scores[example] = min(null_scores[example], null)
        found = answers[example]
        for s, e, score in spans:
            first, last = _word_span(offsets, word_ids, sequence_ids, s, e)
            text = contexts[example][first:last]
            same = next((item for item in found if item["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score
            else:
                found.append({"score": score, "start": first, "end": last, "answer": text})

    results = []
    for found, null in zip(answers, null_scores):
        if handle_impossible_answer:
            found.append({"score": null, "start": 0, "end": 0, "answer": ""})
        best = sorted(found, key=lambda item: item["score"], reverse=True)[:top_k]
        results.append(best if top_k > 1 else best[0] if best else None)
    return results[0] if single else results
