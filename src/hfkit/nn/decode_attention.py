"""Attention for a decode step: one query position per sequence against a KV cache, in one Triton kernel.

    out[b, h] = softmax(q[b, h] · k[b, h // G]ᵀ · scale, keys where mask[b, s]) · v[b, h // G]     G = nh / nkv

Each program takes one key/value head of one sequence, the G query heads that share it and one split of the cache,
and walks its split in blocks with a running (online) softmax: keys and values are read once, in place, and nothing
of size (heads × cache) is written. With one sequence and few key/value heads there are few programs, so the cache
is split (flash-decoding): each split leaves its unnormalised sum, running max and denominator, and a few torch ops
merge the splits (fused into one kernel inside a compiled step). Scores and the softmax are float32; the
probabilities are rounded to the values' dtype for the product with them, as flash attention does (float32 inputs,
and under Triton's interpreter, which multiplies no bf16: float32 products). A query that sees no key gets zeros.

It runs where Triton runs it (CUDA, or TRITON_INTERPRET=1 as nn.matvec) for a step without gradients or dropout and
a mask shared by the heads (ENABLED, on by default); `applies` says so and `grouped_attention` keeps SDPA for the
rest. On CUDA only inside compiled code: an eager step is bound by the host, where the op and the merge's six small
kernels cost more than one SDPA call (eager Llama-3.2-1B decoding on an H100: 15.2 against 13.2 ms a token with the
dynamic cache, 23.8 against 14.8 with the static one; RESULTS.md, twelfth session).
"""

from __future__ import annotations

import torch

from . import matvec
from .matvec import triton
from .online_softmax import LOG2_E

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

    from .online_softmax import online_softmax_step

# On: measured on an H100 (benchmarks/RESULTS.md, eleventh session), the compiled Llama-3.2-1B step 1.328 vs 1.364 ms
# with SDPA at a 384-key cache; alone, 24–40 vs 25–124 µs a call from 1024 to 8192 keys. False: SDPA everywhere.
ENABLED = True
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_CACHE = 8192  # longer caches keep SDPA until the kernel has been measured on them


