"""The one shared encoder: embeddings → N post-norm transformer layers → optional pooler.

Every encoder family runs this code; a family only says where the parts sit (LayerNames),
how positions are counted, and whether it has a pooler. What the plain stack lacks comes in as
injected parts (Family.embeddings, .attention_bias, .stack_hooks): DeBERTa's relative attention is
an additive bias per layer plus a per-forward context, not another encoder.
"""

from __future__ import annotations

from functools import cached_property

import torch
from torch import nn

from ..nn.activations import activation
from ..nn.attention import attention, padding_mask
from ..nn.embeddings import TokenEmbeddings
from .base import PreTrainedModel, place
from .family import Family, LayerNames
from .outputs import BaseModelOutput


class EncoderLayer(nn.Module):
    """x → LN(x + Attn(x)) → LN(x + FFN(x)), parts placed at the family's names."""

    def __init__(self, config, names: LayerNames, attention_bias=None):
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        norm = lambda: nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        parts = {
            "query": (names.query, nn.Linear(hidden, hidden)),
            "key": (names.key, nn.Linear(hidden, hidden)),
            "value": (names.value, nn.Linear(hidden, hidden)),
            "attn_out": (names.attn_out, nn.Linear(hidden, hidden)),
            "attn_norm": (names.attn_norm, norm()),
            "ffn_in": (names.ffn_in, nn.Linear(hidden, inner)),
            "ffn_out": (names.ffn_out, nn.Linear(inner, hidden)),
            "ffn_norm": (names.ffn_norm, norm()),
        }
        for ref, (path, module) in parts.items():
            self.__dict__[ref] = place(self, path, module)  # a plain reference: each weight keeps one key
        self.act = activation(config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # built last: it may reuse the layer's own projections (DeBERTa's share_att_key)
        self.attention_bias = attention_bias(config, self) if attention_bias else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, context=None) -> torch.Tensor:  # (B, T, H)
        B, T, H = x.shape
        heads = lambda t: t.view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)  # (B, nh, T, hd)
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        divisor = None
        if self.attention_bias is not None:
            q, k = q.contiguous(), k.contiguous()  # one copy, shared by the bias and the attention
            bias = self.attention_bias(q, k, context)  # (B, nh, T, T) or None
            if bias is not None:
                mask = bias if mask is None else bias + mask
            divisor = self.attention_bias.divisor  # the scores' s, as the reference divides by it
        p = self.attention_dropout if self.training else 0.0
        a = attention(q, k, v, mask, dropout_p=p, divisor=divisor).transpose(1, 2).reshape(B, T, H)
        x = self.attn_norm(x + self.dropout(self.attn_out(a)))
        return self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))


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
        layer = lambda: EncoderLayer(config, self.family.layer, self.family.attention_bias)
        self.__dict__["layers"] = [place(self, path, layer()) for path in plan.paths]
        self.order = plan.order
        self.stack_hooks = self.family.stack_hooks(config, self) if self.family.stack_hooks else None
        self.__dict__["pooler_dense"] = None
        if self.family.pooler and (add_pooler is None or add_pooler):
            pooler = place(self, self.family.pooler, nn.Linear(config.hidden_size, config.hidden_size))
            self.__dict__["pooler_dense"] = pooler
            self.new_on_base = (self.family.pooler.split(".")[0],)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, T) 1 = token, 0 = pad
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        position_ids: torch.Tensor | None = None,  # (B, T)
        output_hidden_states: bool = False,
    ) -> BaseModelOutput:
        x = self.embeddings(input_ids, token_type_ids, position_ids)  # (B, T, E)
        if self.projection is not None:
            x = self.projection(x)  # (B, T, H)
        hooks = self.stack_hooks
        if hooks is None:
            mask, context = padding_mask(attention_mask, x.dtype), None  # (B, 1, 1, T) or None
        else:
            x, mask, context = hooks.begin(x, attention_mask)
        states = [x]
        for step, index in enumerate(self.order):
            x = self.layers[index](x, mask, context)
            if hooks is not None:
                x = hooks.after_layer(step, x, context)
            states.append(x)
        pooled = None if self.pooler_dense is None else torch.tanh(self.pooler_dense(x[:, 0]))  # (B, H)
        return BaseModelOutput(x, pooled, tuple(states) if output_hidden_states else None)

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
