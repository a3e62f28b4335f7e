"""AdamW with weight decay on matrices only, a compiled AdamW that clips as it steps, and the warmup + decay
learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.adam import adam

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


class ClippedAdamW(torch.optim.AdamW):
    """AdamW whose step first scales the gradients to a global L2 norm ≤ `max_grad_norm` (clip_grad_norm_'s
    arithmetic: the same total norm, the same coefficient), then drops them. The update is one compiled function of
    torch's multi-tensor Adam arithmetic (`torch.optim.adam.adam`) on this optimizer's own state, the clip's scale
    fused into it.

    Each gradient is read twice (the norm, the update) and never written, where clip_grad_norm_ and a fused AdamW
    read it three times and write it twice. The lr is a tensor per group (the schedule fills it in place, so the step
    never recompiles); the state is AdamW's (capturable: `step` on the device), so checkpoints load either way.
    The Trainer takes it with `TrainingConfig(optimizer="clipped-adamw")`: it pays where the optimizer's memory
    traffic outweighs its kernel launches (a 1B-parameter model), not on a small model (benchmarks/RESULTS.md).
    """

    def __init__(self, groups: list[dict], max_grad_norm: float | None, lr: float, **options):
        device = groups[0]["params"][0].device
        groups = [{**group, "lr": torch.tensor(group.get("lr", lr), device=device)} for group in groups]
        super().__init__(groups, lr=lr, foreach=True, capturable=True, **options)
        self.max_grad_norm = max_grad_norm
        # dynamo's guards already check every tensor's size and stride; inductor's own assert per input (~1,000 for
        # bert's 201 parameters: each one's grad and state) cost 1.4 ms of host a step (CPU: 6.5 → 5.1 ms, same steps)
        self._update = torch.compile(self._scaled_update, options={"size_asserts": False})

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ClippedAdamW.step takes no closure.")
        lists = []  # per group: (group, params, grads, exp_avgs, exp_avg_sqs, steps)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for param in params:
                state = self.state[param]
                if not state:  # AdamW's initial state, as its capturable step makes it
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            states = [self.state[p] for p in params]
            lists.append((group, params, [p.grad for p in params], [s["exp_avg"] for s in states],
                          [s["exp_avg_sq"] for s in states], [s["step"] for s in states]))
        with torch.no_grad():
            coefficient = None
            if self.max_grad_norm:  # eager, as clip_grad_norm_: one multi-tensor launch, not a kernel per tensor
                total = torch.nn.utils.get_total_norm([g for _, _, grads, *_ in lists for g in grads], foreach=True)
                coefficient = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            self._update(lists, coefficient)
        for _, params, *_ in lists:
            for param in params:
                param.grad = None

    @staticmethod
    def _scaled_update(lists: list[tuple], coefficient: torch.Tensor | None) -> None:
        for group, params, grads, exp_avgs, exp_avg_sqs, steps in lists:
            if not params:
                continue
            if coefficient is not None:
                grads = torch._foreach_mul(grads, coefficient)
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=True, capturable=True,
                 decoupled_weight_decay=True, amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1],
                 lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


def make_optimizer(model: nn.Module, config: TrainingConfig, device: torch.device) -> torch.optim.AdamW:
    """config.optimizer: ClippedAdamW, or AdamW (the fused kernel on CUDA, the multi-tensor one elsewhere)."""
    if config.optimizer == "clipped-adamw":
        return ClippedAdamW(parameter_groups(model, config.weight_decay), config.max_grad_norm, lr=config.lr,
                            betas=config.adam_betas, eps=config.adam_eps)
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
