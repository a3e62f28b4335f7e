"""DeBERTa-v2 (and v3 checkpoints): BERT's post-norm layer with disentangled relative attention.

What differs from BERT, as injected parts of the shared encoder (names = transformers' keys):

    embeddings  word [+ position] [+ token type] → [embed_proj] → LayerNorm    DebertaEmbeddings
    stack       once per forward: pad rows of the embeddings zeroed, the       RelativeStack (StackHooks)
                pairwise padding mask, LayerNorm'd `encoder.rel_embeddings`,
                the relative-position gather indices; after layer 0 the
                optional `encoder.conv` ConvLayer
    attention   q·k / s + c2p + p2c bias terms (nn/relative_attention.py)      RelativeBias, per layer
                → attention(divisor=s): unfused on CPU as transformers computes it (bit-identical),
                fused SDPA with the bias as additive mask on CUDA
    heads       ContextPooler (`pooler.dense` on token 0) → `classifier`; the legacy `cls.predictions`
                or the `lm_predictions.lm_head` masked-LM head, chosen by `legacy`
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from ..nn.activations import activation
from ..nn.attention import pairwise_padding_mask
from ..nn.relative_attention import disentangled_bias, gather_indices, relative_positions, score_divisor
from .base import place
from .bert import SIZE_FIELDS
from .encoder import EncoderModel, StackHooks, embedding_dim
from .family import Family, LayerNames, LMPredictor, PooledClassifier, TokenClassifier

ATTENTION_TERMS = ("c2p", "p2c")
# Read by transformers' modeling code with getattr, not declared by its config class: kept in `extra`, so
# config.json round-trips exactly as written, and read through the typed properties below (these defaults).
UNDECLARED = {
    "position_buckets": (int, -1),  # > 0: log-bucketed relative positions, 2·buckets relative embeddings
    "share_att_key": (bool, False),  # position projections = the layer's own query/key projections
    "norm_rel_ebd": (str, "none"),  # "layer_norm": LayerNorm the relative embeddings
    "conv_kernel_size": (int, 0),  # > 0: a ConvLayer after the first layer
    "conv_groups": (int, 1),
    "conv_act": (str, "tanh"),
    "embedding_size": (int, None),  # None: hidden_size; else embed_proj projects it up
    "cls_dropout": (float, None),
    "attention_head_size": (int, None),  # only hidden_size / num_attention_heads is supported
}
TYPES = {int: (int,), bool: (bool,), str: (str,), float: (float, int)}


def undeclared(name: str) -> property:
    return property(lambda self: self.extra.get(name, UNDECLARED[name][1]))


@dataclass(frozen=True)
class DebertaV2Config(ModelConfig):
    model_type = "deberta-v2"

    vocab_size: int = 128100
    hidden_size: int = 1536
    num_hidden_layers: int = 24
    num_attention_heads: int = 24
    intermediate_size: int = 6144
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False
    max_relative_positions: int = -1  # < 1: max_position_embeddings
    pad_token_id: int | None = 0
    position_biased_input: bool = True  # absolute position embeddings added to the input
    pos_att_type: str | list[str] | None = None  # "p2c|c2p" or ["p2c", "c2p"]
    pooler_dropout: float = 0.0
    pooler_hidden_act: str = "gelu"
    pooler_hidden_size: int | None = None  # None: hidden_size (the only size supported), as transformers
    legacy: bool = True  # masked-LM head: `cls.predictions` (legacy) or `lm_predictions.lm_head`

    position_buckets = undeclared("position_buckets")
    share_att_key = undeclared("share_att_key")
    norm_rel_ebd = undeclared("norm_rel_ebd")
    conv_kernel_size = undeclared("conv_kernel_size")
    conv_groups = undeclared("conv_groups")
    conv_act = undeclared("conv_act")
    embedding_size = undeclared("embedding_size")
    cls_dropout = undeclared("cls_dropout")
    attention_head_size = undeclared("attention_head_size")

    def __post_init__(self):
        if isinstance(self.pos_att_type, str):  # the v1 spelling, normalised as transformers does
            object.__setattr__(self, "pos_att_type", [t.strip() for t in self.pos_att_type.lower().split("|")])
        if self.pooler_hidden_size is None:
            object.__setattr__(self, "pooler_hidden_size", self.hidden_size)
        super().__post_init__()
        for name, (kind, default) in UNDECLARED.items():
            value = getattr(self, name)
            if not (value is None and default is None) and (not isinstance(value, TYPES[kind]) or (isinstance(value, bool) and kind is not bool)):
                raise ConfigError(f"{self.model_type} config field {name!r} must be {kind.__name__}, got {value!r}.")
        require_positive(self, *SIZE_FIELDS)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}.")
        head_size = self.attention_head_size
        if head_size is not None and head_size * self.num_attention_heads != self.hidden_size:
            raise ConfigError(f"attention_head_size {head_size} × {self.num_attention_heads} heads != hidden_size {self.hidden_size}: not supported.")
        unknown = [t for t in self.attention_terms if t not in ATTENTION_TERMS]
        if not isinstance(self.pos_att_type, (list, type(None))) or unknown:
            raise ConfigError(f"pos_att_type {self.pos_att_type!r}: terms must be among {ATTENTION_TERMS}.")
        if any(n.strip() not in ("none", "layer_norm") for n in self.norm_rel_ebd.lower().split("|")):
            raise ConfigError(f"norm_rel_ebd {self.norm_rel_ebd!r} must be 'none' or 'layer_norm'.")
        if self.pooler_hidden_size != self.hidden_size:
            raise ConfigError(f"pooler_hidden_size {self.pooler_hidden_size} != hidden_size {self.hidden_size}: not supported.")
        if self.position_buckets == 1:
            raise ConfigError("position_buckets must be <= 0 (off) or >= 2.")
        if self.conv_kernel_size > 0 and (self.conv_kernel_size % 2 == 0 or self.conv_groups < 1 or self.hidden_size % self.conv_groups):
            raise ConfigError(f"conv_kernel_size {self.conv_kernel_size} must be odd and conv_groups {self.conv_groups} divide hidden_size.")
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ConfigError(f"embedding_size must be >= 1, got {self.embedding_size}.")
        if not self.legacy and embedding_dim(self) != self.hidden_size:
            raise ConfigError("legacy=False (the lm_predictions head) needs embedding_size == hidden_size.")

    @property
    def attention_terms(self) -> tuple[str, ...]:
        return tuple(self.pos_att_type or ())

    @property
    def relative_span(self) -> int:
        """Relative embeddings cover [-span, span): the buckets, else the maximum distance."""
        return self.position_buckets if self.position_buckets > 0 else self.max_distance

    @property
    def max_distance(self) -> int:
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings


class DebertaEmbeddings(nn.Module):
    """word [+ position] [+ token type] → [embed_proj] → LayerNorm → dropout, at `embeddings.*`.

    A module of its own rather than flags on TokenEmbeddings: the sum order, the optional absolute
    positions and the bias-free projection *before* a hidden-size LayerNorm all differ from BERT's.
    The pad rows are zeroed by RelativeStack.begin (after dropout: the same numbers, a 0/1 mask commutes)."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        dim, hidden = embedding_dim(config), config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim) if config.position_biased_input else None
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, dim) if config.type_vocab_size > 0 else None
        self.embed_proj = nn.Linear(dim, hidden, bias=False) if dim != hidden else None
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None, position_ids=None) -> torch.Tensor:  # (B, T) → (B, T, H)
        x = self.word_embeddings(input_ids)  # (B, T, E), summed in transformers' order
        if self.position_embeddings is not None:
            if position_ids is None:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
            x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)  # (B, T, H)
        return self.dropout(self.LayerNorm(x))


