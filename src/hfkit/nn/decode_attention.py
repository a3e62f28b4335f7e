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
from .attention_steps import LOG2_E
from .matvec import triton

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

    from .attention_steps import online_softmax_step, rotate_halves

# On: measured on an H100 (benchmarks/RESULTS.md, eleventh session), the compiled Llama-3.2-1B step 1.328 vs 1.364 ms
# with SDPA at a 384-key cache; alone, 24–40 vs 25–124 µs a call from 1024 to 8192 keys. False: SDPA everywhere.
ENABLED = True
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_CACHE = 8192  # longer caches keep SDPA until the kernel has been measured on them
# decode_step: the step's RoPE and cache write inside the kernel (two of inductor's kernels a layer fewer). On:
# measured on an H100 (benchmarks/RESULTS.md, nineteenth session), the compiled Llama-3.2-1B step 822 against 787
# and 805 tok/s without it (817 vs 790 the session before); keys rounded as apply_rope(upcast=False), bit for bit
STEP_ON = True
# MERGE_UNROLLED: the STEP kernel's merge with its split loop unrolled (up to MERGE_UNROLL_MAX splits), so every
# split's loads are issued before the sums need them, where the loop reads them split after split (each a round
# trip to L2). In the step's timeline on an H100 the attention kernel took 9.9 µs a layer (0.8 MB read) and the
# merge's two loops are its longest chain of dependent loads (RESULTS.md, twenty-fifth session). The same sums in
# the same order: outputs bit for bit. Off until timed on a GPU (decode_gpu.py candidate).
MERGE_UNROLLED = False
MERGE_UNROLL_MAX = 16
# EARLY_LOADS: the STEP kernel loads its split's first block of keys, values and mask, and the slot, before it waits
# for q | k | v (PDL), instead of after: one round trip to memory less between q | k | v's end and the scores. Safe:
# a dependent kernel's programs start only once the kernel before has passed its own wait, so every kernel before
# that one (the previous step's cache writes, the step's mask and slot counters) is done. The same blocks in the same
# order: outputs bit for bit. Off until timed on a GPU (decode_gpu.py candidate).
EARLY_LOADS = False
# Programs a call aims at (default_splits): Llama-3.2-1B's 8 key/value heads and a 384-key cache run 6 splits of one
# 64-key block each, merged by the last to finish; fewer programs mean longer splits (a loop of dependent block
# loads each) and a shorter merge. decode_gpu.py has candidates at 24 (3 splits) and 8 (one, no merge to wait for).
SPLIT_PROGRAMS = 128


