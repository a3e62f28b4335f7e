"""The online-softmax step that the attention kernels (nn.decode_attention, nn.window_attention) share.

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
