"""The decoders' RMS norms, and a norm carried into the matvec kernel that reads its output (a decode step)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from . import matvec


class _RootMeanSquare(nn.Module):
    """A weight per feature (`initial` before loading) and eps; `normalized(x)` is x / rms(x) in float32."""

    initial: float

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((size,), self.initial))
        self.eps = eps

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)


class RMSNorm(_RootMeanSquare):
    """x / rms(x) · weight, computed in float32 and cast back before the weight, as transformers."""

    initial = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * self.normalized(x).to(x.dtype)


class OneplusRMSNorm(_RootMeanSquare):
    """x / rms(x) · (1 + weight), in float32 and cast back at the end, as transformers' Gemma norms (the weight is
    stored as an offset from 1)."""

    initial = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalized(x) * (1.0 + self.weight.float())).to(x.dtype)


Product = Callable[[torch.Tensor, "tuple[torch.Tensor, float] | None"], "torch.Tensor | None"]


def normed_product(x: torch.Tensor, norm: nn.Module | None, product: Product):
    """`product` (a matvec kernel function of its input and a `norm=(g, eps)` prologue) of norm(x): the norm
    computed inside the kernel where `norm` is an RMSNorm, matvec.norms_inside(x) and the kernel takes the
    inputs; else norm(x) first (x itself without `norm`). Returns the product's input as the torch path needs it
    (x, or norm(x)) and its result, None where no kernel took it."""
    if type(norm) is RMSNorm and matvec.norms_inside(x):
        y = product(x, (norm.weight, norm.eps))
        if y is not None:
            return x, y
    x = x if norm is None else norm(x)
    return x, product(x, None)
