"""Llama, Mistral, Qwen2, Qwen3: the shared decoder with four configs and what their layers add.

    llama    the reference layout; `attention_bias` / `mlp_bias` from the config
    mistral  every layer attends within `sliding_window` (when set)
    qwen2    q/k/v projections with bias; sliding window only with `use_sliding_window`, on layers >= max_window_layers
    qwen3    RMSNorm over each head's q and k (`self_attn.q_norm`, `self_attn.k_norm`); head_dim 128 by default

Configs read both RoPE spellings: v5 `rope_parameters` and v4 `rope_theta` + `rope_scaling`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from ..nn.rope_scaling import ROPE_TYPES
from .decoder import DecoderFamily, DecoderLayout, DecoderModel
from .decoder_heads import head_layouts

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class DecoderConfig(ModelConfig):
    """The fields every decoder family has (Llama's defaults); each family adds exactly its own fields."""

    model_type = ""
    default_theta: ClassVar[float] = 10_000.0

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_parameters: dict | None = None
    attention_dropout: float = 0.0

    @classmethod
    def from_dict(cls, raw: dict[str, Any], **overrides: Any) -> "DecoderConfig":
        """Fold the v4 spelling (`rope_theta`, `rope_scaling`) into v5 `rope_parameters`."""
        raw = dict(raw)
        rope = copy.deepcopy(raw.pop("rope_parameters", None) or raw.pop("rope_scaling", None) or {})
        raw.pop("rope_scaling", None)
        rope.setdefault("rope_theta", raw.pop("rope_theta", cls.default_theta))
        raw.pop("rope_theta", None)
        if "partial_rotary_factor" in raw:
            rope.setdefault("partial_rotary_factor", raw.pop("partial_rotary_factor"))
        rope.setdefault("rope_type", rope.pop("type", "default"))
        if rope["rope_type"] in ("llama3", "yarn", "longrope") and "original_max_position_embeddings" not in rope:
            rope["original_max_position_embeddings"] = raw.get("original_max_position_embeddings", raw.get("max_position_embeddings"))
        raw["rope_parameters"] = rope
        return super().from_dict(raw, **overrides)

    def set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # derived values, in __post_init__ only

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        if self.num_key_value_heads is None:
            self.set("num_key_value_heads", self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}.")
        if hasattr(self, "head_dim") and self.head_dim is None:
            self.set("head_dim", self.hidden_size // self.num_attention_heads)
        if self.rope_parameters is None:
            self.set("rope_parameters", {"rope_type": "default", "rope_theta": self.default_theta})
        rope_type = self.rope_parameters.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ConfigError(f"rope_type {rope_type!r} is not supported yet; hfkit supports: {', '.join(ROPE_TYPES)}.")
        if not 0.0 < self.rope_parameters.get("partial_rotary_factor", 1.0) <= 1.0:
            raise ConfigError(f"partial_rotary_factor must be in (0, 1], got {self.rope_parameters['partial_rotary_factor']}.")


def check_layer_types(config) -> None:
    """`layer_types` lists one of LAYER_TYPES per layer, and sliding layers have a window."""
    if len(config.layer_types) != config.num_hidden_layers or not set(config.layer_types) <= set(LAYER_TYPES):
        raise ConfigError(f"layer_types must list {config.num_hidden_layers} of {LAYER_TYPES}, got {config.layer_types}.")
    if "sliding_attention" in config.layer_types and not config.sliding_window:
        raise ConfigError("layer_types has sliding_attention layers but sliding_window is not set.")


@dataclass(frozen=True)
class LlamaConfig(DecoderConfig):
    model_type = "llama"

    head_dim: int | None = None
    pretraining_tp: int | None = 1
    attention_bias: bool = False
    mlp_bias: bool = False


@dataclass(frozen=True)
class MistralConfig(DecoderConfig):
    """Every layer attends within `sliding_window` (None: full attention)."""

    model_type = "mistral"

    intermediate_size: int = 14336
    num_key_value_heads: int | None = 8
    max_position_embeddings: int = 4096 * 32
    head_dim: int | None = None
    sliding_window: int | None = 4096


@dataclass(frozen=True)
class Qwen2Config(DecoderConfig):
    """`layer_types` says which layers slide; by default layers >= max_window_layers, with use_sliding_window."""

    model_type = "qwen2"

    vocab_size: int = 151936
    intermediate_size: int = 22016
    num_key_value_heads: int | None = 32
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.use_sliding_window:
            self.set("sliding_window", None)
        if self.layer_types is None:
            slides = lambda i: self.sliding_window is not None and i >= self.max_window_layers
            self.set("layer_types", [LAYER_TYPES[slides(i)] for i in range(self.num_hidden_layers)])
        check_layer_types(self)


@dataclass(frozen=True)
class Qwen3Config(Qwen2Config):
    model_type = "qwen3"

    head_dim: int | None = 128
    attention_bias: bool = False


TINY = {"vocab_size": 211, "hidden_size": 64, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}


def family(model_type: str, config_class: type, class_prefix: str, layout: DecoderLayout = DecoderLayout(),
           **tiny: Any) -> DecoderFamily:
    return DecoderFamily(model_type=model_type, config_class=config_class, class_prefix=class_prefix, base_prefix="model",
                         base_class=DecoderModel, pooler=None, heads=head_layouts(), decoder=layout, tiny_config={**TINY, **tiny},
                         input_embeddings="embed_tokens")


LLAMA = family("llama", LlamaConfig, "Llama")
MISTRAL = family("mistral", MistralConfig, "Mistral", sliding_window=5)
QWEN2 = family("qwen2", Qwen2Config, "Qwen2", DecoderLayout(qkv_bias=True, o_bias=False))
QWEN3 = family("qwen3", Qwen3Config, "Qwen3", DecoderLayout(qk_norm=True), head_dim=24)
DECODER_FAMILIES = {f.model_type: f for f in (LLAMA, MISTRAL, QWEN2, QWEN3)}
