"""The one attention entry point: every model calls `attention()`, which picks the kernel path."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1/0 keep-mask → (B, 1, 1, T) additive mask for SDPA; None when nothing is masked."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def pairwise_padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) keep-mask → (B, 1, T, T) additive mask of `keep_i · keep_j`: pad keys masked, and pad *queries*
    masked on every key (their rows attend uniformly over all positions, as DeBERTa computes); None if no pad.

    Half of finfo.min: CUDA's efficient/cuDNN kernels scale scores by log2(e), which takes a fully masked
    row at finfo.min to -inf (and that row to zeros instead of uniform). In float16 the scores are not
    absorbed by the mask, so pad rows (only they) are not uniform there."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.to(torch.bool)
    pair = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, T, T)
    return torch.zeros(pair.shape, dtype=dtype, device=pair.device).masked_fill(~pair, torch.finfo(dtype).min / 2)


def window_mask(attention_mask: torch.Tensor | None, length: int, window: int, device: torch.device) -> torch.Tensor | None:
    """Bidirectional sliding window: query i sees key j when |i - j| <= window (and j is a token).

    (B | 1, 1, T, T) boolean; None when nothing is masked (no pad, T < window, transformers' rule).
    Boolean on purpose: a pad query whose window holds only pads is a fully masked row, for which
    SDPA returns zeros, as transformers' boolean masks give."""
    if (attention_mask is None or bool(attention_mask.all())) and length < window:
        return None
    pos = torch.arange(length, device=device)
    keep = ((pos[:, None] - pos[None, :]).abs() <= window)[None, None]  # (1, 1, T, T)
    if attention_mask is not None:
        keep = keep & attention_mask[:, None, None, :].to(device=device, dtype=torch.bool)  # (B, 1, T, T)
    return keep


def attention(
    q: torch.Tensor,  # (B, H, T, D)
    k: torch.Tensor,  # (B, H, S, D)
    v: torch.Tensor,  # (B, H, S, D)
    mask: torch.Tensor | None = None,  # additive, broadcastable to (B, H, T, S): padding and/or position bias
    dropout_p: float = 0.0,
    scale: float | None = None,
    divisor: torch.Tensor | None = None,
) -> torch.Tensor:  # (B, H, T, D)
    """Padded scaled-dot-product attention with an optional additive mask (padding + relative-position bias terms).

    `scale` multiplies q·kᵀ (None: 1/sqrt(D)). A `divisor` s (0-d tensor) is for references that compute
    softmax(q·kᵀ / s + mask) unfused (DeBERTa has no fused path in transformers): on CPU it is computed
    so, op for op, bit-identical to them and as fast; elsewhere the fused kernel with scale 1/s."""
    if divisor is not None:
        if q.device.type == "cpu":
            return unfused_attention(q, k, v, mask, dropout_p, divisor)
        scale = 1.0 / divisor.item()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def unfused_attention(q, k, v, mask, dropout_p: float, divisor: torch.Tensor) -> torch.Tensor:  # (B, H, T, D)
    """bmm(q, kᵀ / s) [+ mask] → softmax → dropout → bmm(·, v) on (B·H, T, D) copies, the eager reference's layout."""
    B, H, T, D = q.shape
    q3, k3, v3 = (t.reshape(B * H, -1, D) for t in (q, k, v))  # (B·H, T|S, D) contiguous
    scores = torch.bmm(q3, k3.transpose(-1, -2) / divisor.to(q.dtype)).view(B, H, T, -1)  # (B, H, T, S)
    if mask is not None:
        scores = scores + mask
    probs = F.dropout(scores.softmax(-1), dropout_p) if dropout_p > 0 else scores.softmax(-1)
    return torch.bmm(probs.view(B * H, T, -1), v3).view(B, H, T, D)
