"""ELECTRA: BERT's layer after a smaller embedding (projected up by `embeddings_project` when sizes differ).

Discriminator checkpoints carry the replaced-token detector (`ElectraForPreTraining`); generator
checkpoints the masked-LM head on the embedding size (`ElectraForMaskedLM`)."""

from __future__ import annotations

from dataclasses import dataclass

from .bert import BertConfig, bert_heads
from .encoder import EncoderModel
from .family import Family, LMPredictor, PooledClassifier, TokenScorer


@dataclass(frozen=True)
class ElectraConfig(BertConfig):
    model_type = "electra"

    embedding_size: int = 128
    hidden_size: int = 256
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    summary_type: str = "first"
    summary_use_proj: bool = True
    summary_activation: str = "gelu"
    summary_last_dropout: float = 0.1


ELECTRA = Family(
    model_type="electra",
    config_class=ElectraConfig,
    class_prefix="Electra",
    base_prefix="electra",
    base_class=EncoderModel,
    pooler=None,
    embedding_projection="embeddings_project",
    heads={
        **bert_heads(LMPredictor(dense="generator_predictions.dense", norm="generator_predictions.LayerNorm",
                                 decoder="generator_lm_head", bias=None, activation="gelu")),
        "sequence-classification": PooledClassifier(
            from_pooler=False, dense="classifier.dense", activation="gelu", out="classifier.out_proj", dropout_first=True
        ),
        "pretraining": TokenScorer(dense="discriminator_predictions.dense", out="discriminator_predictions.dense_prediction"),
    },
    tiny_config={"vocab_size": 211, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "intermediate_size": 37},
)
