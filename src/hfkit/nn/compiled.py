"""A module under torch.compile that falls back to the module itself, with one warning, if compiling fails."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn


class Compiled:
    """Call `module` through torch.compile(module, **options); attribute reads go to the module itself."""

    def __init__(self, module: nn.Module, **options: Any):
        self.module, self.compiled = module, torch.compile(module, **options)

    def __getattr__(self, name: str) -> Any:  # only for names not set in __init__
        return getattr(self.module, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 — any compiler failure: run the module as it is
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                              f"running {type(self.module).__name__} uncompiled.", RuntimeWarning, stacklevel=2)
                self.compiled = None
        return self.module(*args, **kwargs)
