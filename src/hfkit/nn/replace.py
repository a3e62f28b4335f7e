"""Swapping layers of a built model: LoRA wrappers, int8 layers, and back.

hfkit layers call their parts through plain attributes (`self.__dict__["o_proj"]`, DESIGN §3's injected parts) as
well as the registered paths that name checkpoint keys, so a swap must repoint both, everywhere the old layer is held.
"""

from __future__ import annotations

from torch import nn


def replace_modules(model: nn.Module, replacements: dict[nn.Module, nn.Module]) -> None:
    """Put `replacements[old]` wherever an `old` is registered or referenced in `model`, in one walk."""
    by_id = {id(old): new for old, new in replacements.items()}
    for module in list(model.modules()):
        for table in (module._modules, module.__dict__):
            for name in [name for name, value in table.items() if id(value) in by_id]:
                table[name] = by_id[id(table[name])]
