"""AdamW with weight decay on matrices only, a compiled AdamW that clips as it steps, and the warmup + decay
learning-rate schedules."""

from __future__ import annotations

import collections
import functools
import math

import torch
from torch import nn
from torch.optim.adam import adam

from .config import TrainingConfig


def parameter_groups(model: nn.Module, weight_decay: float,
                     shadows: dict[torch.Tensor, nn.Parameter] | None = None) -> list[dict]:
    """Trainable parameters in two groups: matrices decay; biases and norm weights (every 1-D tensor) do not.
    With `shadows` (bf16_compute_weights), each bf16 shadow's float32 master stands in for it."""
    master_of = {id(shadow): master for master, shadow in (shadows or {}).items()}
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad:
            continue
        param = master_of.get(id(param), param)
        if id(param) not in seen:  # a tied master is also a parameter of its own
            seen.add(id(param))
            (decay if param.ndim >= 2 else no_decay).append(param)
    if not decay and not no_decay:
        raise ValueError("The model has no trainable parameters (all frozen); nothing to train.")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class ClippedAdamW(torch.optim.AdamW):
    """AdamW whose step first scales the gradients to a global L2 norm ≤ `max_grad_norm` (clip_grad_norm_'s
    arithmetic), then drops them: one compiled function of torch's multi-tensor Adam arithmetic
    (`torch.optim.adam.adam`) on this optimizer's own state, the clip's scale fused into the update.

    Each gradient is read twice (the norm, the update) and never written, where clip_grad_norm_ and a fused AdamW
    read it three times and write it twice. The lr is a tensor per group (the schedule fills it in place, so the step
    never recompiles); the state is AdamW's (capturable: `step` on the device), so checkpoints load either way.
    `shadows` maps a float32 master (the tensor optimised) to the bf16 parameter the model computes with
    (`bf16_compute_weights`): its gradient is (added to) the master's, and it receives the updated master, cast, in
    the same pass.
    The Trainer takes it with `TrainingConfig(optimizer="clipped-adamw")`.
    """

    def __init__(self, groups: list[dict], max_grad_norm: float | None, lr: float,
                 shadows: dict[torch.Tensor, torch.Tensor] | None = None, **options):
        device = groups[0]["params"][0].device
        groups = [{**group, "lr": torch.tensor(group.get("lr", lr), device=device)} for group in groups]
        super().__init__(groups, lr=lr, foreach=True, capturable=True, **options)
        self.max_grad_norm = max_grad_norm
        self.shadows = shadows or {}
        self._update = torch.compile(self._clip_and_update)

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("ClippedAdamW.step takes no closure.")
        lists = []  # per group: (group, params, gradient parts, exp_avgs, exp_avg_sqs, steps, shadows)
        for group in self.param_groups:
            parts = {p: self._gradient_parts(p) for p in group["params"]}
            params = [p for p in group["params"] if parts[p]]
            for param in params:
                state = self.state[param]
                if not state:  # AdamW's initial state, as its capturable step makes it
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            states = [self.state[p] for p in params]
            lists.append((group, params, [parts[p] for p in params], [s["exp_avg"] for s in states],
                          [s["exp_avg_sq"] for s in states], [s["step"] for s in states],
                          [(p, self.shadows[p]) for p in params if p in self.shadows]))
        with torch.no_grad():
            self._update(lists)
        for _, params, *_ in lists:
            for param in params:
                for holder in self._holders(param):
                    holder.grad = None

    def _holders(self, param: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The tensors whose gradients add up to `param`'s: itself and its shadow, if it has one."""
        return (param, self.shadows[param]) if param in self.shadows else (param,)

    def _gradient_parts(self, param: torch.Tensor) -> list[torch.Tensor]:
        return [holder.grad for holder in self._holders(param) if holder.grad is not None]

    def _clip_and_update(self, lists: list[tuple]) -> None:
        summed = []  # per group: the float32 gradients (a shadow's bf16 one read as float32 inside the update)
        for _, _, parts, *_ in lists:
            summed.append([functools.reduce(torch.add, [part.float() for part in each]) for each in parts])
        coefficient = None
        if self.max_grad_norm:
            norms = [norm for grads in summed for norm in torch._foreach_norm(grads)]
            total = torch.linalg.vector_norm(torch.stack(norms))
            coefficient = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
        for (group, params, _, exp_avgs, exp_avg_sqs, steps, shadows), grads in zip(lists, summed, strict=True):
            if not params:
                continue
            if coefficient is not None:
                grads = torch._foreach_mul(grads, coefficient)
            adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=True, capturable=True,
                 decoupled_weight_decay=True, amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1],
                 lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
            for master, shadow in shadows:
                shadow.copy_(master)


def bf16_compute_weights(model: nn.Module) -> dict[torch.Tensor, nn.Parameter]:
    """Give each trainable float32 nn.Linear weight a bf16 Parameter to compute with; return the float32 masters
    mapped to them, for ClippedAdamW's `shadows` and parameter_groups.

    A weight only the Linear uses becomes a plain tensor (the master). A head tied to an embedding gets its own
    shadow while the embedding keeps the float32 weight for its lookup, that weight being the master: the two
    gradients add up in the update. Under bf16 autocast a product already runs on bf16(weight), so the forward is
    unchanged; the shadow saves the cast in every forward and the float32 cast of every weight gradient. A gradient
    accumulated over micro-batches adds in bf16, where autocast adds in float32. Weights shared otherwise are left.
    """
    uses = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    shadows = {}
    for module in model.modules():
        weight = module.weight if type(module) is nn.Linear else None
        if weight is None or not weight.requires_grad or weight.dtype != torch.float32:
            continue
        if uses[id(weight)] == 1:
            master = weight.detach()
        elif uses[id(weight)] == 2 and id(weight) in embedding_weights:
            master = weight
        else:
            continue
        module.weight = nn.Parameter(weight.detach().to(torch.bfloat16))
        shadows[master] = module.weight
    return shadows


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
