"""Matrix–vector products for decoding: Triton kernels for a few rows of activations against int8 weights.

A batch-1 decode step is a chain of matrix–vector products that each stream one weight from memory. Two products
per layer are stacked into one weight, so one kernel streams both, and the gated MLP's activation runs on the
results before anything is written:

    matvec(x, w, s, b)        y = (x · wᵀ) · s + b                       w (N, K) int8, s (N,): per-row scales
    glu_matvec(x, w, s, b, act)  y = act(x · w_gᵀ · s_g + b_g) · (x · w_uᵀ · s_u + b_u)   w = gate | up, (2N, K)

Each program multiplies BLOCK_N weight rows (for the GLU form: BLOCK_N gate rows and the matching up rows) with
one row of x, accumulating in float32, and writes the result once in x's dtype (the unfused path rounds the
product, the scaled product and each GLU half to that dtype on the way; this rounds once).

The kernels run where Triton runs them — CUDA tensors, or any tensor under TRITON_INTERPRET=1 — for at most
MAX_ROWS rows of x with no autograd; `applies(x)` says so, and callers keep their own path for the rest
(`Int8WeightLinear`). torch.compile traces the kernel launch into its graph (CUDA graphs included).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .activations import gelu_new, gelu_tanh

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU wheels of torch come without Triton
    triton = None

MAX_ROWS = 4  # more rows of x: a matrix product, which the GEMM libraries do better
ENABLED = True  # False: always the torch path (A/B measurements)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter: the kernels on CPU tensors (tests)

# the activations the GLU kernel computes, by the function the model holds
SILU, GELU_TANH = 1, 2
KERNEL_ACTIVATIONS: dict[Callable, int] = {F.silu: SILU, gelu_tanh: GELU_TANH, gelu_new: GELU_TANH}


def applies(x: torch.Tensor) -> bool:
    """Whether the kernels run for activations `x` (..., K)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return (ENABLED and triton is not None and (x.is_cuda or INTERPRETED) and 0 < rows <= MAX_ROWS
            and not (torch.is_grad_enabled() and x.requires_grad))


def config_for(n: int, k: int, glu: bool = False) -> dict:
    """Launch shape for an (n, k) weight (2n rows for the GLU form): 32 float32 per-lane sums per thread, few
    rows per program so that even a 2048-row weight spreads over every multiprocessor. The fastest shapes of
    `benchmarks/explore/int8_gemv.py` on an H100 (Llama-1B's products, 2026-12-05)."""
    if glu:
        return {"BLOCK_N": 2, "BLOCK_K": min(1024, triton.next_power_of_2(k)), "num_warps": 4}
    if n >= 65536:  # LM heads: plenty of programs already
        return {"BLOCK_N": 2, "BLOCK_K": min(1024, triton.next_power_of_2(k)), "num_warps": 2}
    return {"BLOCK_N": 1, "BLOCK_K": min(2048, triton.next_power_of_2(k)), "num_warps": 2}


if triton is not None:

    @triton.jit
    def _activate(v, ACT: tl.constexpr):
        if ACT == 1:  # SiLU
            v = v * tl.sigmoid(v)
        elif ACT == 2:  # tanh-GELU; tanh(z) = 2·sigmoid(2z) − 1
            v = 0.5 * v * (1.0 + (2.0 * tl.sigmoid(1.5957691216057308 * (v + 0.044715 * v * v * v)) - 1.0))
        return v

    @triton.jit
    def _matvec_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, N, stride_x, stride_w, stride_y, K: tl.constexpr,
                       HAS_BIAS: tl.constexpr, ACT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """y[row, n] = Σ_k x[row, k] · w[n, k] · s[n] (+ b[n]); ACT > 0: act(that) · (the same for row n + N)."""
        block, row = tl.program_id(0), tl.program_id(1)
        offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        n_ok = offs_n < N
        partial = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)  # per-lane sums, reduced once after the loop
        partial_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            offs_k = start + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
            k_ok = offs_k < K
            tile = offs_n[:, None] * stride_w + offs_k[None, :]  # (BLOCK_N, BLOCK_K)
            ok = n_ok[:, None] & k_ok[None, :]
            # x read in the weight tile's shape (rows repeat from L1): no layout exchange through shared memory
            x = tl.load(x_ptr + row * stride_x + offs_k[None, :] + 0 * offs_n[:, None], mask=ok, other=0.0)
            x = x.to(tl.float32)  # (BLOCK_N, BLOCK_K)
            partial += tl.load(w_ptr + tile, mask=ok, other=0).to(tl.float32) * x
            if ACT > 0:
                partial_up += tl.load(w_ptr + N * stride_w + tile, mask=ok, other=0).to(tl.float32) * x
        acc = tl.sum(partial, axis=1)  # (BLOCK_N,)
        up = tl.sum(partial_up, axis=1)
        acc *= tl.load(scale_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if ACT > 0:
            up *= tl.load(scale_ptr + N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            if HAS_BIAS:
                up += tl.load(bias_ptr + N + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            acc = _activate(acc, ACT) * up
        tl.store(y_ptr + row * stride_y + offs_n, acc.to(y_ptr.dtype.element_ty), mask=n_ok)


def _launch(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, act: int,
            config: dict | None) -> torch.Tensor:
    n = weight.shape[0] // (2 if act else 1)  # outputs per row
    k = x.shape[-1]
    rows = x.reshape(-1, k).contiguous()  # (M, K)
    y = torch.empty(rows.shape[0], n, dtype=x.dtype, device=x.device)  # (M, N)
    config = config or config_for(n, k, glu=bool(act))
    grid = (triton.cdiv(n, config["BLOCK_N"]), rows.shape[0])
    _matvec_kernel[grid](rows, weight, scale, bias if bias is not None else scale, y, n, rows.stride(0),
                         weight.stride(0), y.stride(0), K=k, HAS_BIAS=bias is not None, ACT=act, **config)
    return y.view(*x.shape[:-1], n)


def matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
           config: dict | None = None) -> torch.Tensor:
    """(..., K) x, (N, K) int8 weight, (N,) scales, (N,) bias → (..., N) in x's dtype: (x · wᵀ) · s + b.
    Only where `applies(x)`."""
    return _launch(x, weight, scale, bias, 0, config)


def glu_matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, act: int,
               config: dict | None = None) -> torch.Tensor:
    """(..., K) x, (2N, K) gate | up int8 weight, (2N,) scales and bias → (..., N): act(gate) · up, where gate and
    up are the two halves of (x · wᵀ) · s + b; `act` one of SILU, GELU_TANH. Only where `applies(x)`."""
    return _launch(x, weight, scale, bias, act, config)
