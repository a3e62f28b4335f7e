"""config.json → typed, frozen config dataclasses with HF field names and transformers defaults."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

SCALARS = {"int": (int,), "float": (float, int), "str": (str,), "bool": (bool,), "None": (type(None),)}
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


def read_config_json(directory: Path) -> dict[str, Any]:
    """The raw config.json of a model directory, with a clear error when it is missing or broken."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ConfigError(f"No config.json in {directory}: a model directory needs one (save it with save_pretrained).")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); re-download or re-save the model.") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(raw).__name__}.")
    return raw


MAX_LABELS = 1 << 20  # generous for any classification head (its weight alone: MAX_LABELS × hidden)


def label_maps(id2label: Any, label2id: Any, num_labels: Any) -> tuple[dict[int, str], dict[str, int]]:
    """Normalise label maps: int keys for id2label, `LABEL_i` names when only a count is known (transformers' rule)."""
    for name, value in (("id2label", id2label), ("label2id", label2id)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}.")
    if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 0):
        raise ConfigError(f"num_labels must be a non-negative integer, got {num_labels!r}.")
    if num_labels is not None and num_labels > MAX_LABELS:  # LABEL_i names for each: memory grows with the count
        raise ConfigError(f"num_labels={num_labels} is more than {MAX_LABELS} labels; pass id2label for real label "
                          "names, or a count that fits a classification head.")
    if id2label:
        try:
            id2label = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError) as err:
            raise ConfigError(f"id2label keys must be integers (as strings in JSON), got {list(id2label)[:5]}") from err
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigError(f"num_labels={num_labels} disagrees with id2label of {len(id2label)} entries; pass one of them.")
    else:
        id2label = {i: f"LABEL_{i}" for i in range(2 if num_labels is None else num_labels)}
    try:
        label2id = {str(k): int(v) for k, v in label2id.items()} if label2id else {}
    except (TypeError, ValueError) as err:
        raise ConfigError(f"label2id values must be integers, got {list(label2id.values())[:5]}") from err
    if set(label2id) != set(id2label.values()):
        label2id = {name: i for i, name in id2label.items()}
    return id2label, label2id


def require_positive(config: Any, *names: str) -> None:
    """Sizes that must be at least 1 (a zero head count would divide by zero later)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{config.model_type} config field {name!r} must be >= 1, got {getattr(config, name)}.")


@dataclass(frozen=True)
class ModelConfig:
    """Fields every transformers config has; a family adds its own fields in a subclass."""

    model_type: ClassVar[str] = ""
    # The config fields a family calls by another HF name, e.g. DistilBERT's `dim` is `hidden_size`.
    aliases: ClassVar[dict[str, str]] = {}

    id2label: dict[int, str] = field(default_factory=dict)
    label2id: dict[str, int] = field(default_factory=dict)
    problem_type: str | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    architectures: list[str] | None = None
    dtype: str | None = None
    # Unknown source fields, kept so a round trip writes them back.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.check_types()
        id2label, label2id = label_maps(self.id2label, self.label2id, None)
        object.__setattr__(self, "id2label", id2label)
        object.__setattr__(self, "label2id", label2id)
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES}.")

    def check_types(self) -> None:
        """Scalar fields must hold their annotated type: a string hidden_size fails here, not deep in torch."""
        for f in dataclasses.fields(self):
            parts = [p.strip() for p in str(f.type).split("|")]
            if not all(p in SCALARS for p in parts):
                continue  # containers and unions with containers are checked where they are used
            allowed = tuple(t for p in parts for t in SCALARS[p])
            value = getattr(self, f.name)
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ConfigError(f"{self.model_type} config field {f.name!r} must be {f.type}, got {value!r}.")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Build from a config.json dict; `overrides` (e.g. num_labels=3, id2label=...) win over the file."""
        raw = dict(raw)
        raw.pop("model_type", None)
        if "torch_dtype" in raw:  # v4 spelling
            raw.setdefault("dtype", raw.pop("torch_dtype"))
        for hf_name, field_name in cls.aliases.items():
            if hf_name in raw:
                raw[field_name] = raw.pop(hf_name)
        num_labels = overrides.pop("num_labels", raw.pop("num_labels", None))
        id2label = overrides.pop("id2label", None)
        file_labels = raw.get("id2label")
        replaced = num_labels is not None and isinstance(file_labels, dict) and len(file_labels) != num_labels
        if id2label is None and not replaced:
            id2label = file_labels  # the file's labels, unless a different num_labels replaces them
        label2id = overrides.pop("label2id", raw.get("label2id"))
        raw.update(overrides)
        raw["id2label"], raw["label2id"] = label_maps(id2label, label2id, num_labels if not id2label else None)
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in raw.items() if k in names and k != "extra"}
        extra = {k: v for k, v in raw.items() if k not in names}
        try:
            return cls(**known, extra={**raw.get("extra", {}), **extra})
        except (TypeError, ValueError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"Invalid {cls.model_type} config: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The config.json form: HF names, string label keys, unknown fields restored."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"}
        out.update(self.extra)
        reverse = {v: k for k, v in self.aliases.items()}
        out = {reverse.get(k, k): v for k, v in out.items()}
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = self.model_type
        return dict(sorted(out.items()))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)
