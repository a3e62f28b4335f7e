"""RoPE inverse frequencies per `rope_type` (default, linear, dynamic, llama3, yarn, longrope), as transformers computes them.

`rope_parameters` is the v5 dict (`rope_type`, `rope_theta`, `factor`, …); `dim` the rotated width
(head_dim · partial_rotary_factor). Each function returns `(inv_freq (dim/2,) float32, attention_factor)`:
the cos/sin tables are multiplied by `attention_factor` (YaRN's mscale; 1 elsewhere).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

RopeFn = Callable[[dict[str, Any], int, int, int | None], tuple[torch.Tensor, float]]


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:  # (dim/2,)
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def default(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    return _base_inv_freq(params["rope_theta"], dim), 1.0


def linear(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    """Position interpolation: every frequency divided by `factor`."""
    return _base_inv_freq(params["rope_theta"], dim) / params["factor"], 1.0


def dynamic(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    """Dynamic NTK: past `max_position_embeddings`, the base grows with the sequence length."""
    seq_len = max(seq_len or max_positions, max_positions)
    factor = params["factor"]
    base = params["rope_theta"] * ((factor * seq_len / max_positions) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def llama3(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    """Llama 3.1: low frequencies divided by `factor`, high ones kept, a smooth ramp between."""
    inv_freq = _base_inv_freq(params["rope_theta"], dim)
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_len = params["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled), 1.0


def yarn(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    """YaRN: interpolate low frequencies, extrapolate high ones (ramp by rotation counts), scale attention."""
    base = params["rope_theta"]
    old_len = params["original_max_position_embeddings"]
    factor = params.get("factor") or max_positions / old_len
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # no singular ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation = 1 - ramp  # 1: keep the original frequency
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


def longrope(params: dict[str, Any], dim: int, max_positions: int, seq_len: int | None = None):
    """Phi-3's LongRoPE: per-frequency `short_factor`s up to original_max_position_embeddings, `long_factor`s past it."""
    original = params.get("original_max_position_embeddings") or max_positions
    factor = params.get("factor") or max_positions / original
    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = params["long_factor"] if seq_len and seq_len > original else params["short_factor"]
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # (dim/2,)
    return 1.0 / (torch.tensor(ext, dtype=torch.float32) * params["rope_theta"] ** exponents), attention_factor


ROPE_TYPES: dict[str, RopeFn] = {"default": default, "linear": linear, "dynamic": dynamic, "llama3": llama3, "yarn": yarn,
                                 "longrope": longrope}


def rope_dim(params: dict[str, Any], head_dim: int) -> int:
    """The rotated width of a head: head_dim · partial_rotary_factor."""
    return int(head_dim * params.get("partial_rotary_factor", 1.0))


def inverse_frequencies(params: dict[str, Any], dim: int, max_positions: int,
                        seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        from ..errors import ConfigError

        raise ConfigError(f"rope_type {rope_type!r} is not supported yet; hfkit supports: {', '.join(ROPE_TYPES)}.")
    return ROPE_TYPES[rope_type](params, dim, max_positions, seq_len)


def rope_cos_sin(
    params: dict[str, Any],
    dim: int,
    max_positions: int,
    position_ids: torch.Tensor,  # (B, T)
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:  # cos, sin: (B, T, dim)
    """The cos/sin tables of these positions (dynamic NTK: for the longest position seen)."""
    seq_len = None
    if params.get("rope_type") == "dynamic":
        seq_len = int(position_ids.max()) + 1
        seq_len = seq_len if seq_len > max_positions else None
    elif params.get("rope_type") == "longrope":  # short or long factors by the longest position of this call
        seq_len = int(position_ids.max()) + 1
    inv_freq, scaling = inverse_frequencies(params, dim, max_positions, seq_len)
    freqs = position_ids[..., None].float() * inv_freq.to(position_ids.device)  # (B, T, dim/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, dim)
    return (angles.cos() * scaling).to(dtype), (angles.sin() * scaling).to(dtype)
