"""RoBERTa and XLM-RoBERTa: BERT's layer with positions counted after padding_idx and their own heads.

XLM-R is RoBERTa under another model_type (weights under `roberta.`): one layout, two registrations.
"""

from __future__ import annotations

from dataclasses import dataclass

from .bert import BertConfig, bert_heads
from .encoder import EncoderModel
from .family import Family, LMPredictor, PooledClassifier


@dataclass(frozen=True)
class RobertaConfig(BertConfig):
    model_type = "roberta"

    vocab_size: int = 50265
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2


@dataclass(frozen=True)
class XLMRobertaConfig(RobertaConfig):
    model_type = "xlm-roberta"

    vocab_size: int = 30522


ROBERTA_HEADS = {
    **bert_heads(LMPredictor(dense="lm_head.dense", norm="lm_head.layer_norm", decoder="lm_head.decoder",
                             bias="lm_head.bias", activation="gelu")),
    "sequence-classification": PooledClassifier(
        from_pooler=False, dense="classifier.dense", out="classifier.out_proj", dropout_first=True
    ),
}


def roberta_family(model_type: str, config_class: type, class_prefix: str) -> Family:
    return Family(
        model_type=model_type,
        config_class=config_class,
        class_prefix=class_prefix,
        base_prefix="roberta",
        base_class=EncoderModel,
        position_style="padding_offset",
        heads=ROBERTA_HEADS,
        tiny_config={"vocab_size": 211, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "intermediate_size": 37, "type_vocab_size": 1},
    )


ROBERTA = roberta_family("roberta", RobertaConfig, "Roberta")
XLM_ROBERTA = roberta_family("xlm-roberta", XLMRobertaConfig, "XLMRoberta")
