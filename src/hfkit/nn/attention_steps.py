"""The Triton steps that the attention kernels (nn.decode_attention, nn.window_attention) share: RoPE on a head's
two halves, and the online softmax.

Over key blocks j, a query row keeps a running max `top`, a running denominator `total` and an unnormalised output
`acc`; each block rescales them to its new max and adds its own terms, so the softmax needs one pass over the keys.
Scores come in log2 units (already multiplied by scale · log2 e), so the exponentials are exp2.
"""

from __future__ import annotations

from .matvec import triton

LOG2_E = 1.4426950408889634

if triton is not None:  # (the CPU wheels of torch come without Triton)
    import triton.language as tl

    @triton.jit
    def online_softmax_step(scores, keep, v, top, total, acc, precision: tl.constexpr):
        """scores (M, N) float32 in log2 units, keep (M, N) or broadcastable bool, v (N, D); top, total (M,) and
        acc (M, D) float32 → the updated top, total, acc. `top` starts finite (-1e30), so a row whose keys are all
        masked so far stays at total 0."""
        scores = tl.where(keep, scores, float("-inf"))
        new_top = tl.maximum(top, tl.max(scores, axis=1))
        p = tl.exp2(scores - new_top[:, None])  # (M, N)
        rescale = tl.exp2(top - new_top)  # (M,)
        total = total * rescale + tl.sum(p, axis=1)
        acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=precision)
        return new_top, total, acc

    @triton.jit
    def rotate_halves(x1, x2, cos_ptr, sin_ptr, at, ok, ROUND_PRODUCTS: tl.constexpr, HALF: tl.constexpr):
        """A head's halves x1, x2 (…, HALF) rotated by the angles at offsets `at` of the cos/sin tables (rows of
        2·HALF; `ok` masks the loads), back in x's dtype: x · cos + rotate_half(x) · sin, rotate_half(x) = (-x₂, x₁).
        ROUND_PRODUCTS: each product and the sum rounded to x's dtype, as the decoders' apply_rope(upcast=False),
        which holds only in a kernel launched with enable_fp_fusion=False (else the GPU's compiler fuses a product
        into the sum: decode_attention.STEP_LAUNCH); else float32 throughout, rounded once, as apply_rope."""
        c1 = tl.load(cos_ptr + at, mask=ok, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + at + HALF, mask=ok, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + at, mask=ok, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + at + HALF, mask=ok, other=0.0).to(tl.float32)
        dtype = x1.dtype  # (its own assignment: Triton's code generator rejects a dtype inside a tuple assignment)
        f1, f2 = x1.to(tl.float32), x2.to(tl.float32)
        if ROUND_PRODUCTS:
            r1 = (f1 * c1).to(dtype).to(tl.float32) + (-f2 * s1).to(dtype).to(tl.float32)
            r2 = (f2 * c2).to(dtype).to(tl.float32) + (f1 * s2).to(dtype).to(tl.float32)
        else:
            r1 = f1 * c1 - f2 * s1
            r2 = f2 * c2 + f1 * s2
        return r1.to(dtype), r2.to(dtype)
