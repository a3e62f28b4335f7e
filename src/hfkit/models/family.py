"""A family is data: its config class, names, and the layouts of its heads on the shared stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

from ..config import ModelConfig
from ..errors import ConfigError
from ..nn.mlp import MLPKind


@dataclass(frozen=True)
class LayerNames:
    """Where one encoder layer's parts sit, relative to the layer (= checkpoint key fragments)."""

    query: str = "attention.self.query"
    key: str = "attention.self.key"
    value: str = "attention.self.value"
    attn_out: str = "attention.output.dense"
    attn_norm: str = "attention.output.LayerNorm"
    ffn_in: str = "intermediate.dense"
    ffn_out: str = "output.dense"
    ffn_norm: str = "output.LayerNorm"
    qkv: str | None = None  # one fused projection (q | k | v stacked) instead of query/key/value
    # A part named None is absent (identity): ModernBERT's layer 0 has no attention norm.


class NormPosition(str, Enum):
    """POST: x → LN(x + f(x)) (BERT). PRE: x → x + f(LN(x)), the stack ending in a final norm (ModernBERT)."""

    POST = "post"
    PRE = "pre"


@dataclass(frozen=True)
class LayerDropouts:
    """The config field setting the dropout at each site of a layer; None: no dropout there."""

    attention: str | None = "attention_probs_dropout_prob"  # on the attention probabilities
    attn_out: str | None = "hidden_dropout_prob"  # after the attention output projection
    ffn_inner: str | None = None  # between the activation and the FFN output projection
    ffn_out: str | None = "hidden_dropout_prob"  # after the FFN output projection


@dataclass(frozen=True)
class AttentionSpec:
    """How one layer attends: a sliding window (keys within `window` positions on each side; None: all)
    and rotary positions on q/k with base `rope_theta` (None: no rotary)."""

    window: int | None = None
    rope_theta: float | None = None


@dataclass(frozen=True)
class StackPlan:
    """Where each distinct layer's weights sit, and the order the layers run in.

    BERT: each layer once. ALBERT: a few layer groups, re-run across the depth (weight sharing)."""

    paths: list[str]
    order: list[int]
    # Per distinct layer (aligned with `paths`); None: the family's LayerNames / full attention everywhere.
    names: list[LayerNames] | None = None
    attention: list[AttentionSpec] | None = None


def sequential(prefix: str) -> Callable[[Any], StackPlan]:
    """`prefix.0 … prefix.N-1`, each run once in order (BERT's `encoder.layer.N`)."""
    return lambda config: StackPlan([f"{prefix}.{i}" for i in range(config.num_hidden_layers)],
                                    list(range(config.num_hidden_layers)))


@dataclass(frozen=True)
class PooledClassifier:
    """Sequence classification: pool → [dropout] → [dense → act → [norm]] → dropout → out."""

    from_pooler: bool  # BERT: the base's pooler output; others: pool the last hidden state
    out: str = "classifier"
    dense: str | None = None
    activation: str = "tanh"
    dropout_first: bool = False
    dropout_fields: tuple[str, ...] = ("classifier_dropout", "hidden_dropout_prob")
    first_dropout_fields: tuple[str, ...] | None = None  # the first dropout's own rate (None: dropout_fields)
    # Float labels / negative class ids when problem_type is unset: "standard" (BCE, as BERT) or
    # "soft_targets" (DeBERTa: soft-target cross-entropy; class ids < 0 are left out of the loss)
    untyped_loss: str = "standard"
    pooling: str = "first"  # "first": token 0; "mean": the mean over the attention mask
    norm: str | None = None  # a LayerNorm after the activation (ModernBERT's `head.norm`)
    dense_bias: bool = True


@dataclass(frozen=True)
class TokenClassifier:
    """Per-token head (token classification: `classifier`; QA: `qa_outputs` with 2 outputs): [dense → act → [norm]] → dropout → out."""

    out: str
    dropout_fields: tuple[str, ...] = ("classifier_dropout", "hidden_dropout_prob")
    dense: str | None = None
    activation: str = "gelu"
    norm: str | None = None
    dense_bias: bool = True


