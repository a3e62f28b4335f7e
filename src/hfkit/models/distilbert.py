"""DistilBERT: the shared post-norm layer under its own names (`q_lin`, `sa_layer_norm`, `ffn.lin1`), no token types, no pooler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from .bert import SIZE_FIELDS
from .encoder import EncoderModel
from .family import Family, LayerNames, LMPredictor, PooledClassifier, TokenClassifier, sequential


@dataclass(frozen=True)
class DistilBertConfig(ModelConfig):
    """Fields under the shared encoder's names; `aliases` maps DistilBERT's own config.json names."""

    model_type = "distilbert"
    aliases: ClassVar[dict[str, str]] = {
        "dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
        "hidden_dim": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
    }
    # Fixed by the architecture, not written to config.json.
    type_vocab_size: ClassVar[int] = 0
    layer_norm_eps: ClassVar[float] = 1e-12

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    sinusoidal_pos_embds: bool = False
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    hidden_size: int = 768
    intermediate_size: int = 3072
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"
    initializer_range: float = 0.02
    qa_dropout: float = 0.1
    seq_classif_dropout: float = 0.2
    pad_token_id: int | None = 0

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, *SIZE_FIELDS)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"dim {self.hidden_size} is not a multiple of n_heads {self.num_attention_heads}.")


DISTILBERT = Family(
    model_type="distilbert",
    config_class=DistilBertConfig,
    class_prefix="DistilBert",
    base_prefix="distilbert",
    base_class=EncoderModel,
    stack=sequential("transformer.layer"),
    layer=LayerNames(
        query="attention.q_lin", key="attention.k_lin", value="attention.v_lin", attn_out="attention.out_lin",
        attn_norm="sa_layer_norm", ffn_in="ffn.lin1", ffn_out="ffn.lin2", ffn_norm="output_layer_norm",
    ),
    pooler=None,
    tiny_config={"vocab_size": 211, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37},
    heads={
        "sequence-classification": PooledClassifier(
            from_pooler=False, dense="pre_classifier", activation="relu", dropout_fields=("seq_classif_dropout",)
        ),
        "token-classification": TokenClassifier(out="classifier", dropout_fields=("hidden_dropout_prob",)),
        "question-answering": TokenClassifier(out="qa_outputs", dropout_fields=("qa_dropout",)),
        "masked-lm": LMPredictor(dense="vocab_transform", norm="vocab_layer_norm", decoder="vocab_projector", bias=None),
    },
)
