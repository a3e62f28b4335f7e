"""The one shared decoder: embed_tokens → N pre-norm layers (RoPE + GQA attention, gated MLP) → norm.

    layers.N:  x + self_attn.o_proj(attend(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))   n = input_layernorm(x)
               x + mlp.down_proj(act(mlp.gate_proj(n)) · mlp.up_proj(n))                  n = post_attention_layernorm(x)

Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2, Phi-3 and GPT-2 all run this code; what differs is data: the family's
DecoderLayout (projection biases, per-head q/k norms, the norm kind and placement, fused projections, embedding
scale, the MLP kind, the projection class, learned absolute positions instead of RoPE, the parts' checkpoint names)
and the config (head_dim, sliding window per `layer_types`, rope type, partial rotary, soft-capping,
`query_pre_attn_scalar`). The model is pure: a KV cache comes in, is updated, and goes out as
`past_key_values`; decode loops live in `hfkit.generation`.

    SANDWICH placement (Gemma 2; post_attention_layernorm is the attention's *post*-norm there, the MLP's pre-norm in Llama):
    layers.N:  x + post_attention_layernorm(attn(input_layernorm(x)))
               x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from ..nn import cpu_linear, decode_attention, matvec
from ..nn.activations import activation
from ..nn.attention import causal_mask, grouped_attention, softcapped_attention
from ..nn.mlp import MLPKind
from ..nn.norms import OneplusRMSNorm, RMSNorm, normed_product
from ..nn.rope import apply_rope
from ..nn.rope_scaling import rope_cos_sin, rope_dim
from .base import PreTrainedModel, place
from .family import Family


class NormKind(str, Enum):
    """RMS: weight · (x / rms(x)), cast back before the weight (Llama). ONE_PLUS: (x / rms(x)) · (1 + weight), all in
    float32, then cast (Gemma; the weight is stored as an offset from 1). LAYER: LayerNorm with bias (GPT-2)."""

    RMS = "rms"
    ONE_PLUS = "one_plus"
    LAYER = "layer"


class NormPlacement(str, Enum):
    """PRE: x + f(norm(x)) around attention and MLP (Llama). SANDWICH: x + post(f(pre(x))) around both (Gemma 2)."""

    PRE = "pre"
    SANDWICH = "sandwich"


class Projections(str, Enum):
    """SEPARATE: q_proj / k_proj / v_proj and gate_proj / up_proj. FUSED: one `self_attn.qkv_proj` (q | k | v) and one
    `mlp.gate_up_proj` (gate | up), held fused (they are the checkpoint keys) and their outputs split (Phi-3)."""

    SEPARATE = "separate"
    FUSED = "fused"


class EmbedScale(str, Enum):
    """NONE: the token embeddings as they are. SQRT_HIDDEN: times sqrt(hidden_size) in the weights' dtype (Gemma)."""

    NONE = "none"
    SQRT_HIDDEN = "sqrt_hidden"


@dataclass(frozen=True)
class DecoderNames:
    """Checkpoint names of the decoder's parts, relative to their owner (Llama's by default; GPT-2 names them all
    otherwise). The code keeps its own references; these are only where the weights sit."""

    embed: str = "embed_tokens"  # in the backbone
    positions: str | None = None  # learned absolute position embeddings (GPT-2's `wpe`); None: RoPE on q and k
    layers: str = "layers"
    norm: str = "norm"  # the final norm
    attn: str = "self_attn"  # in a layer
    mlp: str = "mlp"
    attn_norm: str = "input_layernorm"
    mlp_norm: str = "post_attention_layernorm"
    qkv: str = "qkv_proj"  # in the attention, when its projections are FUSED (separate ones: q_proj, k_proj, v_proj)
    out: str = "o_proj"
    mlp_in: str = "gate_up_proj"  # in the MLP: the fused gate | up (GLU), or the PLAIN MLP's input projection
    mlp_out: str = "down_proj"


