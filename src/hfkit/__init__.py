"""hfkit: the HuggingFace model ecosystem in a lean, fast, exact library on PyTorch."""

from .errors import CheckpointError, ConfigError, HfkitError, ModelNotFoundError
from .models.auto import (
    FAMILIES,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    model_class,
)
from .tasks.pipeline import pipeline
from .tokenizer import Tokenizer

__version__ = "0.1.0"

from .models.auto import CLASSES as _FAMILY_CLASSES

globals().update(_FAMILY_CLASSES)  # BertModel, BertForTokenClassification, RobertaForMaskedLM, …
