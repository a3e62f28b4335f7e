"""What every hfkit model shares: dotted-path placement, weight init, `from_pretrained`."""

from __future__ import annotations

import contextlib
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..nn.conv1d import Conv1D

if TYPE_CHECKING:
    from ..tokenizer import Tokenizer
    from .family import Family


def place(root: nn.Module, path: str, module: nn.Module | nn.Parameter):
    """Register a module (or parameter) at dotted `path` under `root`, creating plain containers on the way.

    This is how module paths become checkpoint keys: a family names `attention.self.query`,
    the shared code keeps a direct reference to the Linear it placed there.
    """
    *parents, leaf = path.split(".")
    node = root
    for name in parents:
        if not hasattr(node, name):
            node.add_module(name, nn.Module())
        node = getattr(node, name)
    if isinstance(module, nn.Parameter):
        node.register_parameter(leaf, module)
    else:
        node.add_module(leaf, module)
    return module


@contextlib.contextmanager
def empty_init():
    """Build modules on `meta` without running their random init (weights come from the checkpoint).

    Random init on meta tensors would also import torch's Python decompositions (~1 s)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {name: getattr(nn.init, name) for name in names}
    for name in names:
        setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        with torch.device("meta"):
            yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def init_weights(module: nn.Module, std: float) -> None:
    """transformers' `_init_weights` for the layers we use: N(0, std) matrices, zero biases, unit norms."""
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv1d, Conv1D)):  # Conv1d: DeBERTa's encoder.conv; Conv1D: GPT-2's
            nn.init.normal_(sub.weight, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=std)
            if sub.padding_idx is not None:
                with torch.no_grad():
                    sub.weight[sub.padding_idx].zero_()
        elif isinstance(sub, nn.LayerNorm):
            if sub.weight is not None:
                nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
    for name, param in module.named_parameters(recurse=False):
        if name == "bias":  # a free-standing output bias (MLM heads)
            nn.init.zeros_(param)


class PreTrainedModel(nn.Module):
    """Base of every model: config, family, loading, and the tokenizer found beside the weights."""

    family: "Family"
    # Modules a base checkpoint does not have: created fresh when a head is put on a base model.
    new_on_base: tuple[str, ...] = ()
    source_dir: Path | None = None

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tied_weights(self) -> dict[str, str]:
        """Parameter key → the key it shares storage with (its source); empty when nothing is tied."""
        return {}

    def tie_weights(self) -> None:
        """Point tied parameters at their source again (after loading replaced it)."""

    def init_new_weights(self, prefixes: list[str]) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        for prefix in prefixes:
            init_weights(self.get_submodule(prefix), std)

    def save_pretrained(self, out_dir: str | os.PathLike, max_shard_size: int | str = "2GB",
                        dtype: str | torch.dtype | None = None) -> Path:
        """Write this model (+ the tokenizer files it was loaded with, a model card) in the HF layout."""
        from ..export import save_pretrained

        return save_pretrained(self, out_dir, max_shard_size=max_shard_size, dtype=dtype)

    def add_lora(self, config: Any = None, **options: Any) -> PreTrainedModel:
        """Freeze the model and add LoRA layers: a `hfkit.lora.LoraConfig`, or its fields as keywords."""
        from ..lora import LoraConfig, add_lora

        return add_lora(self, config if config is not None else LoraConfig(**options))

    def save_adapter(self, out_dir: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
        """Write the LoRA adapter alone in PEFT's format (adapter_config.json + adapter_model.safetensors)."""
        from ..lora import save_adapter

        return save_adapter(self, out_dir, base_model_name_or_path)

    def load_adapter(self, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> PreTrainedModel:
        """Add LoRA as a PEFT adapter folder (or Hub id) describes it and load its tensors strictly."""
        from ..lora import load_adapter

        return load_adapter(self, name_or_path, **hub_kwargs)

    def merge_lora(self) -> PreTrainedModel:
        """Fold the LoRA layers into the base weights and put the plain layers back (then `save_pretrained`)."""
        from ..lora import merge_lora

        return merge_lora(self)

    @cached_property
    def tokenizer(self) -> "Tokenizer":
        """The tokenizer saved beside the weights, loaded on first use."""
        from ..tokenizer import Tokenizer

        if self.source_dir is None:
            raise AttributeError("This model was not loaded from a directory; pass a Tokenizer explicitly.")
        return Tokenizer.from_dir(self.source_dir)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        ignore_mismatched_sizes: bool = False,
        **config_overrides: Any,
    ) -> "PreTrainedModel":
        """Load a model from a local directory, the HF cache or the Hub (config overrides as keywords)."""
        from ..config import read_config_json
        from ..cpu_support import warn_if_emulated
        from ..hub import resolve
        from ..weights import load_checkpoint

        directory = resolve(name_or_path, revision, cache_dir, local_files_only, token)
        raw = read_config_json(directory)
        config = cls.family.read_config(raw, **config_overrides)
        with empty_init():
            model = cls(config)
        load_checkpoint(model, directory, dtype=dtype, device=device, ignore_mismatched_sizes=ignore_mismatched_sizes)
        model.source_dir = directory
        if torch.device(device or "cpu").type == "cpu" and next(model.parameters()).dtype == torch.bfloat16:
            warn_if_emulated("bfloat16", "Pass dtype='float32' to from_pretrained (--dtype float32): faster on this "
                                         "CPU, and exact.")
        return model.eval()