@dataclass(frozen=True)
class DecoderLayout:
    """What a decoder family's layer has beyond Llama's. `None` biases follow `config.attention_bias` / `mlp_bias`."""

    qkv_bias: bool | None = None  # Qwen2: True (o_proj without bias)
    o_bias: bool | None = None
    mlp_bias: bool | None = None
    qk_norm: bool = False  # Qwen3: RMSNorm over each head's q and k (`self_attn.q_norm`, `self_attn.k_norm`)
    norm: NormKind = NormKind.RMS
    norm_eps: str = "rms_norm_eps"  # the config field holding the norms' epsilon
    placement: NormPlacement = NormPlacement.PRE
    projections: Projections = Projections.SEPARATE
    mlp: MLPKind = MLPKind.GLU  # GLU: down(act(gate) · up) (Llama); PLAIN: out(act(in(x))) (GPT-2)
    linear: type[nn.Module] = nn.Linear  # the projections' class (GPT-2: Conv1D, its weights stored (in, out))
    embed_scale: EmbedScale = EmbedScale.NONE
    embed_padding_idx: bool = True  # the token embedding has padding_idx = pad_token_id (GPT-2's has none)
    names: DecoderNames = DecoderNames()


@dataclass(frozen=True)
class DecoderFamily(Family):
    decoder: DecoderLayout = DecoderLayout()


@dataclass
class BaseModelOutputWithPast:
    last_hidden_state: torch.Tensor  # (B, T, H)
    past_key_values: "KVCache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class KVCache:
    """Dynamic KV cache: per layer, keys and values (B, nkv, S, D) grown by concatenation.

    The interface (`update(layer, k, v)` → the full k, v; `seq_length()`) is what a static, preallocated
    cache will implement too, so the model does not change when it arrives."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def seq_length(self) -> int:
        return self.keys[0].shape[-2] if self.keys else 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer] = torch.cat((self.keys[layer], k), dim=-2)
            self.values[layer] = torch.cat((self.values[layer], v), dim=-2)
        return self.keys[layer], self.values[layer]

    def crop(self, length: int) -> None:
        """Keep the first `length` positions (speculative decoding drops its rejected candidates')."""
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]

    def in_place(self, layer: int) -> None:
        """A static cache's buffers for a kernel to write a step into (StaticCache.in_place); this one has none."""

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search, dropping finished rows)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]


NORMS: dict[NormKind, type[nn.Module]] = {NormKind.RMS: RMSNorm, NormKind.ONE_PLUS: OneplusRMSNorm, NormKind.LAYER: nn.LayerNorm}


def make_norm(config, layout: DecoderLayout) -> nn.Module:
    return NORMS[layout.norm](config.hidden_size, getattr(config, layout.norm_eps))


class ScaledEmbedding(nn.Embedding):
    """Token embeddings times `scale`, the scale cast to the weights' dtype first (Gemma: sqrt(hidden) in bfloat16
    is 55.5, not 55.4256, as transformers computes it)."""

    def __init__(self, num: int, dim: int, padding_idx: int | None, scale: float):
        super().__init__(num, dim, padding_idx)
        self.scale = scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:  # (B, T) → (B, T, H)
        return super().forward(input_ids) * torch.tensor(self.scale).to(self.weight.dtype)

