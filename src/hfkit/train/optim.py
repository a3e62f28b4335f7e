"""AdamW with weight decay on matrices only, and the warmup + decay learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainingConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters in two groups: matrices decay; biases and norm weights (every 1-D tensor) do not."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("The model has no trainable parameters (all frozen); nothing to train.")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; the fused kernel on CUDA, the multi-tensor one elsewhere."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.adam_betas,
                             eps=config.adam_eps, fused=fused or None, foreach=None if fused else True)


def warmup_steps(config: TrainingConfig, total_steps: int) -> int:
    return config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """The multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then the schedule to 0."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig, total_steps: int):
    warmup = warmup_steps(config, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, total_steps, config.schedule))