def applies(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> bool:
    """q (B, nh, 1, D), k (B, nkv, S ≤ MAX_CACHE, D), mask None or bool (B | 1, 1, 1, S); on CUDA, being compiled."""
    return (ENABLED and triton is not None and (torch.compiler.is_compiling() if q.is_cuda else matvec.INTERPRETED)
            and q.shape[2] == 1 and not dropout_p and not matvec.wants_grad(q, k)
            and q.shape[1] % k.shape[1] == 0 and q.dtype == k.dtype and q.dtype in DTYPES and k.shape[2] <= MAX_CACHE
            and (mask is None or (mask.dtype == torch.bool and mask.shape[1] == mask.shape[2] == 1)))


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, acc_ptr, top_ptr, total_ptr, kn_ptr, vn_ptr, cos_ptr,
                                 sin_ptr, slot_ptr, out_ptr, count_ptr, S, NKV, chunk, scale_log2, sq_b, sq_h, sk_b,
                                 sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, skn_b, skn_h, svn_b, svn_h,
                                 G: tl.constexpr, D: tl.constexpr, HAS_MASK: tl.constexpr, STEP: tl.constexpr,
                                 UPCAST: tl.constexpr, PDL: tl.constexpr, BLOCK_G: tl.constexpr,
                                 BLOCK_HALF: tl.constexpr, BLOCK_S: tl.constexpr,
                                 UNROLL: tl.constexpr, EARLY: tl.constexpr):
        """q · kᵀ as q₁ · k₁ᵀ + q₂ · k₂ᵀ over the halves of D, so that STEP can rotate them in registers: q and
        the step's key kn (unrotated) are rotated by cos/sin (B, D), and the key and value vn are written into the
        cache at `slot` by the program whose split holds it, which also uses them in place of what the slot held.
        STEP also merges the splits: the last program of a (sequence, key/value head) to finish, counted in
        count_ptr, writes the output (B, nh, D) and sets its count back to 0 (UNROLL: `_merge_splits`). PDL:
        launched as a programmatic dependent launch (nn.matvec); EARLY: the first block loaded before its wait."""
        HALF: tl.constexpr = D // 2
        pid, split, splits = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
        b, h = pid // NKV, pid % NKV
        offs_g = tl.arange(0, BLOCK_G)  # (BLOCK_G,) query heads of the group (padded to 16 for tl.dot)
        offs_h = tl.arange(0, BLOCK_HALF)  # (BLOCK_HALF,) features of a half
        offs_d = tl.arange(0, 2 * BLOCK_HALF)  # (2·BLOCK_HALF,) features of v
        g_ok, h_ok, d_ok = offs_g < G, offs_h < HALF, offs_d < D
        start = split * chunk  # this split's keys: [start, end)
        end = tl.minimum(start + chunk, S)
        slot = -1
        if EARLY:  # the split's first block and the slot: no kernel still running writes them (EARLY_LOADS)
            if STEP:
                slot = tl.load(slot_ptr)
            first_block = _kv_block(k_ptr, v_ptr, mask_ptr, b, h, start, end, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
                                    sm_b, offs_h, offs_d, h_ok, d_ok, HALF, HAS_MASK, BLOCK_S)
        if PDL:
            tl.extra.cuda.gdc_wait()  # q, k and v are the kernel before's
            tl.extra.cuda.gdc_launch_dependents()  # the next kernel's programs may start and load their weights
        q_at = q_ptr + b * sq_b + (h * G + offs_g)[:, None] * sq_h + offs_h[None, :]  # (BLOCK_G, BLOCK_HALF)
        q1 = tl.load(q_at, mask=g_ok[:, None] & h_ok[None, :], other=0.0)
        q2 = tl.load(q_at + HALF, mask=g_ok[:, None] & h_ok[None, :], other=0.0)
        kn1, kn2, vn = None, None, None  # the step's key and value (STEP)
        if STEP:
            cos_b, sin_b = cos_ptr + b * D, sin_ptr + b * D  # this sequence's angles
            q1, q2 = rotate_halves(q1, q2, cos_b, sin_b, offs_h, h_ok, True, HALF)
            kn_at = kn_ptr + b * skn_b + h * skn_h + offs_h  # (BLOCK_HALF,)
            kn1, kn2 = rotate_halves(tl.load(kn_at, mask=h_ok, other=0.0), tl.load(kn_at + HALF, mask=h_ok, other=0.0),
                                     cos_b, sin_b, offs_h, h_ok, True, HALF)
            vn = tl.load(vn_ptr + b * svn_b + h * svn_h + offs_d, mask=d_ok, other=0.0)  # (2·BLOCK_HALF,)
            if not EARLY:
                slot = tl.load(slot_ptr)
            if (slot >= start) & (slot < end):  # the split that holds the slot writes it
                k_slot = k_ptr + b * sk_b + h * sk_h + slot * sk_s + offs_h
                tl.store(k_slot, kn1, mask=h_ok)
                tl.store(k_slot + HALF, kn2, mask=h_ok)
                tl.store(v_ptr + b * sv_b + h * sv_h + slot * sv_s + offs_d, vn, mask=d_ok)
        if UPCAST:
            q1, q2 = q1.to(tl.float32), q2.to(tl.float32)
        top = tl.full((BLOCK_G,), -1e30, tl.float32)  # running max in log2 units (finite: a masked block stays 0)
        total = tl.zeros((BLOCK_G,), tl.float32)  # running softmax denominator
        acc = tl.zeros((BLOCK_G, 2 * BLOCK_HALF), tl.float32)
        if EARLY:  # (an empty split's block keeps nothing: adding it changes no bit)
            top, total, acc = _attend_block(q1, q2, first_block, start, slot, kn1, kn2, vn, top, total, acc,
                                            scale_log2, STEP, UPCAST, BLOCK_S)
            start += BLOCK_S
        while start < end:  # (a run-time bound; Triton's interpreter takes it as `while`, not as `range`)
            block = _kv_block(k_ptr, v_ptr, mask_ptr, b, h, start, end, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b,
                              offs_h, offs_d, h_ok, d_ok, HALF, HAS_MASK, BLOCK_S)
            top, total, acc = _attend_block(q1, q2, block, start, slot, kn1, kn2, vn, top, total, acc, scale_log2,
                                            STEP, UPCAST, BLOCK_S)
            start += BLOCK_S
        row = (b * NKV * G + h * G + offs_g) * splits + split  # (BLOCK_G,) into (B, nh, splits)
        tl.store(acc_ptr + row[:, None] * D + offs_d[None, :], acc, mask=g_ok[:, None] & d_ok[None, :])
        tl.store(top_ptr + row, top, mask=g_ok)
        tl.store(total_ptr + row, total, mask=g_ok)
        if STEP:
            tl.debug_barrier()  # every thread's part of this split is stored before the count says so
            if tl.atomic_add(count_ptr + pid, 1, sem="acq_rel") == splits - 1:  # the other splits are stored
                heads = b * NKV * G + h * G + offs_g  # (BLOCK_G,) rows of (B·nh)
                _merge_splits(acc_ptr, top_ptr, total_ptr, out_ptr, heads, splits, g_ok, d_ok, D, BLOCK_G,
                              2 * BLOCK_HALF, UNROLL)
                tl.atomic_xchg(count_ptr + pid, 0)  # ready for the next step (a CUDA graph replays the launch)

    @triton.jit
    def _kv_block(k_ptr, v_ptr, mask_ptr, b, h, start, end, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sm_b, offs_h, offs_d,
                  h_ok, d_ok, HALF: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_S: tl.constexpr):
        """The cache's keys [start, start + BLOCK_S) before `end` → keep (BLOCK_S,), their halves k1, k2
        (BLOCK_S, BLOCK_HALF) and values v (BLOCK_S, 2·BLOCK_HALF); nothing kept past `end` or where masked."""
        offs_s = start + tl.arange(0, BLOCK_S)  # (BLOCK_S,)
        keep = offs_s < end
        if HAS_MASK:
            keep &= tl.load(mask_ptr + b * sm_b + offs_s, mask=keep, other=0) != 0
        k_at = k_ptr + b * sk_b + h * sk_h + offs_s[:, None] * sk_s + offs_h[None, :]  # (BLOCK_S, BLOCK_HALF)
        k1 = tl.load(k_at, mask=keep[:, None] & h_ok[None, :], other=0.0)
        k2 = tl.load(k_at + HALF, mask=keep[:, None] & h_ok[None, :], other=0.0)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + offs_s[:, None] * sv_s + offs_d[None, :],
                    mask=keep[:, None] & d_ok[None, :], other=0.0)  # (BLOCK_S, 2·BLOCK_HALF)
        return keep, k1, k2, v

    @triton.jit
    def _attend_block(q1, q2, block, start, slot, kn1, kn2, vn, top, total, acc, scale_log2, STEP: tl.constexpr,
                      UPCAST: tl.constexpr, BLOCK_S: tl.constexpr):
        """One block of keys (_kv_block's, from `start`) into the running softmax of q's heads; STEP: the slot's
        key and value as just written (its old contents were read)."""
        keep, k1, k2, v = block
        if STEP:
            fresh = (start + tl.arange(0, BLOCK_S) == slot)[:, None]
            k1, k2 = tl.where(fresh, kn1[None, :], k1), tl.where(fresh, kn2[None, :], k2)
            v = tl.where(fresh, vn[None, :], v)
        if UPCAST:
            k1, k2, v = k1.to(tl.float32), k2.to(tl.float32), v.to(tl.float32)
        precision: tl.constexpr = "ieee" if UPCAST else "tf32"  # (only float32 operands use it)
        scores = tl.dot(q1, tl.trans(k1), input_precision=precision)  # (BLOCK_G, BLOCK_S) float32
        scores = tl.dot(q2, tl.trans(k2), scores, input_precision=precision) * scale_log2
        return online_softmax_step(scores, keep[None, :], v, top, total, acc, precision)

    @triton.jit
    def _merge_splits(acc_ptr, top_ptr, total_ptr, out_ptr, heads, splits, g_ok, d_ok, D: tl.constexpr,
                      BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, UNROLL: tl.constexpr):
        """out[heads] (BLOCK_G, D) from the splits' unnormalised sums, each weighted by exp2(its max - the overall
        max), as `merge` computes it. The loads bypass L1: other multiprocessors stored them. UNROLL > 0 (≥ splits):
        the loops unrolled over UNROLL splits, those past `splits` masked (their weight 0, adding exact zeros)."""
        offs_d = tl.arange(0, BLOCK_D)
        best = tl.full((BLOCK_G,), -1e30, tl.float32)
        denominator = tl.zeros((BLOCK_G,), tl.float32)
        numerator = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
        if UNROLL > 0:
            for split in tl.static_range(UNROLL):
                best = tl.maximum(best, _split_part(top_ptr, heads * splits + split, g_ok & (split < splits), -1e30))
            for split in tl.static_range(UNROLL):
                ok = g_ok & (split < splits)
                denominator, numerator = _add_split(acc_ptr, top_ptr, total_ptr, heads * splits + split, ok, d_ok,
                                                    best, denominator, numerator, offs_d, D)
        else:
            split = 0
            while split < splits:
                best = tl.maximum(best, _split_part(top_ptr, heads * splits + split, g_ok, -1e30))
                split += 1
            split = 0
            while split < splits:
                denominator, numerator = _add_split(acc_ptr, top_ptr, total_ptr, heads * splits + split, g_ok, d_ok,
                                                    best, denominator, numerator, offs_d, D)
                split += 1
        out = numerator / tl.where(denominator > 0, denominator, 1.0)[:, None]  # 0 for a query that sees no key
        tl.store(out_ptr + heads[:, None] * D + offs_d[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=g_ok[:, None] & d_ok[None, :])

    @triton.jit
    def _split_part(ptr, at, ok, other):
        """(BLOCK_G,) of a split's maxima or totals, from L2."""
        return tl.load(ptr + at, mask=ok, other=other, cache_modifier=".cg")

    @triton.jit
    def _add_split(acc_ptr, top_ptr, total_ptr, at, ok, d_ok, best, denominator, numerator, offs_d,
                   D: tl.constexpr):
        """One split (rows `at` (BLOCK_G,)) added to the merge's sums, weighted by exp2(its max - best)."""
        weight = tl.exp2(_split_part(top_ptr, at, ok, -1e30) - best)
        denominator += _split_part(total_ptr, at, ok, 0.0) * weight
        part = tl.load(acc_ptr + at[:, None] * D + offs_d[None, :], mask=ok[:, None] & d_ok[None, :], other=0.0,
                       cache_modifier=".cg")  # (BLOCK_G, BLOCK_D)
        return denominator, numerator + part * weight[:, None]


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                     scale: float | None = None, splits: int | None = None) -> torch.Tensor:
    """q (B, nh, 1, D), k and v (B, nkv, S, D), mask None or bool (B | 1, 1, 1, S), True = attend → (B, nh, 1, D).
    splits: how many parts of the cache run side by side (None: enough for ~128 programs). Only where `applies`."""
    splits = default_splits(q, k) if splits is None else splits
    pdl = matvec.launches_dependently(q)
    return merge(q, *decode_attention_splits(q, k, v, mask, scale_for(q, scale), splits, pdl))


