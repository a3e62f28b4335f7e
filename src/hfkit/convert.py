"""`pytorch_model.bin` (single, or sharded with `pytorch_model.bin.index.json`) → safetensors, safely.

Only `torch.load(weights_only=True)` is used: a pickle that needs code execution (any global beyond
tensors and plain containers) is refused with a CheckpointError, and nothing in it runs.
Tensors sharing storage (a tied decoder saved beside the embeddings) are stored once under the key the
model keeps, as transformers saves them; disjoint views of one storage are cloned apart.

Where: beside the source (its folder, or its HF cache snapshot), each file written under a temporary name
and renamed into place, the index last, so a reader never sees half a checkpoint; or into a new folder
`out` (with the source's config, tokenizer and other files) written atomically like an export.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import CheckpointError
from .export import atomic_directory, write_json

BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
SAFE_FILE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_PATTERNS = ("pytorch_model*.bin", BIN_INDEX)


@dataclass
class Converted:
    directory: Path
    written: list[str] = field(default_factory=list)  # files written, relative to `directory`
    dropped: list[str] = field(default_factory=list)  # aliases of shared tensors, stored once under another key
    skipped: bool = False  # the folder already had safetensors weights


def load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict through the weights-only unpickler; anything else is a CheckpointError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        why = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line), "")
        if not why:  # not a blocked callable: a damaged or foreign file
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(err).strip().splitlines()[-1]}); "
                                  "re-download it.") from err
        raise CheckpointError(
            f"Refused to load {path}: its pickle needs code execution, which hfkit never runs "
            f"(torch.load weights_only=True rejected it: {why}). Convert it only if you trust "
            "its source, in a sandbox, or get a safetensors version of the model.") from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({err}); re-download it.") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a training checkpoint wrapping the weights
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return state


def tied_aliases(directory: Path) -> set[str]:
    """Keys hfkit's model for this config stores under another key (e.g. `cls.predictions.decoder.weight`)."""
    try:
        from .config import read_config_json
        from .models.auto import family_of, model_class
        from .models.base import empty_init
        from .verify import task_of

        raw = read_config_json(directory)
        family = family_of(raw.get("model_type"))
        task = task_of(raw["architectures"][0], family) if raw.get("architectures") else "base"
        with empty_init():
            model = model_class(family, task)(family.read_config(raw))
        return set(model.tied_weights())
    except Exception:  # no config or an unsupported family: fall back to sorted names
        return set()


def dedupe(state: dict[str, torch.Tensor], aliases: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """safetensors refuses shared storage: keep one key per identical view (not an alias), clone disjoint views."""
    groups: dict[int, list[str]] = {}
    for name, tensor in state.items():
        storage = tensor.untyped_storage()
        groups.setdefault(storage.data_ptr() if storage.nbytes() else id(tensor), []).append(name)
    state, dropped = dict(state), []
    for names in (sorted(g) for g in groups.values() if len(g) > 1):
        views: dict[tuple, list[str]] = {}
        for name in names:
            tensor = state[name]
            views.setdefault((tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype), []).append(name)
        for same in views.values():
            keep = next((n for n in same if n not in aliases), same[0])
            for name in same:
                if name != keep:
                    dropped.append(name)
                    del state[name]
        if len(views) > 1:
            for same in views.values():
                kept = next(n for n in same if n in state)
                state[kept] = state[kept].clone()
    return {k: v.contiguous() for k, v in state.items()}, dropped


def bin_shards(directory: Path) -> list[str]:
    """The .bin files of the checkpoint: the index's shards, or the single file."""
    index = directory / BIN_INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index} is not a valid checkpoint index (needs a 'weight_map'): {err}") from err
        absent = [n for n in names if not (directory / n).is_file()]
        if absent:
            raise CheckpointError(f"{index} lists shards missing from {directory}: {absent}")
        return names
    if (directory / BIN_FILE).is_file():
        return [BIN_FILE]
    raise CheckpointError(f"No {BIN_FILE} or {BIN_INDEX} in {directory}: nothing to convert.")


def safetensors_name(bin_name: str, sharded: bool) -> str:
    """`pytorch_model-00001-of-00002.bin` → `model-00001-of-00002.safetensors`."""
    if not sharded:
        return SAFE_FILE
    stem = Path(bin_name).name.removesuffix(".bin")
    return (stem.replace("pytorch_model", "model", 1) if stem.startswith("pytorch_model") else stem) + ".safetensors"


def write_converted(source: Path, target: Path) -> tuple[list[str], list[str]]:
    """Convert every shard of `source` into files in `target`; returns (written files, dropped aliases)."""
    from safetensors.torch import save_file

    shards = bin_shards(source)
    sharded = (source / BIN_INDEX).is_file()
    aliases = tied_aliases(source)
    weight_map, written, dropped, total = {}, [], [], 0
    for shard in shards:
        state, gone = dedupe(load_bin(source / shard), aliases)
        name = safetensors_name(shard, sharded)
        save_file(state, str(target / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(state, name))
        total += sum(t.numel() * t.element_size() for t in state.values())
        written.append(name)
        dropped += gone
        del state
    if sharded:
        write_json(target / SAFE_INDEX, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
        written.append(SAFE_INDEX)
    return written, dropped


def convert(src, out=None, revision: str | None = None, force: bool = False) -> Converted:
    """Convert the .bin checkpoint of `src` (folder or Hub id) to safetensors, beside it or into `out`."""
    from .hub import MODEL_FILE_PATTERNS, resolve

    source = resolve(src, revision=revision, allow_patterns=(*MODEL_FILE_PATTERNS, *BIN_PATTERNS))
    if out is not None:
        target = Path(out)
        with atomic_directory(target) as tmp:
            for item in source.iterdir():
                weights = item.name.startswith("pytorch_model") or item.suffix == ".safetensors" or item.name == SAFE_INDEX
                if weights or item.name.startswith("."):
                    continue
                (shutil.copytree if item.is_dir() else shutil.copy)(item, tmp / item.name)
            written, dropped = write_converted(source, tmp)
        return Converted(target, written, dropped)
    if not force and ((source / SAFE_FILE).is_file() or (source / SAFE_INDEX).is_file()):
        return Converted(source, skipped=True)
    bin_shards(source)  # fail before creating anything when there is nothing to convert
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".hfkit-convert-", dir=source))
    except OSError as err:
        raise CheckpointError(f"Cannot write beside the checkpoint in {source} ({err}); pass out= (--out DIR).") from err
    try:
        written, dropped = write_converted(source, tmp)
        for name in sorted(written, key=lambda n: n == SAFE_INDEX):  # the index last: readers see all or nothing
            (tmp / name).replace(source / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Converted(source, written, dropped)
