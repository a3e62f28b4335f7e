"""Registries: model_type → family, task → head; the per-family classes and the Auto* dispatchers."""

from __future__ import annotations

import os
from typing import Any

from ..errors import ConfigError
from .base import PreTrainedModel
from .albert import ALBERT
from .bert import BERT
from .deberta_v2 import DEBERTA_V2
from .decoder import DecoderModel
from .decoder_heads import DECODER_HEADS
from .distilbert import DISTILBERT
from .electra import ELECTRA
from .family import Family
from .gemma import GEMMA, GEMMA2
from .gpt2 import GPT2
from .heads import HEADS
from .llama import LLAMA, MISTRAL, QWEN2, QWEN3
from .modernbert import MODERNBERT
from .phi3 import PHI3
from .roberta import ROBERTA, XLM_ROBERTA

FAMILIES: dict[str, Family] = {f.model_type: f for f in (BERT, ROBERTA, XLM_ROBERTA, DISTILBERT, ALBERT, ELECTRA, DEBERTA_V2, MODERNBERT,
                                                          LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA, GEMMA2, PHI3, GPT2)}

# task → the suffix of the transformers class name for that head ("" = the base model)
CLASS_SUFFIX = {
    "base": "Model",
    "sequence-classification": "ForSequenceClassification",
    "token-classification": "ForTokenClassification",
    "question-answering": "ForQuestionAnswering",
    "masked-lm": "ForMaskedLM",
    "pretraining": "ForPreTraining",
    "causal-lm": "ForCausalLM",
}


def tasks_of(family: Family) -> list[str]:
    """The tasks a family supports: the base model plus its head layouts, in CLASS_SUFFIX order."""
    return [task for task in CLASS_SUFFIX if task == "base" or task in family.heads]


def is_decoder(family: Family) -> bool:
    return issubclass(family.base_class, DecoderModel)


def heads_of(family: Family) -> dict[str, type[PreTrainedModel]]:
    """The shared heads for the family's stack: the decoder's (last-token classifier, LM head) or the encoder's."""
    return DECODER_HEADS if is_decoder(family) else HEADS


def class_name(family: Family, task: str) -> str:
    """The transformers class name of `task` on `family` (`BertForTokenClassification`, `GPT2LMHeadModel`)."""
    return family.class_names.get(task) or family.class_prefix + CLASS_SUFFIX[task]


def model_class(family: Family, task: str) -> type[PreTrainedModel]:
    """The class of `task` on `family`: the shared base or head, bound to the family's data."""
    if task not in tasks_of(family):
        raise ConfigError(f"{family.model_type} has no {task!r} model; it supports: {', '.join(tasks_of(family))}.")
    generic = family.base_class if task == "base" else heads_of(family)[task]
    name = class_name(family, task)
    return CLASSES.setdefault(name, type(name, (generic,), {"family": family, "__module__": __name__}))


CLASSES: dict[str, type[PreTrainedModel]] = {}
for _family in FAMILIES.values():
    for _task in tasks_of(_family):
        model_class(_family, _task)


def support_matrix() -> str:
    """The README's family × head table, generated from the registry (the parity suite runs the same cells)."""
    tasks = list(CLASS_SUFFIX)
    lines = ["| model_type | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for model_type, family in FAMILIES.items():
        cells = [f"`{model_class(family, task).__name__}`" if task in tasks_of(family) else "—" for task in tasks]
        lines.append(f"| {model_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def family_of(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise ConfigError(f"Unsupported model_type {model_type!r}; hfkit supports: {', '.join(sorted(FAMILIES))}.")
    return FAMILIES[model_type]


class AutoModelBase:
    """Reads config.json's model_type and delegates to the family's class for this task."""

    task = "base"

    def __init__(self, *args, **kwargs):
        raise TypeError(f"Use {type(self).__name__}.from_pretrained(name_or_path) or .from_config(config).")

    @classmethod
    def class_for(cls, name_or_path: str | os.PathLike, **hub_kwargs: Any) -> tuple[type[PreTrainedModel], Any]:
        from ..config import read_config_json
        from ..hub import resolve

        directory = resolve(name_or_path, **hub_kwargs)
        return model_class(family_of(read_config_json(directory).get("model_type")), cls.task), directory

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision=None, cache_dir=None, local_files_only=None,
                        token=None, **kwargs: Any) -> PreTrainedModel:
        target, directory = cls.class_for(name_or_path, revision=revision, cache_dir=cache_dir,
                                          local_files_only=local_files_only, token=token)
        return target.from_pretrained(directory, **kwargs)

    @classmethod
    def from_config(cls, config) -> PreTrainedModel:
        """A randomly initialised model of the config's family (for training from scratch)."""
        model = model_class(family_of(config.model_type), cls.task)(config)
        model.init_new_weights([""])
        model.tie_weights()
        return model


def _auto(name: str, task: str) -> type[AutoModelBase]:
    return type(name, (AutoModelBase,), {"task": task, "__module__": __name__, "__doc__": f"Auto class for {task}."})


AutoModel = _auto("AutoModel", "base")
AutoModelForSequenceClassification = _auto("AutoModelForSequenceClassification", "sequence-classification")
AutoModelForTokenClassification = _auto("AutoModelForTokenClassification", "token-classification")
AutoModelForQuestionAnswering = _auto("AutoModelForQuestionAnswering", "question-answering")
AutoModelForMaskedLM = _auto("AutoModelForMaskedLM", "masked-lm")
AutoModelForPreTraining = _auto("AutoModelForPreTraining", "pretraining")
AutoModelForCausalLM = _auto("AutoModelForCausalLM", "causal-lm")
AUTO_CLASSES = {cls.task: cls for cls in (AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification,
                                          AutoModelForQuestionAnswering, AutoModelForMaskedLM, AutoModelForPreTraining,
                                          AutoModelForCausalLM)}
