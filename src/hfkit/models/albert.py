"""ALBERT: a factorised embedding (embedding_size → hidden_size) and layer groups shared across depth.

Layer i runs group `int(i / (num_hidden_layers / num_hidden_groups))`, whose `inner_group_num` layers
sit at `encoder.albert_layer_groups.G.albert_layers.J`: the stack plan below says exactly that."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import require_positive
from ..errors import ConfigError
from .bert import BertConfig
from .encoder import EncoderModel
from .family import Family, LayerNames, LMPredictor, PooledClassifier, StackPlan, TokenClassifier


@dataclass(frozen=True)
class AlbertConfig(BertConfig):
    model_type = "albert"

    vocab_size: int = 30000
    embedding_size: int = 128
    hidden_size: int = 4096
    num_hidden_groups: int = 1
    num_attention_heads: int = 64
    intermediate_size: int = 16384
    inner_group_num: int = 1
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float | None = 0.1
    bos_token_id: int | None = 2
    eos_token_id: int | list[int] | None = 3

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "num_hidden_groups", "inner_group_num", "embedding_size")
        if self.num_hidden_groups > self.num_hidden_layers:
            raise ConfigError(f"num_hidden_groups {self.num_hidden_groups} exceeds num_hidden_layers {self.num_hidden_layers}.")


def shared_groups(config: AlbertConfig) -> StackPlan:
    groups, inner, depth = config.num_hidden_groups, config.inner_group_num, config.num_hidden_layers
    paths = [f"encoder.albert_layer_groups.{g}.albert_layers.{j}" for g in range(groups) for j in range(inner)]
    order = [int(i / (depth / groups)) * inner + j for i in range(depth) for j in range(inner)]
    return StackPlan(paths, order)


ALBERT = Family(
    model_type="albert",
    config_class=AlbertConfig,
    class_prefix="Albert",
    base_prefix="albert",
    base_class=EncoderModel,
    stack=shared_groups,
    layer=LayerNames(query="attention.query", key="attention.key", value="attention.value", attn_out="attention.dense",
                     attn_norm="attention.LayerNorm", ffn_in="ffn", ffn_out="ffn_output", ffn_norm="full_layer_layer_norm"),
    pooler="pooler",
    embedding_projection="encoder.embedding_hidden_mapping_in",
    projection_always=True,
    heads={
        "sequence-classification": PooledClassifier(from_pooler=True, dropout_fields=("classifier_dropout_prob",)),
        "token-classification": TokenClassifier(out="classifier", dropout_fields=("classifier_dropout_prob", "hidden_dropout_prob")),
        "question-answering": TokenClassifier(out="qa_outputs", dropout_fields=()),
        "masked-lm": LMPredictor(dense="predictions.dense", norm="predictions.LayerNorm", decoder="predictions.decoder",
                                 bias="predictions.bias"),
    },
    tiny_config={"vocab_size": 211, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 4,
                 "num_hidden_groups": 2, "num_attention_heads": 4, "intermediate_size": 37},
)
