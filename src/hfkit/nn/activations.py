"""Activation functions by their HF config names (`hidden_act`, `activation`)."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

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
