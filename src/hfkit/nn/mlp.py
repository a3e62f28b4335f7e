"""The feed-forward block's kinds: what happens between its input and output projections."""

from __future__ import annotations

from enum import Enum
from typing import Callable

import torch


class MLPKind(str, Enum):
    """PLAIN: out(act(in(x))), `in` of width `inner` (BERT).
    GLU: `in` of width 2·inner split into (input, gate); out(act(input) · gate) (ModernBERT's GeGLU)."""

    PLAIN = "plain"
    GLU = "glu"

    @property
    def in_multiple(self) -> int:
        """The input projection's width in units of `intermediate_size`."""
        return 2 if self is MLPKind.GLU else 1

    def inner(self, h: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The input projection's output (..., in_multiple·I) → the activation (..., I)."""
        if self is MLPKind.GLU:
            x, gate = h.chunk(2, dim=-1)
            return act(x) * gate
        return act(h)
