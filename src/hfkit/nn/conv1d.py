"""GPT-2's `Conv1D`: a linear layer whose weight is stored (in, out), the transpose of nn.Linear's.

Held in that layout, so the checkpoint key and bytes are the weight itself: loading and `save_pretrained` copy it as
they copy any tensor, with no transpose anywhere (a transpose on load and export would be two places to keep in step,
and a `.t()` view would not be byte-identical storage). The forward is transformers' own, op for op."""

from __future__ import annotations

import torch
from torch import nn


class Conv1D(nn.Module):
    """y = x @ weight + bias, weight (in_features, out_features); the signature of nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        flat = x.reshape(-1, self.in_features)  # (N, in)
        y = flat @ self.weight if self.bias is None else torch.addmm(self.bias, flat, self.weight)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
