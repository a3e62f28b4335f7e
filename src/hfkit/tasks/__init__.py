"""User-facing tasks over (model, tokenizer), with the transformers pipelines' output formats."""

from .answer import answer
from .chat import chat
from .batching import TaskInputError
from .classify import classify
from .embed import SentenceTransformerModules, embed, semantic_search
from .fill_mask import fill_mask
from .generate import generate_text
from .pipeline import Pipeline, pipeline
from .tag import tag

__all__ = [
    "Pipeline",
    "SentenceTransformerModules",
    "TaskInputError",
    "answer",
    "chat",
    "classify",
    "embed",
    "fill_mask",
    "generate_text",
    "semantic_search",
    "pipeline",
    "tag",
]
