"""`hfkit init NAME --task T`: a small standalone project (pyproject, one runnable example, README)."""

from __future__ import annotations

import re
from pathlib import Path

from . import __version__
from .errors import HfkitError

# task → (default model, hfkit Auto class, the example's body after the model is loaded)
TASKS = {
    "classify": (
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english", "AutoModelForSequenceClassification",
        '''    texts = ["I love this library!", "This was a waste of time."]
    for text, labels in zip(texts, model.predict(texts, top_k=2)):
        print(text, "->", ", ".join(f"{item['label']} {item['score']:.3f}" for item in labels))
''',
    ),
    "ner": (
        "dslim/bert-base-NER", "AutoModelForTokenClassification",
        '''    texts = ["Ada Lovelace lived in London.", "Grace Hopper joined the US Navy."]
    for text, entities in zip(texts, model.predict(texts, aggregation_strategy="simple")):
        print(text)
        for entity in entities:
            print(f"  {entity['entity_group']:6} {entity['word']!r} {entity['score']:.3f} [{entity['start']}:{entity['end']}]")
''',
    ),
    "qa": (
        "distilbert/distilbert-base-cased-distilled-squad", "AutoModelForQuestionAnswering",
        '''    context = "Ada Lovelace was an English mathematician. She lived in London and worked with Charles Babbage."
    for question in ["Where did Ada live?", "Who did she work with?"]:
        result = model.answer(question, context)
        print(f"{question} -> {result['answer']!r} (score {result['score']:.3f})")
''',
    ),
    "embed": (
        None, "AutoModel",
        '''    corpus = ["A man is eating food.", "A cat sleeps in the sun.", "The stock market fell today.",
              "Someone plays guitar."]
    queries = ["a pet resting", "music"]
    print("embeddings:", tuple(model.embed(corpus).shape))
    for query, hits in zip(queries, model.search(queries, corpus, top_k=2)):
        print(query, "->", [(corpus[hit["corpus_id"]], round(hit["score"], 3)) for hit in hits])
''',
    ),
}

EXAMPLE = '''"""{title}: run `python example.py [MODEL]` (MODEL: a Hub repo id or a local folder)."""

import sys

import hfkit{extra_import}

DEFAULT_MODEL = {default}{default_note}


def main(model_name):
    model = hfkit.{auto}.from_pretrained({load_arg})
{body}

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL)
'''

TITLES = {"classify": "Text classification", "ner": "Named entities", "qa": "Question answering",
          "embed": "Sentence embeddings and semantic search"}

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "{title} with hfkit"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["{requirement}"]

[tool.setuptools]
py-modules = []  # a script project: installing it installs its dependencies
'''

README = '''# {name}

{title} with [hfkit](https://pypi.org/project/hfkit/), created by `hfkit init {name} --task {task}`.

## Run

```bash
python -m venv .venv && . .venv/bin/activate
pip install -e .
python example.py{model_hint}
```

## Next steps

- Try your own model: `python example.py org/model` or `python example.py ./my-model-folder`.
- The same from the command line: `hfkit {command}`.
- Inspect a model folder: `hfkit info MODEL`; check the environment: `hfkit doctor`.
- Ship a model in the transformers layout: `hfkit export MODEL out/ --head {head}`, then
  `hfkit verify-export out/ --source MODEL` (needs `pip install 'hfkit[test]'`).
- A checkpoint with only `pytorch_model.bin`? `hfkit convert MODEL` writes `model.safetensors` beside it.
'''

COMMANDS = {"classify": ('classify MODEL "I love this!"', "seqcls"), "ner": ('ner MODEL "Ada lived in London."', "tokcls"),
            "qa": ('qa MODEL -q "Where?" -c "Ada lived in London."', "qa"), "embed": ('embed "A man is eating food."', "base")}


def init_project(name: str, task: str = "classify") -> Path:
    """Create the project folder `name` (must not exist, or be empty); returns its path."""
    from .export import atomic_directory

    if task not in TASKS:
        raise HfkitError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
    path = Path(name)
    project = path.resolve().name
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?", project):
        raise HfkitError(f"{project!r} is not a valid project name: use letters, digits, '.', '_' or '-'.")
    default, auto, body = TASKS[task]
    title = TITLES[task]
    requirement = f"hfkit[demo]>={__version__}" if task == "embed" else f"hfkit>={__version__}"
    packaged = default is None  # embed: the all-MiniLM-L6-v2 packaged in hfkit[demo], no download
    example = EXAMPLE.format(
        title=title, default=f'"{default}"' if default else "None", auto=auto, body=body,
        extra_import="\nfrom hfkit.defaults import default_embedding_model" if packaged else "",
        default_note="  # None: the packaged all-MiniLM-L6-v2 (hfkit[demo])" if packaged else "",
        load_arg="model_name or default_embedding_model()" if packaged else "model_name")
    command, head = COMMANDS[task]
    files = {
        "pyproject.toml": PYPROJECT.format(name=project, title=title, requirement=requirement),
        "example.py": example,
        "README.md": README.format(name=project, title=title, task=task, command=command, head=head,
                                   model_hint="" if default is None else f"   # default model: {default}"),
        ".gitignore": ".venv/\n__pycache__/\n*.egg-info/\nout/\n",
    }

    def empty_folder(existing: Path) -> bool:
        return existing.is_dir() and not existing.is_symlink() and not any(existing.iterdir())

    try:
        with atomic_directory(path, replace=empty_folder) as tmp:
            for filename, text in files.items():
                (tmp / filename).write_text(text, encoding="utf-8")
    except HfkitError as err:
        raise HfkitError(f"{path} already exists and is not empty; choose another name.") from err
    return path
