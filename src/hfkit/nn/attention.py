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


def attention(
    q: torch.Tensor,  # (B, H, T, D)
    k: torch.Tensor,  # (B, H, S, D)
    v: torch.Tensor,  # (B, H, S, D)
    mask: torch.Tensor | None = None,  # additive, broadcastable to (B, H, T, S)
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:  # (B, H, T, D)
    """Padded scaled-dot-product attention with an optional additive mask."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
