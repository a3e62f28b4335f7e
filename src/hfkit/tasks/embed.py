"""Sentence embeddings equal to `SentenceTransformer(folder).encode(texts)`: the folder's modules.json
(Transformer → Pooling → Dense* → Normalize) read without sentence-transformers; else mean pooling.

Speed on CPU is opt-in and lossy: load the model with `dtype="bfloat16"` (AVX512-BF16 GEMMs) and/or
`hfkit.nn.quantize.quantize_int8(model)` (VNNI int8 GEMMs); bfloat16 attention on the CPU then runs in blocks
(`nn/attention.py`, `blocked_attention`). On a CPU without those instructions (AVX2 only, say) both run emulated,
slower than float32, and say so in a warning (`hfkit.cpu_support`). float32 stays exact and is the default."""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .batching import as_list, rows, run_batched

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers < 6 booleans, in its concatenation order.
LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """`1_Pooling/config.json` → the pooling modes: v6 `pooling_mode` (str or list) or the legacy booleans."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = (mode,) if isinstance(mode, str) else tuple(mode)
    else:
        modes = tuple(mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key, False)) or ("mean",)
    unknown = [mode for mode in modes if mode not in POOLING_MODES]
    if unknown:
        raise ConfigError(f"Unknown pooling mode(s) {unknown} in the Pooling config; supported: {POOLING_MODES}.")
    return modes


def pool(mode: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) token embeddings, (B, T) attention mask → (B, H), as sentence-transformers pools."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
    if mode == "cls":
        first = mask.to(torch.int).argmax(1)  # (B,) first attended position (left padding aware)
        return tokens[torch.arange(tokens.shape[0], device=tokens.device), first]
    if mode == "max":
        return tokens.masked_fill(weights == 0, float("-inf")).max(1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = weights.sum(1).clamp(min=1e-9)  # (B, 1)
        return (tokens * weights).sum(1) / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":
        pad = mask.to(torch.int32).argmax(1).view(-1, 1, 1)  # (B, 1, 1) left-padding length
        positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=tokens.dtype).view(1, -1, 1)
        weighted = weights * (positions - pad)  # (B, T, 1)
        return (tokens * weighted).sum(1) / weighted.sum(1).clamp(min=1e-9)
    # lasttoken: the last attended position
    length = tokens.shape[1]
    attended, from_end = mask.flip(1).max(1)  # (B,)
    last = length - 1 - torch.where(attended == 0, length - 1, from_end)
    return (tokens * weights)[torch.arange(tokens.shape[0], device=tokens.device), last]


def _activation(name: str | None) -> nn.Module:
    """The Dense activation named by its import path; like sentence-transformers without remote code,
    only `torch.*` module classes are trusted, anything else falls back to Tanh."""
    if name is None:
        return nn.Tanh()
    module_name, _, class_name = name.rpartition(".")
    if name.startswith("torch."):
        cls = getattr(importlib.import_module(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls()
    warnings.warn(f"Dense activation {name!r} is not a torch.nn module class; using Tanh as sentence-transformers does.",
                  UserWarning, stacklevel=3)
    return nn.Tanh()


class Dense(nn.Module):
    """A sentence-transformers Dense module: activation(linear(x)) (+ optional residual)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation_function: str | None = None, use_residual: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = _activation(activation_function)
        self.use_residual = use_residual
        if use_residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    @classmethod
    def from_dir(cls, directory: Path) -> Dense:
        config = json.loads((directory / "config.json").read_text())
        dense = cls(config["in_features"], config["out_features"], config.get("bias", True),
                    config.get("activation_function"), config.get("use_residual", False))
        if (directory / "model.safetensors").exists():
            from safetensors.torch import load_file

            state = load_file(directory / "model.safetensors")
        elif (directory / "pytorch_model.bin").exists():
            state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"No model.safetensors or pytorch_model.bin in the Dense module folder {directory}.")
        try:
            dense.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"Dense weights in {directory} do not fit its config.json: {err}") from err
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) → (B, out)
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D), unit L2 norm per row
        return F.normalize(x, p=2, dim=-1)


