"""hfkit: the HuggingFace model ecosystem in a lean, fast, exact library on PyTorch.

Public names are imported on first use, so `import hfkit` (and `hfkit --help`) does not pay for torch.
"""

from importlib import import_module

from .errors import CheckpointError, ConfigError, HfkitError, ModelNotFoundError

__version__ = "0.1.0"

_EXPORTS = {
    "AutoModel": "models.auto",
    "AutoModelForSequenceClassification": "models.auto",
    "AutoModelForTokenClassification": "models.auto",
    "AutoModelForQuestionAnswering": "models.auto",
    "AutoModelForMaskedLM": "models.auto",
    "AutoModelForPreTraining": "models.auto",
    "AutoModelForCausalLM": "models.auto",
    "FAMILIES": "models.auto",
    "model_class": "models.auto",
    "pipeline": "tasks.pipeline",
    "Tokenizer": "tokenizer",
    "Trainer": "train.trainer",
    "TrainingConfig": "train.config",
    "LoraConfig": "lora",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    classes = import_module(".models.auto", __name__).CLASSES  # BertModel, BertForTokenClassification, …
    if name in classes:
        return classes[name]
    raise AttributeError(f"module 'hfkit' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS, *import_module(".models.auto", __name__).CLASSES])


__all__ = ["CheckpointError", "ConfigError", "HfkitError", "ModelNotFoundError", *_EXPORTS]
