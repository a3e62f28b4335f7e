"""Masked-token prediction with the transformers `fill-mask` pipeline's output format."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .batching import TaskInputError, as_list, rows, run_batched, unpad


def fill_mask(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str | Sequence[str],
    top_k: int = 5,
    batch_size: int = 32,
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """The `top_k` best tokens for the one mask token in each text:
    `[{"score", "token", "token_str", "sequence"}]`, best first; a list of texts gives a list of those."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise TaskInputError("The tokenizer defines no mask token, so it cannot be used for fill-mask.")
    if top_k < 1:
        raise TaskInputError(f"top_k must be >= 1, got {top_k}.")
    texts, single = as_list(text)
    if not texts:
        return []
    encoding = tokenizer(texts, padding=False, truncation=True, return_tensors=None)
    positions = []
    for i, ids in enumerate(encoding["input_ids"]):
        found = [j for j, token_id in enumerate(ids) if token_id == mask_id]
        if len(found) != 1:
            raise TaskInputError(
                f"fill_mask needs exactly one mask token {tokenizer.mask_token!r} per text; text {i} has "
                f"{len(found)} (after truncation to {len(ids)} tokens): {texts[i][:80]!r}"
            )
        positions.append(found[0])

    logits = run_batched(model, tokenizer, rows(encoding), batch_size,
                         lambda out, batch: unpad(out.logits, batch["attention_mask"]))  # (T_i, V) each
    results = []
    for ids, position, row in zip(encoding["input_ids"], positions, logits):
        probs = row[position].softmax(-1)  # (V,)
        values, predictions = probs.topk(min(top_k, probs.numel()))
        candidates = []
        for score, token in zip(values.tolist(), predictions.tolist()):
            filled = list(ids)
            filled[position] = token
            candidates.append({"score": score, "token": token, "token_str": tokenizer.decode([token]),
                               "sequence": tokenizer.decode(filled, skip_special_tokens=True)})
        results.append(candidates)
    return results[0] if single else results
