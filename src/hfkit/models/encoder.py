"""The one shared encoder: embeddings → N transformer layers → [final norm] → optional pooler.

Every encoder family runs this code; a family only says where the parts sit (LayerNames), how
positions are counted, where the norms go (post/pre), its MLP kind, how each layer attends (full or
sliding window, rotary or not), and whether it has a pooler. What the plain stack lacks comes in as
injected parts (Family.embeddings, .attention_bias, .stack_hooks): DeBERTa's relative attention is
an additive bias per layer plus a per-forward context, not another encoder.

Unpadded forward (families without those injected parts): the pad tokens are dropped once at the embedding
output, the layers run on (N, H) real tokens with a PackedBatch in place of the mask (nn.attention dispatches
it to varlen_attn), and the outputs are re-padded to (B, T, ...) with zeros at pad positions (the padded path
computes values there that nobody should read; token heads now see a zero hidden state at pads). Chosen
automatically on CUDA (see EncoderModel.use_unpadded); `model(..., unpadded=True/False)` or the module
attribute `unpadded` forces either path.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch
from torch import nn

from ..nn.activations import activation
from ..nn.attention import (
    VARLEN_DTYPES,
    PackedBatch,
    attention,
    padding_mask,
    varlen_kernel,
    varlen_window_supported,
    window_mask,
)
from ..nn.compiled import Compiled
from ..nn.embeddings import TokenEmbeddings
from ..nn.fused_linear import GELU_FORMS, linear, linear_gelu, linear_residual
from ..nn.mlp import MLPKind
from ..nn.rope import rotary_tables
from .base import PreTrainedModel, place
from .family import AttentionSpec, Family, LayerNames, NormPosition
from .outputs import BaseModelOutput


def layer_norm(config, dim: int) -> nn.LayerNorm:
    """The family's LayerNorm: its eps, and a bias unless the config says `norm_bias: false` (ModernBERT)."""
    return nn.LayerNorm(dim, eps=config.layer_norm_eps, bias=getattr(config, "norm_bias", True))


