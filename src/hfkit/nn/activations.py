"""Activation functions by their HF config names (`hidden_act`, `activation`)."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU as BERT/GPT-2 wrote it (`gelu_new`, `gelu_pytorch_tanh`)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """torch's tanh-approximated GELU (`gelu_pytorch_tanh`)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": gelu_new,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"Unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}") from None


# --- CUDA, float16/bfloat16: GELU in the GEMM's epilogue ----------------------------------------------------------
# cuBLASLt applies GELU (in its tanh form) to the GEMM's tile before writing it, so act(x·Wᵀ + b) costs the GEMM alone:
# bert-base's feed-forward input on 32768 packed tokens (H100) 0.409 ms → 0.285 ms (the GEMM alone: 0.247 ms). The
# tanh form differs from erf-GELU by < 5e-4, far below bfloat16's rounding: the max error against a float32 erf-GELU
# was 0.0157 fused vs 0.0161 unfused (benchmarks/explore/gelu_epilogue.py). Only without autograd.

GELU_FORMS = (F.gelu, gelu_new, gelu_tanh)  # the activations the epilogue stands in for
GELU_EPILOGUE = True  # False: leave half-precision CUDA feed-forward layers to nn.Linear + the activation


def linear_gelu(x: torch.Tensor, linear: nn.Module) -> torch.Tensor | None:  # (..., in) → (..., out), or None
    """GELU(linear(x)) through cuBLASLt's epilogue where it applies (CUDA, float16/bfloat16, a plain nn.Linear with
    a bias, no gradient wanted); None elsewhere, for the caller's plain path."""
    if not (GELU_EPILOGUE and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16) and type(linear) is nn.Linear
            and linear.bias is not None and linear.weight.dtype == x.dtype):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad):
        return None
    flat = x.reshape(-1, x.shape[-1])  # (M, in)
    out = torch._addmm_activation(linear.bias, flat, linear.weight.t(), use_gelu=True)  # (M, out)
    return out.view(*x.shape[:-1], out.shape[-1])
