"""Pretraining from scratch: files → a byte-level BPE tokenizer → a small decoder from a config → packed causal-LM
training with samples along the way → OUT/tokenizer, OUT/model (loadable by hfkit and transformers)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from .config import TrainingConfig
from .tokenizer_training import expand_files, tokenizer_special_ids, train_bpe_tokenizer

# A small model from scratch learns with a larger lr than a fine-tune: TrainingConfig's defaults for pretraining.
PRETRAIN_DEFAULTS = {"lr": 1e-3, "batch_size": 8, "warmup_ratio": 0.05, "schedule": "cosine"}


def read_documents(paths: Sequence[Path]) -> list[dict[str, str]]:
    """One `{"text"}` row per readable, non-empty file."""
    rows = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            rows.append({"text": text})
    if not rows:
        raise ConfigError("None of the files could be read as text; nothing to pretrain on.")
    return rows


def model_from_config(model_config: dict[str, Any] | str | Path, tokenizer):
    """A randomly initialised causal LM of the config's family, its vocabulary and special ids from `tokenizer`."""
    from ..models.auto import AutoModelForCausalLM, family_of, is_decoder

    raw = json.loads(Path(model_config).read_text(encoding="utf-8")) if isinstance(model_config, (str, Path)) else dict(model_config)
    raw.setdefault("model_type", "llama")
    family = family_of(raw["model_type"])
    if not is_decoder(family):
        raise ConfigError(f"Pretraining builds a causal LM; model_type {raw['model_type']!r} is an encoder. "
                          "Use a decoder config (llama, mistral, qwen2, qwen3, gemma, phi3, gpt2).")
    raw.update(tokenizer_special_ids(tokenizer))
    return AutoModelForCausalLM.from_config(family.read_config(raw))


def sampler(prompt: str, every: int, max_new_tokens: int, show: Callable[[int, str], None], seed: int = 0):
    """A Trainer callback: at the first log record past each multiple of `every` steps, sample a continuation of
    `prompt` (with its own RNG, so training is unchanged) and `show` it."""
    from ..tasks.generate import generate_text

    shown = [0]  # how many multiples of `every` have had their sample (samples ride on the log records)

    def callback(trainer, record: dict[str, Any]) -> None:
        if "loss" not in record or record["step"] // every <= shown[0]:
            return
        shown[0] = record["step"] // every
        text = generate_text(trainer.model, trainer.tokenizer, prompt, max_new_tokens=max_new_tokens, do_sample=True,
                             temperature=0.8, top_k=50, generator=torch.Generator(trainer.world.device).manual_seed(seed))
        trainer.model.train()
        record["sample"] = text
        show(record["step"], text)

    return callback


def pretrain(files: Sequence[str | Path], model_config: dict[str, Any] | str | Path, out_dir: str | Path,
             tokenizer_vocab: int = 8000, config: TrainingConfig | None = None, sample_every: int = 100,
             prompt: str | None = None, sample_tokens: int = 48,
             show: Callable[[int, str], None] = lambda step, text: None, device: str | None = None) -> dict[str, Any]:
    """Train a tokenizer on `files` (paths or glob patterns) and a model from `model_config` on them.

    OUT/tokenizer holds the tokenizer, OUT/model the model with the tokenizer files beside it; training state,
    metrics.jsonl and checkpoints go to `config.output_dir` (default OUT)."""
    from .trainer import Trainer

    out = Path(out_dir)
    paths = expand_files(files)
    tokenizer = train_bpe_tokenizer(paths, tokenizer_vocab, out / "tokenizer")
    model = model_from_config(model_config, tokenizer)
    config = config or TrainingConfig(**PRETRAIN_DEFAULTS)
    if config.output_dir is None:
        config.output_dir = str(out)
    callbacks = [sampler(prompt or tokenizer.bos_token or "", sample_every, sample_tokens, show)] if sample_every else []
    trainer = Trainer(model, config, read_documents(paths), tokenizer=tokenizer, task="causal-lm", device=device,
                      callbacks=callbacks)
    return trainer.fit()