class Attention(nn.Module):
    def __init__(self, config, layout: DecoderLayout, sliding_window: int | None, layer: int = 0):
        super().__init__()
        hidden, D = config.hidden_size, head_dim_of(config)
        self.num_heads, self.num_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, D
        self.sliding_window = sliding_window
        self.dropout = config.attention_dropout
        # Gemma 2: scores scaled by query_pre_attn_scalar^-0.5 and soft-capped (None: neither)
        self.scale = (getattr(config, "query_pre_attn_scalar", None) or D) ** -0.5
        if not getattr(config, "scale_attn_weights", True):  # GPT-2's switch: unscaled q·kᵀ
            self.scale = 1.0
        if getattr(config, "scale_attn_by_inverse_layer_idx", False):  # GPT-2: also / (layer index + 1)
            self.scale /= float(layer + 1)
        self.softcap = getattr(config, "attn_logit_softcapping", None)
        bias = getattr(config, "attention_bias", False)
        qkv_bias = bias if layout.qkv_bias is None else layout.qkv_bias
        o_bias = bias if layout.o_bias is None else layout.o_bias
        self.sizes = [self.num_heads * D, self.num_kv * D, self.num_kv * D]  # q | k | v widths
        names, linear = layout.names, layout.linear
        if layout.projections is Projections.FUSED:
            self.__dict__["qkv_proj"] = place(self, names.qkv, linear(hidden, sum(self.sizes), bias=qkv_bias))
        else:
            self.qkv_proj = None
            self.q_proj = linear(hidden, self.sizes[0], bias=qkv_bias)
            self.k_proj = linear(hidden, self.sizes[1], bias=qkv_bias)
            self.v_proj = linear(hidden, self.sizes[2], bias=qkv_bias)
        self.__dict__["o_proj"] = place(self, names.out, linear(self.num_heads * D, hidden, bias=o_bias))
        if layout.qk_norm:
            self.q_norm = RMSNorm(D, getattr(config, layout.norm_eps))
            self.k_norm = RMSNorm(D, getattr(config, layout.norm_eps))
        else:
            self.q_norm = self.k_norm = None

    def stack_projections(self, stack: Callable[[list[nn.Module]], nn.Module]) -> None:
        """Replace q_proj, k_proj and v_proj by one `qkv_proj = stack([q, k, v])` (rows q | k | v), split in forward
        as a family's fused one. For inference copies (int8 decoding: one kernel instead of three), which are never
        exported: the checkpoint keys change."""
        if self.qkv_proj is None:
            self.qkv_proj = stack([self.q_proj, self.k_proj, self.v_proj])
            del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x, rope, mask, cache: KVCache | None, layer: int, norm: nn.Module | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, H)
        """The attention output of norm(x) (x itself without `norm`), plus `residual` when given."""
        B, T, _ = x.shape
        heads = lambda t: t.view(B, T, -1, self.head_dim)  # (B, T, n, D)
        projections = [self.qkv_proj] if self.qkv_proj is not None else [self.q_proj, self.k_proj, self.v_proj]
        # a decode step's rows: one kernel for q | k | v (and the norm)
        x, qkv = normed_product(x, norm, lambda x, prologue: matvec.linears(x, projections, prologue))
        if qkv is None and self.qkv_proj is None:
            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        else:
            q, k, v = map(heads, (self.qkv_proj(x) if qkv is None else qkv).split(self.sizes, dim=-1))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, n, T, D)
        a = self.decode_step(q, k, v, rope, mask, cache, layer)  # (B, nh, 1, D) or None
        if a is None:
            if rope is not None:  # None: learned absolute positions, added to the embeddings (GPT-2)
                q, k = partial_rope(q, k, *rope)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, nkv, S, D)
            p = self.dropout if self.training else 0.0
            if self.softcap is not None:
                a = softcapped_attention(q, k, v, mask, self.softcap, self.scale, dropout_p=p)  # (B, nh, T, D)
            else:
                a = grouped_attention(q, k, v, mask, dropout_p=p, scale=self.scale)  # (B, nh, T, D)
        return matvec.linear(self.o_proj, a.transpose(1, 2).reshape(B, T, -1), residual)

    def decode_step(self, q, k, v, rope, mask, cache: KVCache | None, layer: int) -> torch.Tensor | None:
        """A decode step's RoPE, cache write and attention (its splits merged) in one kernel
        (decode_attention.decode_step) where the cache lets the step write its slot in place and the kernel takes
        it; else None."""
        if rope is None or cache is None or self.softcap is not None or self.training:
            return None
        target = cache.in_place(layer)  # (keys, values, slot, counts) or None
        if target is None or not decode_attention.takes_step(q, k, rope[0], target[0], mask):
            return None
        return decode_attention.decode_step(q, k, v, *rope, *target, mask, self.scale)


