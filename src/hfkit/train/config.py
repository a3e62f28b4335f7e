"""TrainingConfig: every knob of a training run, readable from a JSON or YAML file."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
SCHEDULES = ("linear", "cosine", "constant")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("adamw", "clipped-adamw")


@dataclass
class TrainingConfig:
    """Hyper-parameters and bookkeeping of one run. `batch_size` is per process: the global batch of a step is
    batch_size × grad_accum × world_size."""

    epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides epochs
    lr: float = 5e-5
    batch_size: int = 16
    eval_batch_size: int | None = None  # default: 2 × batch_size
    grad_accum: int = 1
    weight_decay: float = 0.01  # not applied to biases and norm weights
    schedule: str = "linear"  # linear | cosine | constant, after warmup
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # of the total steps; used when warmup_steps is 0
    max_grad_norm: float | None = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    optimizer: str = "adamw"  # adamw: clip_grad_norm_, then AdamW (fused on CUDA) | clipped-adamw: one compiled step
    precision: str = "fp32"  # fp32 | bf16 | fp16 (with a GradScaler) | auto (bf16 on a CUDA device that has it)
    compile: bool | str = False  # torch.compile the model: True, or a mode ("reduce-overhead": CUDA graphs)
    pad_to_multiple_of: int | None = None  # pad batches to a multiple of this (fewer shapes to compile)
    chunked_loss: bool = False  # causal LM: the loss without the (B, T, V) logits (less memory; see DecoderForCausalLM)
    seed: int = 42
    max_length: int | None = None  # default: the model's position limit, at most 512
    block_size: int | None = None  # causal LM packing; default: max_length
    doc_stride: int | None = None  # QA window overlap in tokens; default: min(128, max_length // 3)
    mlm_probability: float = 0.15
    group_by_length: bool = False
    columns: dict[str, str] = field(default_factory=dict)  # canonical name → the data's column name
    output_dir: str | None = None  # checkpoints, metrics.jsonl, best/ and model/; None = nothing written
    eval_every: int | None = None  # optimizer steps; None = at the end of each epoch
    save_every: int | None = None  # optimizer steps; None = at the end of each epoch
    save_limit: int = 2  # training checkpoints kept (oldest removed)
    log_every: int = 10
    metric: str | None = None  # best-checkpoint metric; None = the task's (accuracy, f1, perplexity)
    load_best_at_end: bool = True
    resume: bool = False  # continue from the newest checkpoint in output_dir
    progress: bool = True

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "save_limit"):
            _at_least(name, getattr(self, name), 1)
        for name in ("max_steps", "eval_batch_size", "eval_every", "save_every", "max_length", "block_size",
                     "pad_to_multiple_of"):
            if getattr(self, name) is not None:
                _at_least(name, getattr(self, name), 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1 or not 0 < self.mlm_probability < 1:
            raise ConfigError("warmup_ratio must be in [0, 1) and mlm_probability in (0, 1).")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}.")
        if self.compile not in (True, False, *COMPILE_MODES):
            raise ConfigError(f"Unknown compile {self.compile!r}; use true/false or a mode: {', '.join(COMPILE_MODES)}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}.")
        if self.optimizer == "clipped-adamw" and self.precision == "fp16":
            raise ConfigError("optimizer='clipped-adamw' cannot step through fp16's GradScaler; use precision='bf16' "
                              "or optimizer='adamw'.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}.")
        if self.resume and self.output_dir is None:
            raise ConfigError("resume=True needs output_dir (the folder whose checkpoints to continue from).")
        self.adam_betas = tuple(self.adam_betas)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainingConfig:
        """Read a `.json` or `.yaml`/`.yml` file of options; keyword overrides win."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Training config {path} does not exist.")
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as e:
                raise ConfigError('Reading a YAML training config needs PyYAML: pip install "hfkit[train]".') from e
            values = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"Training config {path} must be .json, .yaml or .yml.")
        if not isinstance(values, dict):
            raise ConfigError(f"Training config {path} must hold a mapping of option → value.")
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
