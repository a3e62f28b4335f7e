"""Rotary position embeddings (RoPE): cos/sin tables per base `theta`, applied to queries and keys.

A stack may use several bases (ModernBERT: a global theta on full-attention layers, a local one on
sliding-window layers); `rotary_tables` builds each base's table once per forward, before the layers (so a
compiled layer only reads them), and every layer takes its base's.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=32)
def inverse_frequencies(dim: int, theta: float) -> torch.Tensor:
    """(dim/2,) float32 `1 / theta^(2i/dim)`, computed on the CPU as transformers does (then moved)."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


def rope_tables(
    dim: int,
    theta: float,
    position_ids: torch.Tensor,  # (B, T) or (1, T)
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:  # cos, sin: (B, T, dim) each
    inv_freq = inverse_frequencies(dim, float(theta)).to(position_ids.device)
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, dim/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, dim): both halves rotate by the same angles
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (-x2, x1) over the last dimension's halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(
    q: torch.Tensor,  # (B, nh, T, D)
    k: torch.Tensor,  # (B, nh, T, D)
    cos: torch.Tensor,  # (B, T, D)
    sin: torch.Tensor,  # (B, T, D)
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by their positions' angles, in float32, cast back to the input dtype.

    `upcast=False`: in the input dtype with cos/sin already cast to it (transformers' decoders: Llama, Qwen, …),
    which differs from the float32 rotation in bfloat16/float16."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D): broadcast over heads
    if not upcast:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    rotate = lambda t: (t.float() * cos + rotate_half(t.float()) * sin).to(t.dtype)
    return rotate(q), rotate(k)


def rotary_tables(
    dim: int,
    thetas: set[float],
    position_ids: torch.Tensor,  # (B, T), (1, T) or (N,) packed
    dtype: torch.dtype,
) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:  # theta → cos, sin (B|1, T, dim) or (N, dim)
    """The cos/sin tables of one forward pass, one per base `theta` the layers use."""
    return {theta: rope_tables(dim, theta, position_ids, dtype) for theta in sorted(thetas)}
