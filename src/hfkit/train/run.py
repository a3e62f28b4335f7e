"""`hfkit train`: a base model + labelled rows → the task head with labels read from the data → Trainer → export."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .collate import HEAD_TASKS
from .config import TrainingConfig
from .data import load_rows

HEAD_OF_TASK = {task: head for head, task in HEAD_TASKS.items()}  # "classify" → "sequence-classification"


def labels_in(task: str, rows) -> list[str] | None:
    """The label names the rows use, in a stable order; None when labels are ids or the task has none.

    classify: the names in `label` (sorted). ner: the names in `tags`, or B-/I- tags of the `entities`' labels,
    with "O" first."""
    if task == "classify":
        values = {row.get("label") for row in rows if not isinstance(row.get("label"), (list, type(None)))}
        names = {v for v in values if isinstance(v, str)}
        if names and names != values:
            raise ConfigError("Labels mix names and ids; use one kind in the whole file.")
        return sorted(names) or None
    if task == "ner":
        tags = set()
        for row in rows:
            if row.get("tags") is not None:
                tags.update(t for t in row["tags"] if isinstance(t, str))
            else:
                tags.update(f"{p}-{e['label']}" for e in row.get("entities") or [] for p in ("B", "I"))
        return ["O", *sorted(tags - {"O"})] if tags else None
    return None


def model_for_training(task: str, name_or_path: str, rows, **load: Any):
    """Load the task's head on `name_or_path`; a classifier gets the data's labels unless it already knows them."""
    from ..config import read_config_json
    from ..models.auto import AUTO_CLASSES

    if task not in HEAD_OF_TASK:
        raise ConfigError(f"Unknown task {task!r}; hfkit trains: {', '.join(HEAD_OF_TASK)}.")
    auto = AUTO_CLASSES[HEAD_OF_TASK[task]]
    names = labels_in(task, rows)
    if names is None and task == "classify":  # integer labels: as many classes as the largest id + 1
        ids = [row.get("label") for row in rows if type(row.get("label")) is int]
        if ids and max(ids) >= 2:
            load.setdefault("num_labels", max(ids) + 1)
    if names is None:
        return auto.from_pretrained(name_or_path, **load)
    target, directory = auto.class_for(name_or_path)
    known = target.family.read_config(read_config_json(directory)).label2id if task in ("classify", "ner") else {}
    if set(names) <= set(known or {}):
        return target.from_pretrained(directory, **load)
    return target.from_pretrained(directory, num_labels=len(names), id2label=dict(enumerate(names)),
                                  label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True, **load)


def train(task: str, model: str, train_data, eval_data=None, config: TrainingConfig | None = None,
          lora=None, device: str | None = None) -> dict[str, Any]:
    """Fine-tune `model` for `task` on `train_data`; with `lora` (a LoraConfig) only adapters and the head train.

    Writes OUTPUT_DIR/model (or OUTPUT_DIR/adapter with LoRA) when config.output_dir is set; returns the
    last record (final eval metrics when eval_data is given)."""
    from .trainer import Trainer

    config = config or TrainingConfig()
    rows = load_rows(train_data, config.columns)
    hf_model = model_for_training(task, model, rows)
    if lora is not None:
        hf_model.add_lora(lora)
    return Trainer(hf_model, config, rows, eval_data, device=device).fit()
