"""Text classification with the transformers `text-classification` pipeline's output format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import TaskInputError, as_list, rows, run_batched

FUNCTIONS = ("softmax", "sigmoid", "none")


def _default_function(config: Any) -> str:
    """The pipeline's rule: regression → none; multi-label or one label → sigmoid; else softmax."""
    problem_type = getattr(config, "problem_type", None)
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def classify(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    top_k: int | None = 1,
    function_to_apply: str | None = None,
    batch_size: int = 32,
    text_pairs: str | Sequence[str] | None = None,
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """Per text, `[{"label", "score"}]` sorted by score, best `top_k` (`None`: all labels).

    `function_to_apply` is "softmax", "sigmoid" or "none" (default: from the model config, as the
    pipeline decides). A single string gives a single list. Inputs longer than the tokenizer's
    `model_max_length` are truncated."""
    texts, single = as_list(texts)
    if not texts:
        return []
    pairs = None
    if text_pairs is not None:
        pairs, _ = as_list(text_pairs, "text_pairs")
        if len(pairs) != len(texts):
            raise TaskInputError(f"Got {len(texts)} texts but {len(pairs)} text_pairs; pass one pair per text.")
    function = (function_to_apply or _default_function(model.config)).lower()
    if function not in FUNCTIONS:
        raise TaskInputError(f"function_to_apply must be one of {FUNCTIONS}, got {function_to_apply!r}.")
    if top_k is not None and top_k < 1:
        raise TaskInputError(f"top_k must be >= 1 or None, got {top_k}.")

    encoding = tokenizer(texts, pairs, padding=False, truncation=True, return_tensors=None)
    logits = run_batched(model, tokenizer, rows(encoding), batch_size, lambda out, _: out.logits.float().cpu())  # (L,) each

    id2label = model.config.id2label
    results = []
    for row in logits:
        scores = row.softmax(-1) if function == "softmax" else row.sigmoid() if function == "sigmoid" else row
        ranked = sorted(
            ({"label": id2label[i], "score": score} for i, score in enumerate(scores.tolist())),
            key=lambda item: item["score"],
            reverse=True,
        )
        results.append(ranked if top_k is None else ranked[:top_k])
    return results[0] if single else results
