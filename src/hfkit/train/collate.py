"""The data side of one training task: rows → features (data.py) → padded batches of model keyword arguments.

Batches are padded on the right to their longest row, whatever the tokenizer's padding_side: labels and QA
positions index tokens from the left, and decoder heads find each row's last token by its pad id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from . import data

TASKS = ("classify", "ner", "qa", "mlm", "causal-lm")
HEAD_TASKS = {"sequence-classification": "classify", "token-classification": "ner", "question-answering": "qa",
              "masked-lm": "mlm", "causal-lm": "causal-lm"}  # hfkit head `task` → training task
MASK_SHARE, RANDOM_SHARE = 0.8, 0.5  # of masked tokens: 80% [MASK], then half the rest (10%) a random token


def task_of(model: Any) -> str:
    """The training task of an hfkit head model (its `task` attribute)."""
    head = getattr(model, "task", None)
    if head not in HEAD_TASKS:
        raise ConfigError(f"Cannot train {type(model).__name__} (head {head!r}): the Trainer supports the heads "
                          f"{', '.join(HEAD_TASKS)}. Fix: load the model with the matching Auto class, e.g. "
                          f"AutoModelForSequenceClassification.")
    return HEAD_TASKS[head]


@dataclass
class TaskData:
    """`featurize` rows, `collate` features into a batch, `lengths` for length-grouped sampling."""

    task: str
    tokenizer: Any
    config: Any
    max_length: int
    doc_stride: int
    mlm_probability: float
    block_size: int
    pad_id: int | None
    eos_id: int | None
    pad_to_multiple_of: int | None = None  # fewer distinct shapes for compiled / CUDA-graph steps

    def featurize(self, rows: Sequence[dict]) -> list[dict]:
        """Tokenized features (python lists/ints) with their labels; QA rows may give several windows each."""
        if not len(rows):
            return []
        t, c = self.tokenizer, self.config
        if self.task == "classify":
            return data.featurize_classify(t, c, rows, self.max_length)
        if self.task == "ner":
            return data.featurize_ner(t, c, rows, self.max_length)
        if self.task == "qa":
            return data.featurize_qa(t, rows, self.max_length, self.doc_stride)
        if self.task == "mlm":
            return data.featurize_mlm(t, rows, self.max_length)
        return data.featurize_causal_lm(t, rows, self.eos_id, self.block_size)

    @staticmethod
    def lengths(features: Sequence[dict]) -> list[int]:
        return [len(feature["input_ids"]) for feature in features]

    def collate(self, features: Sequence[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Right-pad to the longest feature; the model's keyword arguments. MLM masks with `generator` only."""
        if not features:
            raise ConfigError("collate() needs at least one feature.")
        lengths = self.lengths(features)
        longest = max(lengths)
        if self.pad_to_multiple_of:
            rounded = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
            longest = max(longest, min(rounded, self.max_length))
        if self.pad_id is None and min(lengths) < longest:
            raise ConfigError("These features differ in length but neither the tokenizer nor the config has a pad "
                              "token. Fix: set `tokenizer.pad_token = tokenizer.eos_token`.")
        ids = [f["input_ids"] for f in features]
        batch = {"input_ids": _pad(ids, self.pad_id, longest),
                 "attention_mask": _pad([f.get("attention_mask") or [1] * len(f["input_ids"]) for f in features], 0, longest)}
        if "token_type_ids" in features[0]:
            batch["token_type_ids"] = _pad([f["token_type_ids"] for f in features], 0, longest)
        if self.task in ("ner", "causal-lm"):
            batch["labels"] = _pad([f["labels"] for f in features], data.IGNORE, longest)
        elif self.task == "classify":
            batch["labels"] = torch.tensor([f["labels"] for f in features])  # long ids, or floats
        elif self.task == "qa":
            for key in ("start_positions", "end_positions"):
                batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
        else:
            batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], batch["attention_mask"], generator)
        return batch

    def mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT masking (transformers' DataCollatorForLanguageModeling): `mlm_probability` of the non-special,
        non-pad tokens are picked; of those 80% → mask token, 10% → a random token, 10% kept. Labels are the
        original ids at picked tokens, -100 elsewhere."""
        shape = input_ids.shape  # (B, T)
        special = torch.isin(input_ids, torch.tensor(self.tokenizer.all_special_ids)) | (attention_mask == 0)
        picked = torch.bernoulli(torch.full(shape, self.mlm_probability).masked_fill(special, 0.0), generator=generator).bool()
        if not picked.any() and not special.all():  # a batch with no target would give a NaN loss (and NaN weights)
            candidates = (~special).flatten().nonzero().squeeze(1)
            choice = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            picked.view(-1)[choice] = True
        labels = input_ids.masked_fill(~picked, data.IGNORE)
        masked = torch.bernoulli(torch.full(shape, MASK_SHARE), generator=generator).bool() & picked
        randomized = torch.bernoulli(torch.full(shape, RANDOM_SHARE), generator=generator).bool() & picked & ~masked
        words = torch.randint(self.vocab_size, shape, generator=generator)
        input_ids = input_ids.masked_fill(masked, self.tokenizer.mask_token_id)
        return torch.where(randomized, words, input_ids), labels

    @property
    def vocab_size(self) -> int:
        """Random replacement tokens come from here: the tokenizer's vocabulary, within the model's embeddings."""
        return min(len(self.tokenizer), getattr(self.config, "vocab_size", None) or len(self.tokenizer))


def _pad(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def make_task_data(task: str, tokenizer: Any, config: Any, *, max_length: int, doc_stride: int = 128,
                   mlm_probability: float = 0.15, block_size: int | None = None,
                   pad_to_multiple_of: int | None = None) -> TaskData:
    """Check the settings against the task, tokenizer and model config; the TaskData that featurizes and collates."""
    if task not in TASKS:
        raise ConfigError(f"Unknown training task {task!r}; use one of {', '.join(TASKS)}.")
    for name, value in (("max_length", max_length), ("block_size", block_size or max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")
    if task == "qa" and not 0 <= doc_stride < max_length:
        raise ConfigError(f"doc_stride ({doc_stride}) must be >= 0 and smaller than max_length ({max_length}).")
    if task == "mlm":
        if not 0 < mlm_probability < 1:
            raise ConfigError(f"mlm_probability must be in (0, 1), got {mlm_probability}.")
        if tokenizer.mask_token_id is None:
            raise ConfigError("Masked-LM training needs a tokenizer with a mask token; this one has none. Fix: use the "
                              "model's own tokenizer, or train a causal LM instead.")
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, list):  # several stop ids: the first is the document separator
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if task == "causal-lm" and eos is None:
        raise ConfigError("Causal-LM packing ends each document with EOS, but neither the config nor the tokenizer "
                          "has eos_token_id. Fix: set config.eos_token_id or the tokenizer's eos_token.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else getattr(config, "pad_token_id", None)
    return TaskData(task, tokenizer, config, max_length, doc_stride, mlm_probability, block_size or max_length, pad, eos,
                    pad_to_multiple_of)
