"""Name → local files: a local directory, a snapshot in the HF cache, or a huggingface_hub download."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelNotFoundError

# Only what hfkit reads: config, weights, tokenizer, sentence-transformers modules, generation defaults.
MODEL_FILE_PATTERNS = (
    "config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "chat_template.jinja",
    "generation_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/*",
    "2_Dense/*",
    "README.md",
)


def cache_dir_default() -> Path:
    """`HF_HUB_CACHE` > `$HF_HOME/hub` > `~/.cache/huggingface/hub`, as huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    allow_patterns: tuple[str, ...] = MODEL_FILE_PATTERNS,
) -> Path:
    """Return the local directory holding the model's files, downloading only `allow_patterns` if needed."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"{name!r} is not a directory and not a Hub repo id (expected 'org/name' or a local folder).")
    cache = Path(cache_dir).expanduser() if cache_dir else cache_dir_default()
    offline = bool(local_files_only) or offline_mode()

    from huggingface_hub import snapshot_download  # imported here: local folders never pay for it
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return Path(
            snapshot_download(
                name, revision=revision, cache_dir=cache, local_files_only=offline,
                token=token, allow_patterns=list(allow_patterns),
            )
        )
    except LocalEntryNotFoundError as err:
        why = "HF_HUB_OFFLINE is set" if offline_mode() else ("local_files_only=True" if local_files_only else "the Hub could not be reached")
        raise ModelNotFoundError(
            f"Model {name!r} (revision {revision or 'main'}) is not in the cache {cache} and {why}. "
            f"Fix: download it once with network access (`hf download {name}`), point HF_HUB_CACHE/cache_dir "
            f"at a cache that has it, or pass a local directory."
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as err:
        raise ModelNotFoundError(
            f"Model {name!r} (revision {revision or 'main'}) was not found on the Hub: check the spelling, "
            f"or pass token=/set HF_TOKEN for a private or gated repo. ({type(err).__name__})"
        ) from err