class EncoderLayer(nn.Module):
    """Post-norm x → LN(x + Attn(x)) → LN(x + FFN(x)), or pre-norm x → x + Attn(LN(x)) → x + FFN(LN(x)).

    Parts are placed at the family's names; biases follow the config's `attention_bias` / `mlp_bias`
    (present when the config has no such field)."""

    def __init__(self, config, family: Family, names: LayerNames, spec: AttentionSpec):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.pre_norm = family.norm_position is NormPosition.PRE
        self.mlp_kind, self.spec = family.mlp, spec
        attn_bias, mlp_bias = getattr(config, "attention_bias", True), getattr(config, "mlp_bias", True)
        self.fused_qkv = names.qkv is not None
        projections = {"qkv": 3} if self.fused_qkv else {"query": 1, "key": 1, "value": 1}
        parts = {ref: (getattr(names, ref), nn.Linear(hidden, width * hidden, bias=attn_bias))
                 for ref, width in projections.items()}
        parts.update({
            "attn_out": (names.attn_out, nn.Linear(hidden, hidden, bias=attn_bias)),
            "attn_norm": (names.attn_norm, layer_norm(config, hidden)),
            "ffn_in": (names.ffn_in, nn.Linear(hidden, self.mlp_kind.in_multiple * inner, bias=mlp_bias)),
            "ffn_out": (names.ffn_out, nn.Linear(inner, hidden, bias=mlp_bias)),
            "ffn_norm": (names.ffn_norm, layer_norm(config, hidden)),
        })
        for ref, (path, module) in parts.items():  # a plain reference: each weight keeps one key
            self.__dict__[ref] = place(self, path, module) if path else nn.Identity()
        self.act = activation(config.hidden_act)
        self.gelu_epilogue = self.mlp_kind is MLPKind.PLAIN and self.act in GELU_FORMS  # see linear_gelu
        rate = lambda name: getattr(config, name) if name else 0.0
        self.attention_dropout = rate(family.dropouts.attention)
        self.attn_out_dropout = nn.Dropout(rate(family.dropouts.attn_out))
        self.ffn_inner_dropout = nn.Dropout(rate(family.dropouts.ffn_inner))
        self.ffn_out_dropout = nn.Dropout(rate(family.dropouts.ffn_out))
        # built last: it may reuse the layer's own projections (DeBERTa's share_att_key)
        self.attention_bias = family.attention_bias(config, self) if family.attention_bias else None

    def forward(self, x: torch.Tensor, mask, context=None, rope: dict | None = None) -> torch.Tensor:
        """x: (B, T, H) padded, with `mask` a padded mask (or None), or (N, H) packed tokens, with `mask` the
        batch's PackedBatch; one code path for both, the attention call dispatching on what it is given."""
        *lead, H = x.shape  # (B, T) or (N,)
        nh, hd = self.num_heads, H // self.num_heads
        h = self.attn_norm(x) if self.pre_norm else x
        if self.fused_qkv:
            q, k, v = linear(h, self.qkv).view(*lead, 3, nh, hd).unbind(-3)  # (*lead, nh, hd) each
        else:
            q, k, v = (linear(h, proj).view(*lead, nh, hd) for proj in (self.query, self.key, self.value))
        padded = x.dim() == 3
        if padded:
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hd); packed: (N, nh, hd)
        rotary = rope[self.spec.rope_theta] if self.spec.rope_theta is not None else None  # attention() rotates
        divisor = None
        if self.attention_bias is not None:
            q, k = q.contiguous(), k.contiguous()  # one copy, shared by the bias and the attention
            bias = self.attention_bias(q, k, context)  # (B, nh, T, T) or None
            if bias is not None:
                mask = bias if mask is None else bias + mask
            divisor = self.attention_bias.divisor  # the scores' s, as the reference divides by it
        p = self.attention_dropout if self.training else 0.0
        a = attention(q, k, v, mask, dropout_p=p, divisor=divisor, rope=rotary)
        a = (a.transpose(1, 2) if padded else a).reshape(*lead, H)
        summed = linear_residual(a, self.attn_out, x, self.attn_out_dropout)  # x + dropout(attn_out(a))
        x = summed if self.pre_norm else self.attn_norm(summed)
        h = self.ffn_norm(x) if self.pre_norm else x
        summed = linear_residual(self.ffn_inner_dropout(self.ffn_inner(h)), self.ffn_out, x, self.ffn_out_dropout)
        return summed if self.pre_norm else self.ffn_norm(summed)

    def ffn_inner(self, h: torch.Tensor) -> torch.Tensor:
        """act(ffn_in(h)), or for a GLU act(first half) · second half: GELU inside the product where a kernel
        takes it (linear_gelu), else after it."""
        inner = linear_gelu(h, self.ffn_in, self.act) if self.gelu_epilogue else None
        return inner if inner is not None else self.mlp_kind.inner(linear(h, self.ffn_in), self.act)


class StackHooks(nn.Module):
    """The stack-level part a family may inject (Family.stack_hooks); the defaults are the plain stack.

    `begin` runs once per forward on the embedding output: it returns the stack input, the attention
    mask and a context every layer (and its attention-bias part) receives. `after_layer` may transform
    the output of the `step`-th layer run. Weights go at the family's paths via `place()`."""

    def begin(self, x: torch.Tensor, attention_mask: torch.Tensor | None):
        return x, padding_mask(attention_mask, x.dtype), None

    def after_layer(self, step: int, x: torch.Tensor, context) -> torch.Tensor:
        return x


def embedding_dim(config) -> int:
    """ALBERT/ELECTRA embed in a smaller `embedding_size`, projected up to `hidden_size`."""
    return getattr(config, "embedding_size", None) or config.hidden_size


