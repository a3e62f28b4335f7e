"""Sliding-window attention over packed sequences (ModernBERT's local layers), in one Triton kernel.

    out[i] = softmax(q[i] · k[j]ᵀ · scale over keys j with row[j] = row[i] and |i - j| <= window) · v[j]

Packed tokens of one sequence sit next to each other, so the keys a block of queries can see lie in one short
span of the packed order: [first query - window, last query + window]. Each program takes BLOCK_M queries of one
head and walks that span (BLOCK_M + 2·window keys, a fixed count), masking keys of other sequences and outside the
window; no block of the (N × N) score matrix beyond the span is ever visited, where varlen flash attention with a
window masks every block of each sequence. Scores and the softmax are float32; the probabilities are rounded to
the values' dtype for their product with them, as flash attention does (float32 products for float32 inputs and
under Triton's interpreter, which multiplies no bf16). Every query sees itself, so no row is empty.

Runs where Triton runs it (CUDA, or TRITON_INTERPRET=1 as nn.matvec) without dropout or gradients (`applies`; the op
has no backward, so training keeps varlen_attn); packed_attention keeps varlen_attn for the rest. Wrapped as a torch
custom op: compiled layers (dynamic shapes) call it as one opaque node.
"""

from __future__ import annotations

import torch

from . import matvec
from .matvec import triton
from .online_softmax import LOG2_E

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

    from .online_softmax import online_softmax_step

# On an H100 (benchmarks/RESULTS.md, tenth session) 0.22 ms against varlen_attn's 0.38 ms with a window on 32k tokens,
# ModernBERT-base passes 1.56 against 1.40 M tok/s. False: window layers keep varlen_attn (A/B measurements).
ENABLED = True
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK_M = 64  # queries per program (benchmarks/explore/window_attention.py)


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> bool:
    """q, k, v (N, H, D): a packed batch's queries, keys and values."""
    return (ENABLED and triton is not None and (q.is_cuda or matvec.INTERPRETED) and not dropout_p
            and q.dtype in DTYPES and not matvec.wants_grad(q, k, v))


if triton is not None:

    @triton.jit
    def _window_attention_kernel(q_ptr, k_ptr, v_ptr, row_ptr, o_ptr, N, scale_log2, sq_n, sq_h, sk_n, sk_h, sv_n,
                                 sv_h, so_n, so_h, WINDOW: tl.constexpr, D: tl.constexpr, UPCAST: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        first = tl.program_id(0) * BLOCK_M
        h = tl.program_id(1)
        offs_m = first + tl.arange(0, BLOCK_M)  # (BLOCK_M,) packed positions of the queries
        offs_d = tl.arange(0, BLOCK_D)
        m_ok, d_ok = offs_m < N, offs_d < D
        q = tl.load(q_ptr + offs_m[:, None] * sq_n + h * sq_h + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                    other=0.0)  # (BLOCK_M, BLOCK_D)
        row_q = tl.load(row_ptr + offs_m, mask=m_ok, other=-1)  # (BLOCK_M,) sequence of each query
        if UPCAST:
            q = q.to(tl.float32)
        precision: tl.constexpr = "ieee" if UPCAST else "tf32"  # (only float32 operands use it)
        top = tl.full((BLOCK_M,), -1e30, tl.float32)  # running max, in log2 units
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
        for block in range((BLOCK_M + 2 * WINDOW + BLOCK_N - 1) // BLOCK_N):  # the span, a fixed count
            offs_n = first - WINDOW + block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) packed key positions
            n_ok = (offs_n >= 0) & (offs_n < N)
            row_k = tl.load(row_ptr + offs_n, mask=n_ok, other=-2)
            both = n_ok[:, None] & d_ok[None, :]
            k = tl.load(k_ptr + offs_n[:, None] * sk_n + h * sk_h + offs_d[None, :], mask=both, other=0.0)
            v = tl.load(v_ptr + offs_n[:, None] * sv_n + h * sv_h + offs_d[None, :], mask=both, other=0.0)
            if UPCAST:
                k, v = k.to(tl.float32), v.to(tl.float32)  # (BLOCK_N, BLOCK_D)
            distance = offs_m[:, None] - offs_n[None, :]  # (BLOCK_M, BLOCK_N)
            keep = (row_q[:, None] == row_k[None, :]) & (distance <= WINDOW) & (distance >= -WINDOW)
            scores = tl.dot(q, tl.trans(k), input_precision=precision) * scale_log2  # (BLOCK_M, BLOCK_N) float32
            top, total, acc = online_softmax_step(scores, keep, v, top, total, acc, precision)
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(o_ptr + offs_m[:, None] * so_n + h * so_h + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=m_ok[:, None] & d_ok[None, :])


@torch.library.custom_op("hfkit::window_attention", mutates_args=())
def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, window: int,
                     scale: float, block_m: int = BLOCK_M) -> torch.Tensor:
    """q, k, v (N, H, D) packed; rows (N,) int32, the sequence of each token (nondecreasing) → (N, H, D).
    Only where `applies`."""
    N, H, D = q.shape
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty(N, H, D, dtype=q.dtype, device=q.device)
    upcast = q.dtype == torch.float32 or matvec.INTERPRETED
    block_d = max(16, triton.next_power_of_2(D))
    _window_attention_kernel[(triton.cdiv(N, block_m), H)](
        q, k, v, rows, out, N, scale * LOG2_E, q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0),
        v.stride(1), out.stride(0), out.stride(1), WINDOW=window, D=D, UPCAST=upcast, BLOCK_M=block_m,
        BLOCK_N=64 if block_d <= 128 and not upcast else 32, BLOCK_D=block_d, num_warps=4 if block_m <= 64 else 8)
    return out


@window_attention.register_fake
def _(q, k, v, rows, window, scale, block_m=BLOCK_M):
    return torch.empty_like(q, memory_format=torch.contiguous_format)
