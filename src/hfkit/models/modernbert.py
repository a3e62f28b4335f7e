"""ModernBERT: the shared encoder as a pre-norm stack with rotary positions, GeGLU and local attention.

    tok_embeddings → norm → drop
    layers.N:  x + attn.Wo(attend(rope(attn.Wqkv(attn_norm(x)))))     attn_norm: none on layer 0
               x + mlp.Wo(act(input) · gate),  (input, gate) = mlp.Wi(mlp_norm(x))
    final_norm

`layer_types[i]` makes layer i global ("full_attention", rope theta `rope_parameters.full_attention`)
or local ("sliding_attention": a token sees tokens within local_attention // 2 on each side, theta
`rope_parameters.sliding_attention`). The legacy spellings `global_attn_every_n_layers`,
`global_rope_theta` and `local_rope_theta` fill in whatever the v5 fields leave out, as in transformers.
Every head runs `head.dense → act → head.norm` (then `classifier`, or the tied `decoder` for masked LM).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from ..nn.mlp import MLPKind
from .encoder import EncoderModel, layer_norm
from .family import (AttentionSpec, Family, LayerDropouts, LayerNames, LMPredictor, NormPosition, PooledClassifier,
                     StackPlan, TokenClassifier)

LAYER_TYPES = ("full_attention", "sliding_attention")
DEFAULT_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}


@dataclass(frozen=True)
class ModernBertConfig(ModelConfig):
    """HF field names, except `norm_eps` / `hidden_activation`, kept under the shared encoder's names."""

    model_type = "modernbert"
    aliases: ClassVar[dict[str, str]] = {"norm_eps": "layer_norm_eps", "hidden_activation": "hidden_act"}

    vocab_size: int = 50368
    hidden_size: int = 768
    intermediate_size: int = 1152
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    hidden_act: str = "gelu"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0
    layer_norm_eps: float = 1e-5
    norm_bias: bool = False
    pad_token_id: int | None = 50283
    eos_token_id: int | list[int] | None = 50282
    bos_token_id: int | None = 50281
    cls_token_id: int | None = 50281
    sep_token_id: int | None = 50282
    attention_bias: bool = False
    attention_dropout: float = 0.0
    layer_types: list[str] | None = None
    rope_parameters: dict[str, Any] | None = None
    local_attention: int = 128
    embedding_dropout: float = 0.0
    mlp_bias: bool = False
    mlp_dropout: float = 0.0
    decoder_bias: bool = True
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    deterministic_flash_attn: bool = False
    sparse_prediction: bool = False  # transformers then returns logits of labelled tokens only; hfkit: all tokens
    sparse_pred_ignore_index: int = -100
    # Legacy spellings, folded into layer_types / rope_parameters (which win where both are given).
    global_attn_every_n_layers: int | None = None
    global_rope_theta: float | None = None
    local_rope_theta: float | None = None
    rope_scaling: dict[str, Any] | None = None

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                         "num_attention_heads", "local_attention")
        if self.hidden_size % self.num_attention_heads or (self.hidden_size // self.num_attention_heads) % 2:
            raise ConfigError(f"hidden_size {self.hidden_size} must split into num_attention_heads "
                              f"{self.num_attention_heads} heads of an even size (rotary embeddings rotate pairs).")
        if self.classifier_pooling not in ("cls", "mean"):
            raise ConfigError(f"classifier_pooling must be 'cls' or 'mean', got {self.classifier_pooling!r}.")
        object.__setattr__(self, "layer_types", self.resolve_layer_types())
        object.__setattr__(self, "rope_parameters", self.resolve_rope_parameters())

    def resolve_layer_types(self) -> list[str]:
        if self.layer_types is None:
            every = 3 if self.global_attn_every_n_layers is None else self.global_attn_every_n_layers
            if every < 1:
                raise ConfigError(f"global_attn_every_n_layers must be >= 1, got {every}.")
            return ["sliding_attention" if i % every else "full_attention" for i in range(self.num_hidden_layers)]
        types = list(self.layer_types)
        if len(types) != self.num_hidden_layers or not set(types) <= set(LAYER_TYPES):
            raise ConfigError(f"layer_types must list one of {LAYER_TYPES} per layer ({self.num_hidden_layers}), got {types}.")
        return types

    def resolve_rope_parameters(self) -> dict[str, dict[str, Any]]:
        given = copy.deepcopy(self.rope_parameters) or {}
        if not isinstance(given, dict) or not set(given) <= set(LAYER_TYPES):
            raise ConfigError(f"rope_parameters must map {LAYER_TYPES} to their parameters, got {given!r}.")
        legacy = {"full_attention": self.global_rope_theta, "sliding_attention": self.local_rope_theta}
        resolved = {}
        for kind in LAYER_TYPES:
            params = {"rope_type": "default", **(given.get(kind) or {}), **(self.rope_scaling or {})}
            params.setdefault("rope_theta", legacy[kind] if legacy[kind] is not None else DEFAULT_THETA[kind])
            if params.get("rope_type", "default") != "default":
                raise ConfigError(f"rope_type {params['rope_type']!r} ({kind}) is not supported; only 'default'.")
            if not isinstance(params["rope_theta"], (int, float)) or params["rope_theta"] <= 0:
                raise ConfigError(f"rope_theta ({kind}) must be a positive number, got {params['rope_theta']!r}.")
            resolved[kind] = params
        return resolved

    def to_dict(self) -> dict[str, Any]:
        """The v5 form; legacy spellings only where the source had them (layer_types/rope_parameters carry them)."""
        out = super().to_dict()
        for legacy in ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta", "rope_scaling"):
            if out.get(legacy) is None:
                out.pop(legacy, None)
        return out

    def attention_spec(self, index: int) -> AttentionSpec:
        kind = self.layer_types[index]
        window = self.local_attention // 2 if kind == "sliding_attention" else None
        return AttentionSpec(window=window, rope_theta=float(self.rope_parameters[kind]["rope_theta"]))


class ModernBertEmbeddings(nn.Module):
    """tok_embeddings → norm → drop: no position or token-type tables (positions are rotary)."""

    def __init__(self, config: ModernBertConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = layer_norm(config, config.hidden_size)
        self.drop = nn.Dropout(config.embedding_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids=None, position_ids=None) -> torch.Tensor:  # (B, T) → (B, T, H)
        return self.drop(self.norm(self.tok_embeddings(input_ids)))


NAMES = LayerNames(qkv="attn.Wqkv", attn_out="attn.Wo", attn_norm="attn_norm", ffn_in="mlp.Wi", ffn_out="mlp.Wo",
                   ffn_norm="mlp_norm")


def layers(config: ModernBertConfig) -> StackPlan:
    """`layers.N`, each once; layer 0 has no attention norm (its input is the embedding norm's output)."""
    depth = config.num_hidden_layers
    return StackPlan(paths=[f"layers.{i}" for i in range(depth)], order=list(range(depth)),
                     names=[replace(NAMES, attn_norm=None), *[NAMES] * (depth - 1)],
                     attention=[config.attention_spec(i) for i in range(depth)])


def transform(c: ModernBertConfig) -> dict[str, Any]:
    """`head.dense → act → head.norm`, shaped by the config's classifier fields: every head runs it first."""
    return {"dense": "head.dense", "activation": c.classifier_activation, "norm": "head.norm", "dense_bias": c.classifier_bias}


def classifier(c: ModernBertConfig) -> dict[str, Any]:
    return {**transform(c), "out": "classifier", "dropout_fields": ("classifier_dropout",)}


POOLING = {"cls": "first", "mean": "mean"}

MODERNBERT = Family(
    model_type="modernbert",
    config_class=ModernBertConfig,
    class_prefix="ModernBert",
    base_prefix="model",
    base_class=EncoderModel,
    stack=layers,
    pooler=None,
    embeddings=ModernBertEmbeddings,
    input_embeddings="embeddings.tok_embeddings",
    norm_position=NormPosition.PRE,
    mlp=MLPKind.GLU,
    dropouts=LayerDropouts(attention="attention_dropout", attn_out="attention_dropout", ffn_inner="mlp_dropout",
                           ffn_out=None),
    final_norm="final_norm",
    heads={
        "sequence-classification": lambda c: PooledClassifier(from_pooler=False, pooling=POOLING[c.classifier_pooling],
                                                              **classifier(c)),
        "token-classification": lambda c: TokenClassifier(**classifier(c)),
        "question-answering": lambda c: TokenClassifier(**classifier(c)),
        "masked-lm": lambda c: LMPredictor(**transform(c), decoder="decoder", bias=None, decoder_bias=c.decoder_bias),
    },
    tiny_config={"vocab_size": 211, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
                 "intermediate_size": 37, "local_attention": 4, "global_attn_every_n_layers": 2,
                 "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2},
)