def decode_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor, counts: torch.Tensor,
                mask: torch.Tensor | None, scale: float | None = None, splits: int | None = None) -> torch.Tensor:
    """A decode step's attention with its RoPE, cache write and merge in the kernel: q (B, nh, 1, D) and the step's
    k, v (B, nkv, 1, D), q and k not yet rotated; cos, sin (B, 1, D) the step's angles; keys, values (B, nkv, S, D)
    the cache, the step's rotated key and value written at `slot` (1,) in place; counts (≥ B·nkv,) int32 zeros,
    left zero (the splits finished so far); mask as decode_attention's (the slot included) → (B, nh, 1, D). Only
    where `takes_step`."""
    splits = default_splits(q, keys) if splits is None else splits
    return decode_step_op(q, k, v, cos, sin, keys, values, slot, counts, mask, scale_for(q, scale), splits,
                          matvec.launches_dependently(q), merge_unroll(splits), EARLY_LOADS)  # (traced: guards)


def takes_step(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, keys: torch.Tensor,
               mask: torch.Tensor | None) -> bool:
    """Whether decode_step runs: where `applies` to the cache (STEP_ON), for a full rotation (cos over all of D)
    and a step key and cache of q's dtype."""
    return (STEP_ON and applies(q, keys, mask, 0.0) and k.shape[2] == 1 and cos.shape[-1] == q.shape[-1]
            and k.dtype == keys.dtype == q.dtype and not matvec.wants_grad(k))


