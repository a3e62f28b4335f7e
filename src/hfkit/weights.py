"""safetensors in: single or sharded checkpoints, strict key matching, straight to dtype/device."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .errors import CheckpointError

log = logging.getLogger("hfkit")

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# The one central table of real legacy quirks: old TF-era names, and buffers old versions saved.
LEGACY_SUFFIXES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
IGNORED_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def checkpoint_files(directory: Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file holding it."""
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {err}") from err
        return {key: directory / name for key, name in weight_map.items()}
    single = directory / SINGLE_FILE
    if single.is_file():
        return {key: single for key in _keys(single)}
    pickled = sorted(p.name for p in directory.glob("pytorch_model*.bin"))
    hint = f" It has {pickled[0]}: convert it with `hfkit convert {directory}`." if pickled else ""
    raise CheckpointError(f"No {SINGLE_FILE} or {INDEX_FILE} in {directory}.{hint}")


def _keys(path: Path) -> list[str]:
    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); re-download or re-save it.") from err


def resolve_dtype(dtype: str | torch.dtype | None, config_dtype: str | None, stored: torch.dtype) -> torch.dtype:
    """None/"auto" means what the checkpoint holds (the config's `dtype` first), as transformers v5 does."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = config_dtype if dtype in (None, "auto") else dtype
    if name is None:
        return stored
    if name not in DTYPES:
        raise CheckpointError(f"Unknown dtype {name!r}; use one of {sorted(DTYPES)} or a torch.dtype.")
    return DTYPES[name]


def normalise_keys(model: nn.Module, keys: list[str]) -> dict[str, str]:
    """Model key → checkpoint key, after legacy renames and base-prefix add/strip."""
    renamed = {}
    for key in keys:
        if key.endswith(IGNORED_SUFFIXES):
            continue
        old = next((suffix for suffix in LEGACY_SUFFIXES if key.endswith(suffix)), None)
        renamed[key[: -len(old)] + LEGACY_SUFFIXES[old] if old else key] = key
    prefix = model.family.base_prefix + "."
    has_prefix = any(k.startswith(prefix) for k in renamed)
    if getattr(model, "backbone", model) is not model and not has_prefix:  # head on a base checkpoint
        backbone_roots = {name for name, _ in model.backbone.named_children()}
        return {(prefix + k if k.split(".")[0] in backbone_roots else k): v for k, v in renamed.items()}
    if getattr(model, "backbone", model) is model and has_prefix:  # base from a task checkpoint: drop the head
        dropped = [k for k in renamed if not k.startswith(prefix)]
        if dropped:
            log.info("Loading the base model: %d head weights of the checkpoint are not used (%s…)", len(dropped), dropped[0])
        return {k[len(prefix):]: v for k, v in renamed.items() if k.startswith(prefix)}
    return renamed


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:20]) + (f", … ({len(items) - 20} more)" if len(items) > 20 else "")
    return f"\n  {title} ({len(items)}): {shown}"


def load_checkpoint(
    model: nn.Module,
    directory: Path,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    ignore_mismatched_sizes: bool = False,
) -> None:
    """Materialise a model built on `meta` from the checkpoint in `directory`, strictly.

    Every tensor is read once from safetensors and placed at its final dtype/device; keys the
    model lacks, or lacks in the checkpoint, or with other shapes, fail in one listing error.
    The only keys that may be absent are a task head's on a base checkpoint (initialised fresh).
    """
    files = checkpoint_files(Path(directory))
    device = torch.device(device or "cpu")
    source_of = normalise_keys(model, list(files))
    ties = model.tied_weights()
    for alias, canonical in ties.items():  # a tied key found only under its alias loads the source
        if alias in source_of and canonical not in source_of:
            source_of[canonical] = source_of[alias]
        source_of.pop(alias, None)
    expected = {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in ties}
    missing = [k for k in expected if k not in source_of]
    ignorable = [re.compile(pattern) for pattern in model.family.ignored_checkpoint_keys]
    unexpected = [source_of[k] for k in source_of
                  if k not in expected and not any(p.search(source_of[k]) for p in ignorable)]

    handles: dict[Path, object] = {}
    try:
        for path in sorted(set(files.values())):
            handles[path] = safe_open(path, framework="pt", device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"Cannot open {path} as safetensors ({err}); re-download or re-save it.") from err

    def shape_of(ckpt_key):
        return tuple(handles[files[ckpt_key]].get_slice(ckpt_key).get_shape())

    mismatched = [k for k in expected if k in source_of and shape_of(source_of[k]) != tuple(expected[k].shape)]
    fresh = [k for k in missing if k.split(".")[0] in getattr(model, "new_on_base", ())]
    if ignore_mismatched_sizes:
        fresh += mismatched
    if fresh:  # a head new to this checkpoint: other heads' weights and an unused pooler are dropped (transformers too)
        prefix = model.family.base_prefix + "."
        unused = [k for k in unexpected if not k.startswith(prefix) or k.startswith(prefix + "pooler.")]
        if unused:
            log.warning("%s: %d checkpoint weights not used by this head: %s", type(model).__name__, len(unused),
                        ", ".join(unused[:10]) + (", …" if len(unused) > 10 else ""))
        unexpected = [k for k in unexpected if k not in unused]
    errors = [k for k in missing if k not in fresh]
    bad_shapes = [] if ignore_mismatched_sizes else mismatched
    if errors or unexpected or bad_shapes:
        shapes = [f"{k}: checkpoint {shape_of(source_of[k])} vs model {tuple(expected[k].shape)}" for k in bad_shapes]
        raise CheckpointError(
            f"The checkpoint in {directory} does not fit {type(model).__name__}:"
            + (_listing("missing", errors) if errors else "")
            + (_listing("unexpected", unexpected) if unexpected else "")
            + (_listing("shape mismatch", shapes) if shapes else "")
            + "\nFix: load it with the class its config.json `architectures` names, or pass "
            "ignore_mismatched_sizes=True to re-initialise a head of another size."
        )

    floats = [source_of[k] for k in expected if k in source_of]
    stored = next((handles[files[k]].get_slice(k).get_dtype() for k in floats), "F32")
    target = resolve_dtype(dtype, getattr(model.config, "dtype", None), _SAFETENSORS_DTYPES.get(stored, torch.float32))
    for key, current in expected.items():
        if key in fresh:
            continue
        ckpt_key = source_of[key]
        try:
            tensor = handles[files[ckpt_key]].get_tensor(ckpt_key)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"Cannot read tensor {ckpt_key} from {files[ckpt_key]} ({err}): the file is truncated or corrupt.") from err
        if tensor.is_floating_point():
            tensor = tensor.to(target)
        _assign(model, key, tensor)
    if fresh:
        roots = sorted({".".join(k.split(".")[:-1]) for k in fresh})
        for root in roots:
            model.get_submodule(root).to_empty(device=device, recurse=False).to(target)
        model.init_new_weights(roots)
        log.warning("%s: newly initialised from scratch (not in the checkpoint): %s. Train the model before using it.",
                    type(model).__name__, ", ".join(sorted(fresh)))
    model.tie_weights()
    leftover = [k for k, v in model.state_dict(keep_vars=True).items() if v.is_meta]
    if leftover:
        raise CheckpointError(f"Internal error: tensors left unloaded: {leftover[:20]}")


_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _assign(model: nn.Module, key: str, tensor: torch.Tensor) -> None:
    parent, _, leaf = key.rpartition(".")
    module = model.get_submodule(parent)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=tensor.is_floating_point())
    else:
        module._buffers[leaf] = tensor