def partial_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """RoPE on the first cos.shape[-1] features of each head (all of them unless partial_rotary_factor < 1), the
    rest passed through; in the activations' dtype, as transformers' decoders."""
    d = cos.shape[-1]
    if d == q.shape[-1]:
        return apply_rope(q, k, cos, sin, upcast=False)
    q_rot, k_rot = apply_rope(q[..., :d], k[..., :d], cos, sin, upcast=False)
    return torch.cat((q_rot, q[..., d:]), dim=-1), torch.cat((k_rot, k[..., d:]), dim=-1)


class MLP(nn.Module):
    """GLU: down_proj(act(gate) · up), gate | up fused or separate (Llama). PLAIN: mlp_out(act(mlp_in(x))) (GPT-2)."""

    def __init__(self, config, layout: DecoderLayout):
        super().__init__()
        bias = getattr(config, "mlp_bias", False) if layout.mlp_bias is None else layout.mlp_bias
        hidden, inner = config.hidden_size, config.intermediate_size
        names, linear = layout.names, layout.linear
        self.kind = layout.mlp
        if layout.mlp is MLPKind.PLAIN or layout.projections is Projections.FUSED:
            self.__dict__["proj_in"] = place(self, names.mlp_in, linear(hidden, layout.mlp.in_multiple * inner, bias=bias))
        else:
            self.proj_in = None
            self.gate_proj = linear(hidden, inner, bias=bias)
            self.up_proj = linear(hidden, inner, bias=bias)
        self.__dict__["proj_out"] = place(self, names.mlp_out, linear(inner, hidden, bias=bias))
        self.act = activation(config.hidden_act)

    def stack_projections(self, stack: Callable[[list[nn.Module]], nn.Module]) -> None:
        """Replace gate_proj and up_proj by one `proj_in = stack([gate, up])`, as Attention.stack_projections."""
        if self.proj_in is None:
            self.proj_in = stack([self.gate_proj, self.up_proj])
            del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """The MLP of norm(x) (x itself without `norm`), plus `residual` when given."""
        return matvec.linear(self.proj_out, self.activated(x, norm), residual)

    def activated(self, x: torch.Tensor, norm: nn.Module | None = None) -> torch.Tensor:  # (B, T, H) → (B, T, I)
        if self.proj_in is None:  # a decode step's rows: one kernel (and the norm)
            glu = lambda x, prologue: matvec.glu_linear(x, self.gate_proj, self.up_proj, self.act, prologue)
            x, h = normed_product(x, norm, glu)
            if h is None:
                h = self.act(cpu_linear.linear(self.gate_proj, x)) * cpu_linear.linear(self.up_proj, x)
            return h
        x = x if norm is None else norm(x)
        if self.kind is MLPKind.GLU and hasattr(self.proj_in, "forward_glu"):
            return self.proj_in.forward_glu(x, self.act)  # a projection with its own GLU kernel (int8)
        return self.kind.inner(matvec.linear(self.proj_in, x), self.act)  # GLU: act(gate) · up of the fused halves