def default_splits(q: torch.Tensor, k: torch.Tensor) -> int:
    """Enough parts of the cache for ~SPLIT_PROGRAMS programs, at least a block each."""
    B, nkv, S, D = k.shape
    return max(1, min(triton.cdiv(S, _block_s(q.dtype, D)), SPLIT_PROGRAMS // (B * nkv)))


def scale_for(q: torch.Tensor, scale: float | None) -> float:
    return q.shape[-1] ** -0.5 if scale is None else scale


def merge(q: torch.Tensor, acc: torch.Tensor, top: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """The splits' sums (acc (B, nh, splits, D), top and total (B, nh, splits)) → (B, nh, 1, D) in q's dtype."""
    weight = torch.exp2(top - top.amax(dim=-1, keepdim=True))  # (B, nh, splits): each split's share
    denominator = (total * weight).sum(dim=-1, keepdim=True)  # (B, nh, 1); 0 for a query that sees no key
    out = (acc * weight[..., None]).sum(dim=-2) / torch.where(denominator > 0, denominator, 1.0)  # (B, nh, D)
    return out.unsqueeze(2).to(q.dtype)


def merge_unroll(splits: int) -> int:
    """The merge's UNROLL for `splits`: a power of two ≥ splits under MERGE_UNROLLED (up to MERGE_UNROLL_MAX),
    else 0 (the loops)."""
    unroll = triton.next_power_of_2(splits)
    return unroll if MERGE_UNROLLED and unroll <= MERGE_UNROLL_MAX else 0


def _block_s(dtype: torch.dtype, D: int) -> int:
    """Keys per block: as many as fit without register spills."""
    return max(16, (2048 if dtype == torch.float32 else 4096) // max(16, triton.next_power_of_2(D)))


def _launch(q, k, v, mask, scale, splits, step=None, pdl=False, unroll=0, early=False):
    """The kernel → acc, top, total and the output; step: (k_new, v_new, cos, sin, slot, counts) for STEP, which
    writes the output (else empty), merging with `unroll` (merge_unroll); pdl: a programmatic dependent launch
    (matvec.dependent_launch); early: EARLY_LOADS."""
    B, nh, _, D = q.shape
    nkv, S = k.shape[1], k.shape[2]
    q = q if q.stride(-1) == 1 else q.contiguous()
    if mask is not None:
        mask = mask.reshape(mask.shape[0], S)
        if mask.stride(-1) != 1:
            mask = mask.contiguous()
    mask_arg = mask if mask is not None else q
    sm_b = mask.stride(0) if mask is not None and mask.shape[0] > 1 else 0
    if step is not None:
        kn, vn, cos, sin, slot, counts = step
        kn, vn = (t if t.stride(-1) == 1 else t.contiguous() for t in (kn, vn))
        cos, sin = (t.expand(B, 1, D).reshape(B, D).contiguous() for t in (cos, sin))  # (B, D)
        out = torch.empty(B, nh, 1, D, dtype=q.dtype, device=q.device)
    else:
        kn = vn = cos = sin = slot = counts = out = q  # unused pointers
    G, block_s = nh // nkv, _block_s(q.dtype, D)
    chunk = triton.cdiv(triton.cdiv(S, block_s), splits) * block_s  # keys per split, whole blocks
    acc = torch.empty(B, nh, splits, D, dtype=torch.float32, device=q.device)
    top, total = (torch.empty(B, nh, splits, dtype=torch.float32, device=q.device) for _ in range(2))
    _decode_attention_kernel[(B * nkv, splits)](
        q, k, v, mask_arg, acc, top, total, kn, vn, cos, sin, slot, out, counts, S, nkv, chunk, scale * LOG2_E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), sm_b,
        kn.stride(0), kn.stride(1), vn.stride(0), vn.stride(1), G=G, D=D, HAS_MASK=mask is not None,
        STEP=step is not None, UPCAST=q.dtype == torch.float32 or matvec.INTERPRETED,
        BLOCK_G=max(16, triton.next_power_of_2(G)),
        BLOCK_HALF=max(16, triton.next_power_of_2(D // 2)), BLOCK_S=block_s, UNROLL=unroll, EARLY=early,
        num_warps=4,
        **(STEP_LAUNCH if step is not None else {}), **matvec.dependent_launch(pdl, q.device))
    return acc, top, total, out


# STEP rounds RoPE's two products to q's dtype before their sum, as apply_rope(upcast=False). With FMA fusion on, the
# GPU's compiler narrows each product to a bf16 multiply and fuses the first into the sum (fma.rn.bf16), rounding
# once where torch rounds twice: on an H100 226 of 1024 elements of a written key differed. Without it, the PTX has
# separate mul.rn.bf16 / add.rn.bf16 (benchmarks/explore/registers_sm90.py counts the fused ones).
STEP_LAUNCH = {"enable_fp_fusion": False}


@torch.library.custom_op("hfkit::decode_attention_splits", mutates_args=())
def decode_attention_splits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            scale: float, splits: int, pdl: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel alone → per split: acc (B, nh, splits, D) unnormalised, top and total (B, nh, splits) float32.
    A custom op, so that a compiled step calls the kernel as it is and fuses the merge after it."""
    k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (k, v))
    return _launch(q, k, v, mask, scale, splits, None, pdl)[:3]


@decode_attention_splits.register_fake
def _(q, k, v, mask, scale, splits, pdl):
    B, nh, _, D = q.shape
    return (q.new_empty(B, nh, splits, D, dtype=torch.float32),
            *(q.new_empty(B, nh, splits, dtype=torch.float32) for _ in range(2)))


@torch.library.custom_op("hfkit::decode_step", mutates_args=("keys", "values", "counts"))
def decode_step_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   keys: torch.Tensor, values: torch.Tensor, slot: torch.Tensor, counts: torch.Tensor,
                   mask: torch.Tensor | None, scale: float, splits: int, pdl: bool, unroll: int,
                   early: bool) -> torch.Tensor:
    """The STEP kernel: the step's rotated key and value written into `keys`, `values` (each with unit feature
    stride, as a cache's buffers are) at `slot`, the splits merged in the kernel → (B, nh, 1, D). unroll, early:
    merge_unroll's and EARLY_LOADS, passed from traced code so that a compiled step recompiles when they change."""
    return _launch(q, keys, values, mask, scale, splits, (k, v, cos, sin, slot, counts), pdl, unroll, early)[3]


@decode_step_op.register_fake
def _(q, k, v, cos, sin, keys, values, slot, counts, mask, scale, splits, pdl, unroll, early):
    return torch.empty_like(q, memory_format=torch.contiguous_format)
