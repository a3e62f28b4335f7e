"""BERT: the reference layout of the shared encoder (names `bert.encoder.layer.N.attention.self.query`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig, require_positive
from ..errors import ConfigError
from .encoder import EncoderModel
from .family import Family, LMPredictor, PooledClassifier, TokenClassifier


SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings")


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    model_type = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    classifier_dropout: float | None = None
    position_embedding_type: str = "absolute"
    is_decoder: bool = False
    add_cross_attention: bool = False

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, *SIZE_FIELDS)
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}.")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"position_embedding_type {self.position_embedding_type!r} is not supported; only 'absolute'.")
        if self.is_decoder or self.add_cross_attention:
            raise ConfigError(f"{self.model_type} as a decoder (is_decoder/add_cross_attention) is not supported; use an encoder checkpoint.")


def bert_heads(lm: LMPredictor) -> dict:
    """BERT's head layout; RoBERTa-style families differ only in the classifier and the LM head."""
    return {
        "sequence-classification": PooledClassifier(from_pooler=True),
        "token-classification": TokenClassifier(out="classifier"),
        "question-answering": TokenClassifier(out="qa_outputs", dropout_fields=()),
        "masked-lm": lm,
    }


BERT = Family(
    model_type="bert",
    config_class=BertConfig,
    class_prefix="Bert",
    base_prefix="bert",
    base_class=EncoderModel,
    tiny_config={"vocab_size": 211, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37},
    heads=bert_heads(
        LMPredictor(
            dense="cls.predictions.transform.dense",
            norm="cls.predictions.transform.LayerNorm",
            decoder="cls.predictions.decoder",
            bias="cls.predictions.bias",
        )
    ),
)
