"""Training checkpoints: weights, optimizer, scheduler, scaler, RNG states and the data position, written atomically.

    OUTPUT_DIR/checkpoints/step-00000120/
        model.safetensors     the full module state (LoRA layers included), shared tensors stored once
        optimizer.pt          optimizer + scheduler + grad-scaler state (tensors and numbers only)
        rng.pt                per-rank torch / CUDA / python RNG states and the collation generator
        trainer_state.json    step, epoch, micro-batch position in the epoch, best metric so far

Everything is read back with `torch.load(weights_only=True)`: no code runs on resume.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_model, save_model

from ..errors import ConfigError
from ..export import atomic_directory
from .distributed import World

STEP_DIR = re.compile(r"step-(\d+)")


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(), "collate": generator.get_state()}


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    generator.set_state(state["collate"])


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def load_weights(path: Path, model, device: torch.device) -> None:
    """The checkpoint's module state into `model`, strictly (LoRA layers included)."""
    load_model(model, str(path / "model.safetensors"), strict=True, device=str(device))


def checkpoints(output_dir: str | Path) -> list[Path]:
    """The complete checkpoints under output_dir, oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = [p for p in root.glob("step-*") if STEP_DIR.fullmatch(p.name) and (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.fullmatch(p.name)[1]))


def save_checkpoint(output_dir: str | Path, world: World, model, optimizer, scheduler, scaler,
                    generator: torch.Generator, state: dict[str, Any], keep: int, protect: int | None = None) -> Path | None:
    """Write a checkpoint (rank 0 writes; every rank contributes its RNG state); prune to the newest `keep`
    and the `protect` step (the best one)."""
    states = [None] * world.size
    if world.distributed:
        dist.all_gather_object(states, rng_state(generator))  # a trusted process group, not a file
    else:
        states = [rng_state(generator)]
    path = checkpoint_dir(output_dir, state["step"])
    if world.main:
        with atomic_directory(path, replace=lambda old: (old / "trainer_state.json").is_file()) as tmp:
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None}, tmp / "optimizer.pt")
            torch.save(states, tmp / "rng.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        kept = checkpoint_dir(output_dir, protect) if protect is not None else None
        for old in checkpoints(output_dir)[:-keep]:
            if old != kept:
                shutil.rmtree(old, ignore_errors=True)
    world.barrier()
    return path if world.main else None


def load_checkpoint(path: Path, world: World, model, optimizer, scheduler, scaler, generator: torch.Generator,
                    optimizer_name: str = "adamw") -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote into the live objects; returns the trainer state. The checkpoint
    must have been written with `optimizer_name` (TrainingConfig.optimizer): their states keep the lr differently
    (a number, a tensor)."""
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    written_by = state.get("optimizer", "adamw")
    if written_by != optimizer_name:
        raise ConfigError(f"{path} was written with optimizer={written_by!r}; resume it with that optimizer "
                          f"(this run has {optimizer_name!r}).")
    load_weights(path, model, world.device)
    saved = torch.load(path / "optimizer.pt", map_location=world.device, weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    states = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    if len(states) != world.size:
        raise ValueError(f"Checkpoint {path} was written by {len(states)} processes; resume it with as many "
                         f"(this run has {world.size}).")
    set_rng_state(states[world.rank], generator)
    return state
