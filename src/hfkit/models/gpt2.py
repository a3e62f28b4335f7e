"""GPT-2: the shared decoder with GPT-2's names, learned positions, LayerNorms and Conv1D projections.

    transformer.wte + transformer.wpe(position)           token + learned absolute position embeddings (no RoPE)
    transformer.h.N:  x + attn.c_proj(attend(split(attn.c_attn(n))))     n = ln_1(x)   fused q | k | v, biases
                      x + mlp.c_proj(gelu_new(mlp.c_fc(n)))               n = ln_2(x)   PLAIN MLP (no gate)
    transformer.ln_f                                       final LayerNorm (bias, `layer_norm_epsilon`)
    lm_head (tied to transformer.wte) | score (last non-pad token)

All of it is data on the shared decoder (`DecoderLayout`, `DecoderNames`): nothing here runs a forward. The
projections are `Conv1D`, which holds GPT-2's weights in their stored (in, out) layout, so checkpoint keys and
bytes load and save as they are, with no transpose (see nn/conv1d.py). Old checkpoints carry the causal-mask
buffers `attn.bias` / `attn.masked_bias`: ignored, as transformers does. Config fields keep GPT-2's names
(`n_embd`, `n_layer`, `n_head`, `n_positions`, `n_inner`, `activation_function`, `attn_pdrop`) through aliases.
`reorder_and_upcast_attn` (transformers' eager path only) and cross-attention are not supported: ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from ..nn.conv1d import Conv1D
from ..nn.mlp import MLPKind
from .decoder import DecoderFamily, DecoderLayout, DecoderModel, DecoderNames, NormKind, Projections
from .decoder_heads import head_layouts


@dataclass(frozen=True)
class GPT2Config(ModelConfig):
    model_type = "gpt2"
    aliases: ClassVar[dict[str, str]] = {"n_embd": "hidden_size", "n_layer": "num_hidden_layers", "n_head": "num_attention_heads",
                                         "n_positions": "max_position_embeddings", "activation_function": "hidden_act",
                                         "attn_pdrop": "attention_dropout"}

    vocab_size: int = 50257
    max_position_embeddings: int = 1024
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    n_inner: int | None = None  # None: 4 · hidden_size
    hidden_act: str = "gelu_new"
    resid_pdrop: float | int = 0.1
    embd_pdrop: float | int = 0.1
    attention_dropout: float | int = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | list[int] | None = 50256
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False
    add_cross_attention: bool = False

    @property
    def intermediate_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.hidden_size

    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "vocab_size", "max_position_embeddings", "hidden_size", "num_hidden_layers", "num_attention_heads")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"n_embd {self.hidden_size} is not a multiple of n_head {self.num_attention_heads}.")
        if self.reorder_and_upcast_attn:
            raise ConfigError("reorder_and_upcast_attn=True (transformers' eager-only upcast path) is not supported.")
        if self.add_cross_attention:
            raise ConfigError("add_cross_attention=True (GPT-2 as an encoder-decoder's decoder) is not supported.")


GPT2_LAYOUT = DecoderLayout(
    qkv_bias=True, o_bias=True, mlp_bias=True, norm=NormKind.LAYER, norm_eps="layer_norm_epsilon",
    projections=Projections.FUSED, mlp=MLPKind.PLAIN, linear=Conv1D, embed_padding_idx=False,
    names=DecoderNames(embed="wte", positions="wpe", layers="h", norm="ln_f", attn="attn", mlp="mlp", attn_norm="ln_1",
                       mlp_norm="ln_2", qkv="c_attn", out="c_proj", mlp_in="c_fc", mlp_out="c_proj"),
)

GPT2 = DecoderFamily(
    model_type="gpt2", config_class=GPT2Config, class_prefix="GPT2", base_prefix="transformer", base_class=DecoderModel,
    pooler=None, heads=head_layouts(), decoder=GPT2_LAYOUT, input_embeddings="wte",
    class_names={"causal-lm": "GPT2LMHeadModel"},
    ignored_checkpoint_keys=(r"(^|\.)attn\.(bias|masked_bias)$", r"(^|\.)crossattention\.(bias|masked_bias)$"),
    tiny_config={"vocab_size": 211, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 64,
                 "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1},
)