class EncoderModel(PreTrainedModel):
    """The backbone (`BertModel`, `AlbertModel`, …): embeddings → [projection] → layers → [pooler].

    Keys come from the family: `embeddings.*`, its stack plan's layer paths, its pooler path."""

    def __init__(self, config, add_pooler: bool | None = None, family: Family | None = None):
        super().__init__(config)
        self.family = family or type(self).family
        build = self.family.embeddings
        self.embeddings = build(config) if build else TokenEmbeddings(config, self.family.position_style, embedding_dim(config))
        self.__dict__["projection"] = None
        projected = embedding_dim(config) != config.hidden_size or self.family.projection_always
        if self.family.embedding_projection and projected:
            linear = nn.Linear(embedding_dim(config), config.hidden_size)
            self.__dict__["projection"] = place(self, self.family.embedding_projection, linear)
        plan = self.family.stack(config)
        names = plan.names or [self.family.layer] * len(plan.paths)
        specs = plan.attention or [AttentionSpec()] * len(plan.paths)
        # `blocks`, not `layers`: a plain reference list must not shadow a checkpoint root (ModernBERT's `layers.N`)
        self.__dict__["blocks"] = [place(self, path, EncoderLayer(config, self.family, n, spec))
                                   for path, n, spec in zip(plan.paths, names, specs)]
        self.order = plan.order
        self.rope_thetas = {spec.rope_theta for spec in specs if spec.rope_theta is not None}  # a table each per forward
        final_norm = self.family.final_norm  # referenced as `last_norm`: the path is a checkpoint root
        self.__dict__["last_norm"] = place(self, final_norm, layer_norm(config, config.hidden_size)) if final_norm else None
        self.stack_hooks = self.family.stack_hooks(config, self) if self.family.stack_hooks else None
        self.__dict__["pooler_dense"] = None
        if self.family.pooler and (add_pooler is None or add_pooler):
            pooler = place(self, self.family.pooler, nn.Linear(config.hidden_size, config.hidden_size))
            self.__dict__["pooler_dense"] = pooler
            self.new_on_base = (self.family.pooler.split(".")[0],)

    # None: choose per forward (see use_unpadded); True / False: always / never run the packed stack.
    unpadded: bool | None = None

    @property
    def can_unpad(self) -> bool:
        """Families whose layers take an attention-bias term or stack hooks (DeBERTa) keep the padded path."""
        return self.family.attention_bias is None and self.stack_hooks is None

    def use_unpadded(self, x: torch.Tensor, attention_mask: torch.Tensor | None, unpadded: bool | None = None) -> bool:
        """Run the stack on packed tokens? `unpadded` (else the module's `unpadded` attribute) forces it; None:
        on CUDA in float16/bfloat16 when the batch has padding, varlen_attn exists (torch >= 2.10), no attention
        dropout is active and, if a layer slides a window, varlen_attn takes window_size. Forced on where the
        kernel cannot run (CPU, float32), the packed stack re-pads q/k/v around the attention: same numbers, slower."""
        choice = self.unpadded if unpadded is None else unpadded
        if choice is not None:
            if choice and not self.can_unpad:
                raise ValueError(f"{self.family.model_type} has attention-bias terms: it runs padded only (unpadded=True).")
            return bool(choice)
        if not (self.can_unpad and x.is_cuda and x.dtype in VARLEN_DTYPES and varlen_kernel() is not None):
            return False
        if self.training and any(block.attention_dropout > 0 for block in self.blocks):
            return False
        if not varlen_window_supported() and any(block.spec.window is not None for block in self.blocks):
            return False
        return attention_mask is not None and not bool(attention_mask.all())

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 = token, 0 = pad
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        position_ids: torch.Tensor | None = None,  # (B, T)
        output_hidden_states: bool = False,
        unpadded: bool | None = None,  # None: automatic (use_unpadded); outputs are padded (B, T, ...) either way
    ) -> BaseModelOutput:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, E)
        if self.projection is not None:
            x = self.projection(x)  # (B, T, H)
        B, T = x.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(T, device=x.device)[None, :]  # (1, T)
        hooks, packed = self.stack_hooks, None
        if self.use_unpadded(x, attention_mask, unpadded):
            # drop the pads once: the stack runs on (N, H), N real tokens; rotary positions are gathered per token
            keep = attention_mask if attention_mask is not None else torch.ones(B, T, dtype=torch.bool, device=x.device)
            packed = PackedBatch.from_mask(keep.to(x.device))
            x, position_ids = packed.unpad(x), packed.unpad(position_ids.expand(B, T))  # (N, H), (N,)
            mask, context = packed, None
        elif hooks is None:
            mask, context = padding_mask(attention_mask, x.dtype), None  # (B, 1, 1, T) or None
        else:
            x, mask, context = hooks.begin(x, attention_mask)
        T = T if packed is not None else x.shape[1]
        masks = {None: mask}  # window → mask: (B, 1, 1, T) additive, (B|1, 1, T, T) boolean, None, or a PackedBatch
        rope = rotary_tables(self.config.hidden_size // self.config.num_attention_heads, self.rope_thetas, position_ids, x.dtype)
        states = [x]
        for step, index in enumerate(self.order):
            block = self.blocks[index]
            window = block.spec.window
            if window not in masks:
                masks[window] = packed.windowed(window) if packed is not None else window_mask(attention_mask, T, window, x.device)
            x = block(x, masks[window], context, rope)  # rope: theta → cos/sin
            if hooks is not None:
                x = hooks.after_layer(step, x, context)
            states.append(x)
        if self.last_norm is not None:
            x = self.last_norm(x)
            states[-1] = x  # as transformers: the last hidden state is the normed one
        if packed is not None:  # re-pad for the caller: zeros at pad positions
            x = packed.repad(x)  # (B, T, H)
            states = [packed.repad(s) for s in states] if output_hidden_states else states
        pooled = None if self.pooler_dense is None else torch.tanh(self.pooler_dense(x[:, 0]))  # (B, H)
        return BaseModelOutput(x, pooled, tuple(states) if output_hidden_states else None)

    def compile_layers(self, **options: Any) -> EncoderModel:
        """Run each layer through torch.compile (default `dynamic=True`: one graph for every batch shape), the
        attention call inside it; a layer whose compilation fails runs as it is. Opt-in: the first forward pays
        the compilation (seconds). On an H100, bf16, unpadded, 512 texts in one batch: ModernBERT-base 0.56 → 1.41 M
        tok/s, bert-base 2.19 → 2.55 M (benchmarks/RESULTS.md). `uncompile_layers()` undoes it."""
        options.setdefault("dynamic", True)
        self.__dict__["blocks"] = [Compiled(getattr(b, "module", b), **options) for b in self.blocks]
        return self

    def uncompile_layers(self) -> EncoderModel:
        self.__dict__["blocks"] = [getattr(b, "module", b) for b in self.blocks]
        return self

    @cached_property
    def sentence_modules(self):
        """The sentence-transformers modules (pooling, dense, normalize) saved beside the weights."""
        from ..tasks.embed import SentenceTransformerModules

        return SentenceTransformerModules.from_dir(self.source_dir) if self.source_dir else SentenceTransformerModules()

    def embed(self, texts, normalize: bool | None = None, batch_size: int = 32) -> torch.Tensor:
        """Sentence embeddings (N, D) as sentence-transformers computes them for this folder."""
        from ..tasks.embed import embed

        return embed(self, self.tokenizer, texts, normalize=normalize, batch_size=batch_size, modules=self.sentence_modules)

    def search(self, queries, corpus, top_k: int = 3, batch_size: int = 32) -> list[list[dict]]:
        """Semantic search: per query `[{"corpus_id", "score"}]` by cosine similarity, best first."""
        from ..tasks.embed import semantic_search

        return semantic_search(self, self.tokenizer, queries, corpus, top_k, batch_size, self.sentence_modules)
