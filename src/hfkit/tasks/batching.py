"""The inference loop every task shares: tokenize once unpadded, sort by length, pad per batch, restore order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..errors import HfkitError
from ..heap import keep_freed_memory

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TaskInputError(HfkitError, ValueError):
    """Inputs a task cannot run on (no mask token, empty question, unknown task, ...)."""


def as_list(inputs: str | Sequence[str], what: str = "texts") -> tuple[list[str], bool]:
    """`(list of strings, was_single)`; a bare string is one input."""
    if isinstance(inputs, str):
        return [inputs], True
    items = list(inputs)
    if not all(isinstance(item, str) for item in items):
        raise TaskInputError(f"`{what}` must be a string or a list of strings, got {type(inputs).__name__} with other items.")
    return items, False


def rows(encoding: Any) -> list[dict[str, list[int]]]:
    """Split an unpadded batch encoding into one model-input dict per row."""
    keys = [key for key in MODEL_INPUTS if key in encoding]
    return [{key: encoding[key][i] for key in keys} for i in range(len(encoding["input_ids"]))]


def model_device(model: torch.nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else next(model.parameters()).device


def unpad(values: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """(B, T, ...) padded → B tensors (T_i, ...) of the attended positions, as float32 on the CPU."""
    values, mask = values.float().cpu(), attention_mask.bool().cpu()
    return [row[keep] for row, keep in zip(values, mask)]


def run_batched(
    model: torch.nn.Module,
    tokenizer: Any,
    features: Sequence[dict[str, list[int]]],
    batch_size: int,
    step: Callable[[Any, dict[str, torch.Tensor]], Sequence[Any]],
) -> list[Any]:
    """Run `model` over unpadded `features` in batches of similar length; `step(output, batch)` gives one
    result per row of a batch. Results come back in input order. The model runs in eval mode under
    `torch.inference_mode()` on its own device; its train/eval state is restored afterwards. On the CPU, freed
    large buffers stay in the heap meanwhile (`heap.keep_freed_memory`: no page faults per tensor)."""
    if batch_size < 1:
        raise TaskInputError(f"batch_size must be >= 1, got {batch_size}.")
    order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
    results: list[Any] = [None] * len(features)
    device, was_training = model_device(model), model.training
    model.eval()
    keep = keep_freed_memory() if device.type == "cpu" else contextlib.nullcontext()
    try:
        with torch.inference_mode(), keep:
            for lo in range(0, len(order), batch_size):
                chunk = order[lo : lo + batch_size]
                padded = tokenizer.pad([features[i] for i in chunk], return_tensors="pt")
                batch = {key: padded[key].to(device) for key in MODEL_INPUTS if key in padded}
                for i, result in zip(chunk, step(model(**batch), batch), strict=True):
                    results[i] = result
    finally:
        model.train(was_training)
    return results