def applies(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> bool:
    """q (B, nh, 1, D), k (B, nkv, S ≤ MAX_CACHE, D), mask None or bool (B | 1, 1, 1, S); on CUDA, being compiled."""
    return (ENABLED and triton is not None and (torch.compiler.is_compiling() if q.is_cuda else matvec.INTERPRETED)
            and q.shape[2] == 1 and not dropout_p and not matvec.wants_grad(q, k)
            and q.shape[1] % k.shape[1] == 0 and q.dtype == k.dtype and q.dtype in DTYPES and k.shape[2] <= MAX_CACHE
            and (mask is None or (mask.dtype == torch.bool and mask.shape[1] == mask.shape[2] == 1)))


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, top_ptr, total_ptr, S, NKV, chunk, scale_log2,
                                 sq_b, sq_h, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, G: tl.constexpr, D: tl.constexpr,
                                 HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, BLOCK_G: tl.constexpr,
                                 BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
        pid, split, splits = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
        b, h = pid // NKV, pid % NKV
        offs_g = tl.arange(0, BLOCK_G)  # (BLOCK_G,) query heads of the group (padded to 16 for tl.dot)
        offs_d = tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        g_ok, d_ok = offs_g < G, offs_d < D
        q = tl.load(q_ptr + b * sq_b + (h * G + offs_g)[:, None] * sq_h + offs_d[None, :],
                    mask=g_ok[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_G, BLOCK_D)
        if UPCAST:
            q = q.to(tl.float32)
        top = tl.full((BLOCK_G,), -1e30, tl.float32)  # running max in log2 units (finite: a masked block stays 0)
        total = tl.zeros((BLOCK_G,), tl.float32)  # running softmax denominator
        acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
        precision: tl.constexpr = "ieee" if UPCAST else "tf32"  # (only float32 operands use it)
        start = split * chunk  # this split's keys: [start, end)
        end = tl.minimum(start + chunk, S)
        while start < end:  # (a run-time bound; Triton's interpreter takes it as `while`, not as `range`)
            offs_s = start + tl.arange(0, BLOCK_S)  # (BLOCK_S,)
            keep = offs_s < end
            if HAS_MASK:
                keep &= tl.load(mask_ptr + b * sm_b + offs_s, mask=keep, other=0) != 0
            both = keep[:, None] & d_ok[None, :]
            k = tl.load(k_ptr + b * sk_b + h * sk_h + offs_s[:, None] * sk_s + offs_d[None, :], mask=both, other=0.0)
            v = tl.load(v_ptr + b * sv_b + h * sv_h + offs_s[:, None] * sv_s + offs_d[None, :], mask=both, other=0.0)
            if UPCAST:
                k, v = k.to(tl.float32), v.to(tl.float32)  # (BLOCK_S, BLOCK_D)
            scores = tl.dot(q, tl.trans(k), input_precision=precision) * scale_log2  # (BLOCK_G, BLOCK_S) float32
            top, total, acc = online_softmax_step(scores, keep[None, :], v, top, total, acc, precision)
            start += BLOCK_S
        row = (b * NKV * G + h * G + offs_g) * splits + split  # (BLOCK_G,) into (B, nh, splits)
        tl.store(acc_ptr + row[:, None] * D + offs_d[None, :], acc, mask=g_ok[:, None] & d_ok[None, :])
        tl.store(top_ptr + row, top, mask=g_ok)
        tl.store(total_ptr + row, total, mask=g_ok)


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     scale: float | None = None, splits: int | None = None) -> torch.Tensor:
    """q (B, nh, 1, D), k and v (B, nkv, S, D), mask None or bool (B | 1, 1, 1, S), True = attend → (B, nh, 1, D).
    splits: how many parts of the cache run side by side (None: enough for ~128 programs). Only where `applies`."""
    B, nkv, S, D = k.shape
    if splits is None:
        splits = max(1, min(triton.cdiv(S, _block_s(q.dtype, D)), 128 // (B * nkv)))
    acc, top, total = decode_attention_splits(q, k, v, mask, D ** -0.5 if scale is None else scale, splits)
    weight = torch.exp2(top - top.amax(dim=-1, keepdim=True))  # (B, nh, splits): each split's share
    denominator = (total * weight).sum(dim=-1, keepdim=True)  # (B, nh, 1); 0 for a query that sees no key
    out = (acc * weight[..., None]).sum(dim=-2) / torch.where(denominator > 0, denominator, 1.0)  # (B, nh, D)
    return out.unsqueeze(2).to(q.dtype)


def _block_s(dtype: torch.dtype, D: int) -> int:
    """Keys per block: as many as fit without register spills."""
    return max(16, (2048 if dtype == torch.float32 else 4096) // max(16, triton.next_power_of_2(D)))


@torch.library.custom_op("hfkit::decode_attention_splits", mutates_args=())
def decode_attention_splits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            scale: float, splits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel alone → per split: acc (B, nh, splits, D) unnormalised, top and total (B, nh, splits) float32.
    A custom op, so that a compiled step calls the kernel as it is and fuses the merge after it."""
    B, nh, _, D = q.shape
    nkv, S = k.shape[1], k.shape[2]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if mask is not None:
        mask = mask.reshape(mask.shape[0], S)
        if mask.stride(-1) != 1:
            mask = mask.contiguous()
    mask_arg = mask if mask is not None else q
    sm_b = mask.stride(0) if mask is not None and mask.shape[0] > 1 else 0
    G, block_s = nh // nkv, _block_s(q.dtype, D)
    chunk = triton.cdiv(triton.cdiv(S, block_s), splits) * block_s  # keys per split, whole blocks
    acc = torch.empty(B, nh, splits, D, dtype=torch.float32, device=q.device)
    top, total = (torch.empty(B, nh, splits, dtype=torch.float32, device=q.device) for _ in range(2))
    _decode_attention_kernel[(B * nkv, splits)](
        q, k, v, mask_arg, acc, top, total, S, nkv, chunk, scale * LOG2_E, q.stride(0), q.stride(1), k.stride(0),
        k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), sm_b, G=G, D=D, HAS_MASK=mask is not None,
        UPCAST=q.dtype == torch.float32 or matvec.INTERPRETED, BLOCK_G=max(16, triton.next_power_of_2(G)),
        BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_S=block_s, num_warps=4)
    return acc, top, total


@decode_attention_splits.register_fake
def _(q, k, v, mask, scale, splits):
    B, nh, _, D = q.shape
    return (q.new_empty(B, nh, splits, D, dtype=torch.float32),
            *(q.new_empty(B, nh, splits, dtype=torch.float32) for _ in range(2)))
