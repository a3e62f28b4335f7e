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
from .attention_steps import LOG2_E
from .matvec import triton

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

    from .attention_steps import online_softmax_step, rotate_halves

# On an H100 (benchmarks/RESULTS.md, tenth session) 0.22 ms against varlen_attn's 0.38 ms with a window on 32k tokens,
# ModernBERT-base passes 1.56 against 1.40 M tok/s. False: window layers keep varlen_attn (A/B measurements).
ENABLED = True
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK_M = 64  # queries per program (benchmarks/explore/window_attention.py)
# keys per inner step, half precision with heads of ≤ 128 (else 32). Alone on 130k tokens with RoPE inside, 32 took
# 0.662 against 0.714 ms (nineteenth session's sweep); whole passes 83.6 against 86.1 ms, within that run's noise
# (twenty-fourth), and the outputs round otherwise (the softmax runs over other blocks)
BLOCK_N = 64
HEAD_DIMS = (32, 64, 128, 256)  # split in halves for RoPE, each at least tl.dot's 16
# The layer's RoPE inside the kernel, q and k read unrotated from the q | k | v product: saves a pass that reads and
# writes q and k. ModernBERT-base passes on an H100 82.8 against 86.8 ms (1.57 against 1.50 M tok/s), bf16 outputs
# equal (benchmarks/RESULTS.md, twenty-third session). False: apply_rope before it (A/B measurements).
ROTATES = True
# Pipeline stages of a launch (None: Triton's default, 3). One stage, with RoPE inside: 0.71 against 0.97 ms alone
# on 130k tokens (nineteenth session); after apply_rope: whole passes 84.4 against 86.8 ms (twenty-third)
STAGES = 1
# Program ids over the heads of a query block fastest (the block's keys and cos/sin rows are read by its heads
# together): alone on 130k tokens 0.729 / 0.678 against 0.774 / 0.716 ms in two processes on an H100, whole
# ModernBERT-base passes 84.2 against 86.1 ms (within that run's noise); outputs equal (twenty-fourth session).
# False: one head's query blocks fastest (A/B measurements).
HEADS_FIRST = True


