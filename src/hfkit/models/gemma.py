"""Gemma and Gemma 2: the shared decoder with Gemma's norms, scaled embeddings and GeLU-tanh gate.

    gemma    RMSNorm as x̂ · (1 + weight) in float32 (`NormKind.ONE_PLUS`); embeddings × sqrt(hidden_size);
             head_dim from the config (256 by default); lm_head tied to the embeddings by default
    gemma2   + pre and post norms around attention and MLP (`NormPlacement.SANDWICH`: `post_attention_layernorm`
             is the attention's *post*-norm, the MLP has `pre_/post_feedforward_layernorm`); scores scaled by
             `query_pre_attn_scalar`^-0.5 and soft-capped (`attn_logit_softcapping`), final logits soft-capped
             (`final_logit_softcapping`); layers alternate sliding (`sliding_window`) and full attention per
             `layer_types`; the activation is called `hidden_activation`
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import ConfigError
from .decoder import DecoderLayout, EmbedScale, NormKind, NormPlacement
from .llama import LAYER_TYPES, DecoderConfig, check_layer_types, family


@dataclass(frozen=True)
class GemmaConfig(DecoderConfig):
    model_type = "gemma"

    vocab_size: int = 256000
    hidden_size: int = 3072
    intermediate_size: int = 24576
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int | None = 16
    head_dim: int | None = 256
    hidden_act: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    pad_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    bos_token_id: int | None = 2
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    use_bidirectional_attention: bool | None = None

    def __post_init__(self):
        if self.hidden_act == "gelu":  # the original releases' value, meant as the tanh approximation (transformers)
            self.set("hidden_act", "gelu_pytorch_tanh")
        super().__post_init__()
        if self.use_bidirectional_attention:
            raise ConfigError("use_bidirectional_attention (an encoder-style Gemma) is not supported.")


@dataclass(frozen=True)
class Gemma2Config(GemmaConfig):
    model_type = "gemma2"
    aliases: ClassVar[dict[str, str]] = {"hidden_activation": "hidden_act"}

    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int | None = 4
    query_pre_attn_scalar: int | float = 256
    sliding_window: int | None = 4096
    layer_types: list | None = None
    final_logit_softcapping: float | None = 30.0
    attn_logit_softcapping: float | None = 50.0

    def __post_init__(self):
        super().__post_init__()
        if self.layer_types is None:  # layer 0 slides, layer 1 attends fully, …
            self.set("layer_types", [LAYER_TYPES[(i + 1) % 2] for i in range(self.num_hidden_layers)])
        check_layer_types(self)


GEMMA_LAYOUT = DecoderLayout(norm=NormKind.ONE_PLUS, embed_scale=EmbedScale.SQRT_HIDDEN)
GEMMA = family("gemma", GemmaConfig, "Gemma", GEMMA_LAYOUT, head_dim=24)
GEMMA2 = family("gemma2", Gemma2Config, "Gemma2", DecoderLayout(norm=NormKind.ONE_PLUS, embed_scale=EmbedScale.SQRT_HIDDEN,
                                                                 placement=NormPlacement.SANDWICH),
                head_dim=24, query_pre_attn_scalar=20, sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0)
