"""float32 products of a few rows on the CPU as (W · xᵀ)ᵀ instead of x · Wᵀ.

With the MKL that PyTorch's x86 CPU wheels ship (2024.2 in torch 2.13), `F.linear` of 2–32 rows against a weight of
many output features is slow: on a 2-core AVX2 EPYC a Qwen2.5-0.5B-shaped LM head (151 936 × 896) took 109–142 ms
for 2–4 rows and 40–43 ms as W · xᵀ, which lets MKL split the work over the weight's rows
(`benchmarks/explore/cpu_few_rows.py`). Those are the rows of a batched, beam or speculative decode step. For one
row both are the same matrix–vector product, and for few output features W · xᵀ is slower, so those keep
`F.linear`. Exact float32 both ways: only the order of the sums differs.
"""

from __future__ import annotations

import torch
from torch import nn

ENABLED = True
FEW_ROWS = range(2, 33)  # rows (tokens of the batch) that take W · xᵀ
MIN_OUT_FEATURES = 4096  # below this W · xᵀ measured slower


def applies(layer: nn.Module, x: torch.Tensor) -> bool:
    return (ENABLED and type(layer) is nn.Linear and x.device.type == "cpu" and x.dtype == torch.float32
            and layer.weight.dtype == torch.float32 and layer.out_features >= MIN_OUT_FEATURES
            and x.numel() // x.shape[-1] in FEW_ROWS)


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:  # (..., K) → (..., N)
    """layer(x), through W · xᵀ where `applies`."""
    if not applies(layer, x):
        return layer(x)
    rows = x.reshape(-1, x.shape[-1])  # (M, K)
    y = torch.mm(layer.weight, rows.t()).t()  # (M, N), from (N, K) · (K, M)
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*x.shape[:-1], layer.out_features)