class DecoderLayer(nn.Module):
    def __init__(self, config, layout: DecoderLayout, sliding_window: int | None, layer: int = 0):
        super().__init__()
        norm = lambda: make_norm(config, layout)
        names = layout.names
        self.placement = layout.placement
        self.__dict__["self_attn"] = place(self, names.attn, Attention(config, layout, sliding_window, layer))
        self.__dict__["mlp"] = place(self, names.mlp, MLP(config, layout))
        self.__dict__["input_layernorm"] = place(self, names.attn_norm, norm())
        self.__dict__["post_attention_layernorm"] = place(self, names.mlp_norm, norm())
        if self.placement is NormPlacement.SANDWICH:
            self.pre_feedforward_layernorm = norm()
            self.post_feedforward_layernorm = norm()

    def forward(self, x, rope, mask, cache, layer: int) -> torch.Tensor:
        if self.placement is NormPlacement.SANDWICH:
            x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), rope, mask, cache, layer))
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        x = self.self_attn(x, rope, mask, cache, layer, norm=self.input_layernorm, residual=x)
        return self.mlp(x, norm=self.post_attention_layernorm, residual=x)


def head_dim_of(config) -> int:
    """`head_dim` where the family has the field, else hidden_size / heads (transformers' rule)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def layer_windows(config) -> list[int | None]:
    """Each layer's sliding window (None: full attention): per `layer_types` where the family has them
    (Qwen2/3), else `sliding_window` on every layer (Mistral; Llama has none)."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is None:
        return [window] * config.num_hidden_layers
    return [window if t == "sliding_attention" else None for t in types]


class DecoderModel(PreTrainedModel):
    """The backbone (`LlamaModel`, `Qwen2Model`, `GPT2Model`, …); keys `embed_tokens`, `layers.N.*`, `norm` (or the
    family's names: GPT-2's `wte`, `wpe`, `h.N.*`, `ln_f`)."""

    def __init__(self, config, add_pooler: bool | None = None, family: Family | None = None):
        super().__init__(config)
        self.family = family or type(self).family
        layout = getattr(self.family, "decoder", DecoderLayout())
        names = layout.names
        pad = config.pad_token_id if layout.embed_padding_idx else None
        if layout.embed_scale is EmbedScale.SQRT_HIDDEN:
            embed = ScaledEmbedding(config.vocab_size, config.hidden_size, pad, config.hidden_size ** 0.5)
        else:
            embed = nn.Embedding(config.vocab_size, config.hidden_size, pad)
        self.__dict__["embed_tokens"] = place(self, names.embed, embed)
        self.__dict__["positions"] = None
        if names.positions is not None:  # GPT-2's `wpe`: one vector per absolute position, added to the tokens'
            self.__dict__["positions"] = place(self, names.positions, nn.Embedding(config.max_position_embeddings, config.hidden_size))
        self.windows = layer_windows(config)
        layers = nn.ModuleList(DecoderLayer(config, layout, w, i) for i, w in enumerate(self.windows))
        self.__dict__["layers"] = place(self, names.layers, layers)
        self.__dict__["norm"] = place(self, names.norm, make_norm(config, layout))
        self.rope_dim = None if self.positions is not None else rope_dim(config.rope_parameters, head_dim_of(config))

    def forward(
        self,
        input_ids: torch.Tensor | None = None,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, S) over cached + new tokens; 1 = token, 0 = pad
        position_ids: torch.Tensor | None = None,  # (B, T); None: cache length + 0…T-1
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,  # (B, T, H)
    ) -> BaseModelOutputWithPast:
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, H)
        B, T, _ = x.shape
        if use_cache and past_key_values is None:
            past_key_values = KVCache()
        past = past_key_values.seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)[None]  # (1, T)
        config = self.config
        if self.positions is not None:
            x = x + self.positions(position_ids)  # (B, T, H)
            rope = None
        else:
            rope = rope_cos_sin(config.rope_parameters, self.rope_dim, config.max_position_embeddings, position_ids, x.dtype)
        masks = {w: causal_mask(attention_mask, T, past, w, x.device) for w in set(self.windows)}
        states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, masks[self.windows[i]], past_key_values, i)
            states.append(x)
        x = self.norm(x)
        if output_hidden_states:
            states[-1] = x  # transformers reports the last layer's output after the final norm
        return BaseModelOutputWithPast(x, past_key_values, tuple(states) if output_hidden_states else None)