class ConvLayer(nn.Module):
    """`encoder.conv`: LN(layer-0 output + act(conv1d(embeddings))), pad rows zeroed before and after."""

    def __init__(self, config: DebertaV2Config):
        super().__init__()
        hidden, kernel = config.hidden_size, config.conv_kernel_size
        self.conv = nn.Conv1d(hidden, hidden, kernel, padding=(kernel - 1) // 2, groups=config.conv_groups)
        self.LayerNorm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = activation(config.conv_act)

    def forward(self, embeddings, x, keep):  # (B, T, H), (B, T, H), (B, T) bool or None
        out = self.conv(embeddings.transpose(1, 2)).transpose(1, 2)  # (B, T, H)
        if keep is not None:
            out = out.masked_fill(~keep[..., None], 0)
        out = self.LayerNorm(x + self.act(self.dropout(out)))
        return out if keep is None else out * keep[..., None].to(out.dtype)


@dataclass
class RelativeContext:
    """What every layer of one forward shares."""

    embeddings: torch.Tensor  # (B, T, H) the stack input (the ConvLayer reads it)
    keep: torch.Tensor | None  # (B, T) bool, None without padding
    rel_embeddings: torch.Tensor | None  # (2S, H), LayerNorm'd when norm_rel_ebd says so
    c2p: torch.Tensor | None  # (T, T) long gather indices into the 2S relative embeddings
    p2c: torch.Tensor | None


class RelativeStack(StackHooks):
    """`encoder.rel_embeddings`, `encoder.LayerNorm`, `encoder.conv`, and the per-forward context."""

    def __init__(self, config: DebertaV2Config, root: nn.Module):
        super().__init__()
        self.config = config
        rel = nn.Embedding(2 * config.relative_span, config.hidden_size) if config.relative_attention else None
        norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if "layer_norm" in config.norm_rel_ebd.lower() else None
        conv = ConvLayer(config) if config.conv_kernel_size > 0 else None
        for ref, path, module in (("rel", "encoder.rel_embeddings", rel), ("norm", "encoder.LayerNorm", norm), ("conv", "encoder.conv", conv)):
            self.__dict__[ref] = None if module is None else place(root, path, module)

    def begin(self, x, attention_mask):
        keep = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
        if keep is not None:
            x = x * keep[..., None].to(x.dtype)  # (B, T, H), pad rows zero
        mask = pairwise_padding_mask(attention_mask, x.dtype)  # (B, 1, T, T) or None
        rel = c2p = p2c = None
        if self.rel is not None:
            rel = self.rel.weight if self.norm is None else self.norm(self.rel.weight)  # (2S, H)
            c = self.config
            relative = relative_positions(x.shape[1], c.position_buckets, c.max_distance, x.device)  # (T, T)
            c2p, p2c = gather_indices(relative, c.relative_span)
        return x, mask, RelativeContext(x, keep, rel, c2p, p2c)

    def after_layer(self, step, x, context: RelativeContext):
        return self.conv(context.embeddings, x, context.keep) if step == 0 and self.conv is not None else x


class RelativeBias(nn.Module):
    """Per layer: the c2p/p2c bias terms and the scores' divisor s = sqrt(head_dim · (1 + terms)).

    Position projections are the layer's own query/key (share_att_key) or `attention.self.pos_key_proj`
    (c2p) / `pos_query_proj` (p2c)."""

    def __init__(self, config: DebertaV2Config, layer: nn.Module):
        super().__init__()
        terms, hidden = config.attention_terms, config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim, self.terms = hidden // self.num_heads, ("c2p" in terms) + ("p2c" in terms)
        self.enabled = config.relative_attention
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        for ref, term, own, path in (("pos_key", "c2p", layer.key, "attention.self.pos_key_proj"),
                                     ("pos_query", "p2c", layer.query, "attention.self.pos_query_proj")):
            projection = None
            if self.enabled and term in terms:
                projection = own if config.share_att_key else place(layer, path, nn.Linear(hidden, hidden))
            self.__dict__[ref] = projection

    @cached_property
    def divisor(self) -> torch.Tensor:  # on first use: models are built on `meta`
        return score_divisor(self.head_dim, self.terms)  # counts the terms even without relative attention

    def forward(self, q, k, context: RelativeContext):  # (B, nh, T, hd) each → (B, nh, T, T) or None
        if not self.enabled:
            return None
        rel = self.dropout(context.rel_embeddings)  # (2S, H)
        heads = lambda proj: proj(rel).view(rel.shape[0], self.num_heads, -1).transpose(0, 1)  # (nh, 2S, hd)
        pos_key = heads(self.pos_key) if self.pos_key is not None else None
        pos_query = heads(self.pos_query) if self.pos_query is not None else None
        return disentangled_bias(q, k, pos_key, pos_query, context.c2p, context.p2c, self.divisor)


def sequence_classifier(config: DebertaV2Config) -> PooledClassifier:
    """ContextPooler: dropout(pooler_dropout) → `pooler.dense` → pooler_hidden_act, then dropout → `classifier`."""
    return PooledClassifier(from_pooler=False, dense="pooler.dense", activation=config.pooler_hidden_act, dropout_first=True,
                            first_dropout_fields=("pooler_dropout",), dropout_fields=("cls_dropout", "hidden_dropout_prob"),
                            untyped_loss="soft_targets")


def masked_lm(config: DebertaV2Config) -> LMPredictor:
    if config.legacy:  # BERT's layout: decoder tied to the word embeddings, its bias to `cls.predictions.bias`
        return LMPredictor(dense="cls.predictions.transform.dense", norm="cls.predictions.transform.LayerNorm",
                           decoder="cls.predictions.decoder", bias="cls.predictions.bias")
    return LMPredictor(dense="lm_predictions.lm_head.dense", norm="lm_predictions.lm_head.LayerNorm", decoder=None,
                       bias="lm_predictions.lm_head.bias")


DEBERTA_V2 = Family(
    model_type="deberta-v2",
    config_class=DebertaV2Config,
    class_prefix="DebertaV2",
    base_prefix="deberta",
    base_class=EncoderModel,
    layer=LayerNames(query="attention.self.query_proj", key="attention.self.key_proj", value="attention.self.value_proj"),
    pooler=None,
    embeddings=DebertaEmbeddings,
    attention_bias=RelativeBias,
    stack_hooks=RelativeStack,
    ignored_checkpoint_keys=("position_embeddings", r"^mask_predictions\."),
    heads={
        "sequence-classification": sequence_classifier,
        "token-classification": TokenClassifier(out="classifier", dropout_fields=("hidden_dropout_prob",)),
        "question-answering": TokenClassifier(out="qa_outputs", dropout_fields=()),
        "masked-lm": masked_lm,
    },
    # deberta-v3's shape: shared position keys, 256 log buckets, LayerNorm'd relative embeddings, no absolute positions
    tiny_config={"vocab_size": 211, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
                 "relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": 256, "max_relative_positions": -1,
                 "norm_rel_ebd": "layer_norm", "share_att_key": True, "position_biased_input": False, "type_vocab_size": 0},
)