@dataclass
class SentenceTransformerModules:
    """What a sentence-transformers folder adds on top of the transformer: its max length and casing,
    pooling modes, then Dense/Normalize steps in modules.json order."""

    pooling: tuple[str, ...] = ("mean",)
    max_seq_length: int | None = None
    do_lower_case: bool = False
    steps: list[nn.Module] = field(default_factory=list)

    @classmethod
    def from_dir(cls, directory: str | Path) -> SentenceTransformerModules:
        """Read `modules.json` and the module folders; a folder without modules.json → mean pooling only.
        A Normalize entry counts even when its folder is missing (it has no files)."""
        directory = Path(directory)
        if not (directory / "modules.json").exists():
            return cls()
        modules = cls()
        for entry in sorted(json.loads((directory / "modules.json").read_text()), key=lambda entry: entry["idx"]):
            kind, path = entry["type"].rsplit(".", 1)[-1], directory / entry.get("path", "")
            if kind == "Transformer":
                config_file = path / "sentence_bert_config.json"
                config = json.loads(config_file.read_text()) if config_file.exists() else {}
                modules.max_seq_length = config.get("max_seq_length")
                modules.do_lower_case = config.get("do_lower_case", False)
            elif kind == "Pooling":
                modules.pooling = pooling_modes(json.loads((path / "config.json").read_text()))
            elif kind == "Dense":
                modules.steps.append(Dense.from_dir(path))
            elif kind == "Normalize":
                modules.steps.append(Normalize())
            elif kind != "Dropout":  # dropout is the identity at inference
                raise ConfigError(f"Unsupported sentence-transformers module {entry['type']!r} in {directory}; "
                                  f"supported: Transformer, Pooling, Dense, Normalize, Dropout.")
        return modules

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """(B, T, H) token embeddings, (B, T) mask → (B, D). `normalize`: None as the folder says; True/False force it."""
        x = torch.cat([pool(mode, tokens, mask) for mode in self.pooling], dim=-1)  # (B, H * modes)
        for step in self.steps:
            if isinstance(step, Normalize) and normalize is not None:
                continue
            x = step.to(x.device, x.dtype)(x)
        return F.normalize(x, p=2, dim=-1) if normalize else x


def _source_dir(model: nn.Module) -> Path | None:
    """The local folder the model was loaded from, if it records one."""
    for source in (getattr(model, "source_dir", None), getattr(model, "name_or_path", None),
                   getattr(model.config, "_name_or_path", None)):
        if source and Path(source).is_dir():
            return Path(source)
    return None


def embed(
    model: nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    normalize: bool | None = None,
    batch_size: int = 32,
    modules: SentenceTransformerModules | None = None,
) -> torch.Tensor:
    """Embeddings `(N, D)` (`(D,)` for one string, as sentence-transformers) on the model's device.

    `modules` default: read from the folder the model was loaded from (if it records one), else mean
    pooling. `normalize=None` follows the folder's Normalize module; True/False force it on/off."""
    texts, single = as_list(texts)
    if modules is None:
        source = _source_dir(model)
        modules = SentenceTransformerModules.from_dir(source) if source else SentenceTransformerModules()
    if modules.do_lower_case:
        texts = [text.lower() for text in texts]
    max_length = modules.max_seq_length
    if max_length is None:
        max_length = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", float("inf")))
    if not texts:
        return torch.empty(0)
    encoding = tokenizer(texts, padding=False, truncation=True, max_length=int(max_length), return_tensors=None)
    vectors = run_batched(model, tokenizer, rows(encoding), batch_size,
                          lambda out, batch: modules(out.last_hidden_state, batch["attention_mask"], normalize))
    out = torch.stack(vectors)  # (N, D)
    return out[0] if single else out


def semantic_search(model: nn.Module, tokenizer: Any, queries: Sequence[str], corpus: Sequence[str], top_k: int = 3,
                    batch_size: int = 32, modules: SentenceTransformerModules | None = None) -> list[list[dict[str, Any]]]:
    """Rank `corpus` by cosine similarity to each query: per query `[{"corpus_id", "score"}]`, best first
    (the format of sentence-transformers' `util.semantic_search`)."""
    vectors = embed(model, tokenizer, [*queries, *corpus], normalize=True, batch_size=batch_size, modules=modules)
    scores = vectors[: len(queries)] @ vectors[len(queries):].T  # (Q, S)
    best, index = scores.topk(min(top_k, len(corpus)))  # (Q, k)
    return [[{"corpus_id": i, "score": s} for i, s in zip(row_index, row_best)]
            for row_index, row_best in zip(index.tolist(), best.tolist())]