def applies(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> bool:
    """q, k, v (N, H, D): a packed batch's queries, keys and values."""
    return (ENABLED and triton is not None and (q.is_cuda or matvec.INTERPRETED) and not dropout_p
            and q.dtype in DTYPES and q.shape[-1] in HEAD_DIMS and not matvec.wants_grad(q, k, v))


if triton is not None:

    @triton.jit
    def _rotated(ptr, offs, ok, stride, head_offset, cos_ptr, sin_ptr, ROPE: tl.constexpr, UPCAST: tl.constexpr,
                 HALF: tl.constexpr):
        """Rows `offs` of one head as two halves (R, HALF) each, the head's features [0, HALF) and [HALF, 2·HALF);
        ROPE: rotated by their rows' angles (cos/sin (N, 2·HALF)) in float32 and rounded back, as apply_rope."""
        offs_h = tl.arange(0, HALF)
        at = ptr + offs[:, None] * stride + head_offset + offs_h[None, :]
        x1 = tl.load(at, mask=ok[:, None], other=0.0)
        x2 = tl.load(at + HALF, mask=ok[:, None], other=0.0)
        if ROPE:
            angle = offs[:, None] * (2 * HALF) + offs_h[None, :]  # (R, HALF) in the (N, 2·HALF) tables
            x1, x2 = rotate_halves(x1, x2, cos_ptr, sin_ptr, angle, ok[:, None], False, HALF)
        if UPCAST:
            x1, x2 = x1.to(tl.float32), x2.to(tl.float32)
        return x1, x2

    @triton.jit
    def _window_attention_kernel(q_ptr, k_ptr, v_ptr, row_ptr, cos_ptr, sin_ptr, o_ptr, N, scale_log2, sq_n, sq_h,
                                 sk_n, sk_h, sv_n, sv_h, so_n, so_h, WINDOW: tl.constexpr, D: tl.constexpr,
                                 ROPE: tl.constexpr, HEADS_FIRST: tl.constexpr, UPCAST: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """D (a power of two ≥ 32) split in halves: q · kᵀ = q₁ · k₁ᵀ + q₂ · k₂ᵀ, so RoPE can rotate the
        halves in registers. HEADS_FIRST: program ids run over the heads of a query block fastest."""
        HALF: tl.constexpr = D // 2
        if HEADS_FIRST:
            h, first = tl.program_id(0), tl.program_id(1) * BLOCK_M
        else:
            first, h = tl.program_id(0) * BLOCK_M, tl.program_id(1)
        offs_m = first + tl.arange(0, BLOCK_M)  # (BLOCK_M,) packed positions of the queries
        offs_d = tl.arange(0, D)
        m_ok = offs_m < N
        # (BLOCK_M, HALF) each
        q1, q2 = _rotated(q_ptr, offs_m, m_ok, sq_n, h * sq_h, cos_ptr, sin_ptr, ROPE, UPCAST, HALF)
        row_q = tl.load(row_ptr + offs_m, mask=m_ok, other=-1)  # (BLOCK_M,) sequence of each query
        precision: tl.constexpr = "ieee" if UPCAST else "tf32"  # (only float32 operands use it)
        top = tl.full((BLOCK_M,), -1e30, tl.float32)  # running max, in log2 units
        total = tl.zeros((BLOCK_M,), tl.float32)
        acc = tl.zeros((BLOCK_M, D), tl.float32)
        for block in range((BLOCK_M + 2 * WINDOW + BLOCK_N - 1) // BLOCK_N):  # the span, a fixed count
            offs_n = first - WINDOW + block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) packed key positions
            n_ok = (offs_n >= 0) & (offs_n < N)
            row_k = tl.load(row_ptr + offs_n, mask=n_ok, other=-2)
            k1, k2 = _rotated(k_ptr, offs_n, n_ok, sk_n, h * sk_h, cos_ptr, sin_ptr, ROPE, UPCAST, HALF)
            v = tl.load(v_ptr + offs_n[:, None] * sv_n + h * sv_h + offs_d[None, :], mask=n_ok[:, None], other=0.0)
            if UPCAST:
                v = v.to(tl.float32)  # (BLOCK_N, D)
            distance = offs_m[:, None] - offs_n[None, :]  # (BLOCK_M, BLOCK_N)
            keep = (row_q[:, None] == row_k[None, :]) & (distance <= WINDOW) & (distance >= -WINDOW)
            scores = tl.dot(q1, tl.trans(k1), input_precision=precision)  # (BLOCK_M, BLOCK_N) float32
            scores = tl.dot(q2, tl.trans(k2), scores, input_precision=precision) * scale_log2
            top, total, acc = online_softmax_step(scores, keep, v, top, total, acc, precision)
        out = acc / tl.where(total > 0, total, 1.0)[:, None]
        tl.store(o_ptr + offs_m[:, None] * so_n + h * so_h + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=m_ok[:, None])


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, window: int, scale: float,
           cos: torch.Tensor | None = None, sin: torch.Tensor | None = None, block_m: int = BLOCK_M,
           block_n: int | None = None, num_warps: int | None = None, num_stages: int | None = None,
           heads_first: bool | None = None) -> torch.Tensor:
    """The kernel on q, k, v (N, H, D) (each with unit feature stride), q and k rotated by `cos`/`sin` (N, D) first
    when given; block_n, num_warps, num_stages, heads_first: the launch shape (None: the defaults measured best)."""
    N, H, D = q.shape
    out = torch.empty(N, H, D, dtype=q.dtype, device=q.device)
    upcast = q.dtype == torch.float32 or matvec.INTERPRETED
    rope = cos is not None
    cos, sin = (cos.contiguous(), sin.contiguous()) if rope else (rows, rows)  # (unused pointers without RoPE)
    stages = num_stages or STAGES
    extra = {} if stages is None else {"num_stages": stages}
    blocks = triton.cdiv(N, block_m)
    heads_first = (HEADS_FIRST if heads_first is None else heads_first) and blocks < 65536  # (the grid's y limit)
    _window_attention_kernel[(H, blocks) if heads_first else (blocks, H)](
        q, k, v, rows, cos, sin, out, N, scale * LOG2_E, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        v.stride(0), v.stride(1), out.stride(0), out.stride(1), WINDOW=window, D=D, ROPE=rope,
        HEADS_FIRST=heads_first, UPCAST=upcast, BLOCK_M=block_m,
        BLOCK_N=block_n or (BLOCK_N if D <= 128 and not upcast else 32),
        num_warps=num_warps or (4 if block_m <= 64 else 8), **extra)
    return out


@torch.library.custom_op("hfkit::window_attention", mutates_args=())
def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor, window: int,
                     scale: float, block_m: int = BLOCK_M, cos: torch.Tensor | None = None,
                     sin: torch.Tensor | None = None) -> torch.Tensor:
    """q, k, v (N, H, D) packed; rows (N,) int32, the sequence of each token (nondecreasing) → (N, H, D); with
    `cos`/`sin` (N, D), q and k rotated by them first (apply_rope, float32). Only where `applies`."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    return launch(q, k, v, rows, window, scale, cos, sin, block_m)


@window_attention.register_fake
def _(q, k, v, rows, window, scale, block_m=BLOCK_M, cos=None, sin=None):
    return torch.empty_like(q, memory_format=torch.contiguous_format)
