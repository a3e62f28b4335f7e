"""A gated feed-forward input projection with its activation in the GEMM's epilogue (ModernBERT's GeGLU), for
inference.

    glu_linear(x, layer, act)     act(x · Wₐᵀ + bₐ) · (x · W_gᵀ + b_g)      W = [Wₐ; W_g], layer's (2I, K) weight

The plain path writes the (M, 2I) product, then reads it back for act(first half) · second half and writes the
(M, I) result. Here one Triton kernel computes both halves' tiles for the same I columns from one tile of x
(two float32 accumulators) and writes only the (M, I) result: on ModernBERT-base's 130k-token pass that is ~0.9 GB
less traffic a layer (the product written and read back), against whatever a Triton GEMM loses to cuBLAS. The
halves are not rounded to the input dtype before the activation, as the plain path rounds them: within the dtype's
own error of it.

Off (ENABLED) until a same-process A/B on a GPU shows it faster; where on, it runs for CUDA float16/bfloat16
inputs (or any under TRITON_INTERPRET=1, for the tests), a plain nn.Linear and an activation of ACTIVATIONS, no
gradient; `glu_linear` returns None elsewhere, for the caller's plain path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import matvec
from .activations import gelu_new, gelu_tanh
from .fused_linear import HALF, inference_only
from .matvec import triton

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

ENABLED = False  # True: the encoders' GLU input projections through the kernel (measure on a GPU first)
ERF_GELU = 3  # beside matvec.SILU and matvec.GELU_TANH
ACTIVATIONS: dict[Callable, int] = {F.gelu: ERF_GELU, F.silu: matvec.SILU, gelu_tanh: matvec.GELU_TANH,
                                    gelu_new: matvec.GELU_TANH}
LAUNCH = {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}


def takes(x: torch.Tensor, layer: nn.Module, act: Callable) -> bool:
    """Whether glu_linear runs `layer` on x (…, K): see the module docstring."""
    return (ENABLED and triton is not None and act in ACTIVATIONS and inference_only(x, layer)
            and layer.out_features % 2 == 0 and ((x.is_cuda and x.dtype in HALF) or matvec.INTERPRETED))


if triton is not None:

    @triton.jit
    def _activate(v, ACT: tl.constexpr):
        if ACT == 3:  # erf-GELU, as F.gelu
            return 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
        return matvec._activate(v, ACT)

    @triton.jit
    def _glu_gemm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, stride_x, stride_y, K: tl.constexpr,
                         HAS_BIAS: tl.constexpr, ACT: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
        """y[m, n] = act(x[m] · w[n] + b[n]) · (x[m] · w[N + n] + b[N + n]), w (2N, K) row-major. Programs run
        GROUP_M row blocks of x against one column block of w before the next, so that w's tiles come from L2."""
        pid = tl.program_id(0)
        blocks_m, blocks_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
        group = pid // (GROUP_M * blocks_n)
        rows_in_group = tl.minimum(blocks_m - group * GROUP_M, GROUP_M)
        block_m = group * GROUP_M + (pid % (GROUP_M * blocks_n)) % rows_in_group
        block_n = (pid % (GROUP_M * blocks_n)) // rows_in_group
        offs_m = block_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) rows of x
        offs_n = block_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output columns
        offs_k = tl.arange(0, BLOCK_K)
        m_ok, n_ok = offs_m < M, offs_n < N
        x_at = x_ptr + offs_m[:, None] * stride_x + offs_k[None, :]  # (BLOCK_M, BLOCK_K)
        a_at = w_ptr + offs_n[None, :] * K + offs_k[:, None]  # (BLOCK_K, BLOCK_N): the activation's rows, as wᵀ
        precision: tl.constexpr = "ieee" if IEEE else "tf32"  # (only float32 operands use it)
        acc_a = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            k_ok = offs_k < K - start
            x = tl.load(x_at, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w_ok = k_ok[:, None] & n_ok[None, :]
            acc_a = tl.dot(x, tl.load(a_at, mask=w_ok, other=0.0), acc_a, input_precision=precision)
            acc_g = tl.dot(x, tl.load(a_at + N * K, mask=w_ok, other=0.0), acc_g, input_precision=precision)
            x_at += BLOCK_K
            a_at += BLOCK_K
        if HAS_BIAS:
            acc_a += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
            acc_g += tl.load(b_ptr + N + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        out = (_activate(acc_a, ACT) * acc_g).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + offs_m[:, None] * stride_y + offs_n[None, :], out, mask=m_ok[:, None] & n_ok[None, :])


def glu_linear(x: torch.Tensor, layer: nn.Module, act: Callable) -> torch.Tensor | None:
    """(…, K) x → act(first half of layer(x)) · second half, (…, I), in one kernel; None where it does not run
    (`takes`)."""
    if not takes(x, layer, act):
        return None
    rows = x.reshape(-1, x.shape[-1])  # (M, K)
    rows = rows if rows.stride(-1) == 1 else rows.contiguous()
    weight = layer.weight.contiguous()  # (2I, K)
    M, K, N = rows.shape[0], rows.shape[1], weight.shape[0] // 2
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)  # (M, I)
    bias = layer.bias if layer.bias is not None else weight  # (unused pointer without one)
    grid = (triton.cdiv(M, LAUNCH["BLOCK_M"]) * triton.cdiv(N, LAUNCH["BLOCK_N"]),)
    _glu_gemm_kernel[grid](rows, weight, bias, y, M, N, rows.stride(0), y.stride(0), K=K,
                           HAS_BIAS=layer.bias is not None, ACT=ACTIVATIONS[act],
                           IEEE=x.dtype == torch.float32, **LAUNCH)
    return y.view(*x.shape[:-1], N)
