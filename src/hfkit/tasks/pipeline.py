"""`pipeline(task, model)`: load a model and tokenizer by name or path, and call a task function on them."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from .answer import answer
from .batching import TaskInputError
from .classify import classify
from .embed import SentenceTransformerModules, embed
from .fill_mask import fill_mask
from .generate import generate_text
from .tag import tag

# task → (hfkit Auto class that loads its model, task function)
TASKS: dict[str, tuple[str, Callable[..., Any]]] = {
    "text-classification": ("AutoModelForSequenceClassification", classify),
    "token-classification": ("AutoModelForTokenClassification", tag),
    "question-answering": ("AutoModelForQuestionAnswering", answer),
    "fill-mask": ("AutoModelForMaskedLM", fill_mask),
    "feature-extraction": ("AutoModel", embed),
    "text-generation": ("AutoModelForCausalLM", generate_text),
}
ALIASES = {
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
    "sentence-similarity": "feature-extraction",
    "embeddings": "feature-extraction",
}
HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token")


class Pipeline:
    """A model and tokenizer bound to one task function; calling it forwards to that function."""

    def __init__(self, task: str, function: Callable[..., Any], model: Any, tokenizer: Any, **defaults: Any) -> None:
        self.task, self.function, self.model, self.tokenizer, self.defaults = task, function, model, tokenizer, defaults

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(self.model, self.tokenizer, *args, **{**self.defaults, **kwargs})

    def __repr__(self) -> str:
        return f"Pipeline(task={self.task!r}, model={type(self.model).__name__}, defaults={self.defaults})"


def pipeline(task: str, model: Any = None, tokenizer: Any = None, **kwargs: Any) -> Pipeline:
    """A callable for `task` (see `TASKS` and `ALIASES`). `model` is a loaded model or a Hub name / local
    folder (loaded with the task's hfkit Auto class; its tokenizer from the same place unless given).
    Keyword arguments the task function takes (e.g. `aggregation_strategy`, `top_k`) become call
    defaults; `revision`/`cache_dir`/`local_files_only`/`token` locate the files; the rest go to
    `from_pretrained` (e.g. `dtype`, `device`)."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise TaskInputError(f"Unknown task {task!r}; supported: {sorted([*TASKS, *ALIASES])}.")
    auto_name, function = TASKS[name]
    if model is None:
        raise TaskInputError(f"pipeline({task!r}) needs model=: a Hub repo id, a local folder or a loaded model.")
    parameters = set(inspect.signature(function).parameters) - {"model", "tokenizer"}
    defaults = {key: kwargs.pop(key) for key in list(kwargs) if key in parameters}
    hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}

    from ..tokenizer import Tokenizer

    if isinstance(model, (str, os.PathLike)):
        from .. import hub
        from ..models import auto

        directory = hub.resolve(model, **hub_kwargs)
        model = getattr(auto, auto_name).from_pretrained(directory, **kwargs)
        if tokenizer is None:
            tokenizer = Tokenizer.from_dir(directory)
        if name == "feature-extraction":
            defaults.setdefault("modules", SentenceTransformerModules.from_dir(directory))
    elif kwargs:
        raise TaskInputError(f"Loading options {sorted(kwargs)} were given but the model is already loaded.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.from_pretrained(tokenizer, **hub_kwargs)
    if tokenizer is None:
        try:
            tokenizer = model.tokenizer  # an hfkit model loaded from a folder finds the tokenizer beside it
        except AttributeError:
            raise TaskInputError("No tokenizer: pass tokenizer= (a Tokenizer, a name or a folder).") from None
    return Pipeline(name, function, model, tokenizer, **defaults)