@dataclass(frozen=True)
class TokenScorer:
    """One score per token through a hidden layer (ELECTRA's replaced-token detector)."""

    dense: str
    out: str


@dataclass(frozen=True)
class LMPredictor:
    """Masked-LM head: dense (hidden → embedding size) → act → norm → decoder (tied to word embeddings) + bias."""

    dense: str
    norm: str
    decoder: str | None  # None: no decoder module, the word embeddings themselves (DeBERTa's non-legacy head)
    bias: str | None  # a free-standing bias parameter; None when the decoder carries its own
    activation: str | None = None  # None: the config's hidden_act
    dense_bias: bool = True
    decoder_bias: bool = True  # the decoder's own bias (when `bias` is None)


@dataclass(frozen=True)
class Family:
    model_type: str
    config_class: type[ModelConfig]
    class_prefix: str  # "Bert" → BertModel, BertForTokenClassification (the transformers class names)
    base_prefix: str  # attribute holding the backbone in head models: "bert", "roberta", ...
    base_class: type  # the shared stack the family runs on (EncoderModel)
    stack: Callable[[Any], StackPlan] = sequential("encoder.layer")
    layer: LayerNames = LayerNames()
    position_style: str = "absolute"  # or "padding_offset" (RoBERTa: positions start after padding_idx)
    pooler: str | None = "pooler.dense"  # the pooler's Linear (tanh on token 0); None: no pooler
    # Linear from embedding_size to hidden_size: always there, or only when the sizes differ (ELECTRA)
    embedding_projection: str | None = None
    projection_always: bool = False
    heads: dict[str, Any] = field(default_factory=dict)  # task → layout, or a function config → layout
    input_embeddings: str = "embeddings.word_embeddings"  # the token embedding (MLM decoders tie to it)
    norm_position: NormPosition = NormPosition.POST
    mlp: MLPKind = MLPKind.PLAIN
    dropouts: LayerDropouts = LayerDropouts()
    final_norm: str | None = None  # a LayerNorm after the last layer (pre-norm stacks)
    # Injected parts for what the plain stack lacks (None: the BERT behaviour). Each is a function
    # (config, owner) → nn.Module that places its own weights under `owner` with `place()` at checkpoint
    # paths and keeps plain references, so the part itself adds no keys.
    # embeddings: config → the module at `embeddings` (None: TokenEmbeddings, word + type + position).
    embeddings: Callable[[Any], Any] | None = None
    # per layer, owner = the EncoderLayer: `part(q, k, context)` → an additive (B, nh, T, T) attention
    # bias or None; `part.divisor` the scores' divisor s, a 0-d tensor (see nn.attention.attention).
    attention_bias: Callable[[Any, Any], Any] | None = None
    # once per model, owner = the backbone: a StackHooks (`begin` once per forward: the stack input, mask
    # and a context handed to every layer; `after_layer`: transform a layer's output).
    stack_hooks: Callable[[Any, Any], Any] | None = None
    # regexes of checkpoint keys skipped when the model has no such weight (transformers'
    # `_keys_to_ignore_on_load_unexpected`: weights old checkpoints carry that the architecture never uses)
    ignored_checkpoint_keys: tuple[str, ...] = ()
    # config.json fields of a tiny random model of this family (verify-matrix, smoke tests)
    tiny_config: dict[str, Any] = field(default_factory=dict)
    # task → a transformers class name that is not class_prefix + the task's suffix (GPT-2: `GPT2LMHeadModel`)
    class_names: dict[str, str] = field(default_factory=dict)

    def read_config(self, raw: dict[str, Any], **overrides: Any) -> ModelConfig:
        found = raw.get("model_type")
        if found != self.model_type:
            raise ConfigError(f"config.json has model_type {found!r}, but this class loads {self.model_type!r}; use the Auto* classes.")
        return self.config_class.from_dict(raw, **overrides)
