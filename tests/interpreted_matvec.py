"""The Triton matvec kernels run by Triton's interpreter on the CPU (TRITON_INTERPRET=1, set by test_matvec.py,
which runs this module in a subprocess: the variable must be set before Triton is imported).

    TRITON_INTERPRET=1 python -m tests.interpreted_matvec
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from hfkit.nn import matvec
from hfkit.nn.activations import gelu_tanh
from hfkit.nn.quantize import quantize_weights_int8

from .parity.test_decoder_matrix import build

ACTS = {matvec.SILU: F.silu, matvec.GELU_TANH: gelu_tanh}


def check_kernels() -> None:
    """Every form against float64 on the dequantized weights: relative error at the output dtype's rounding."""
    gen = torch.Generator().manual_seed(0)
    cases = [(40, 96, 0, True, 1, torch.float32), (37, 200, matvec.SILU, False, 3, torch.bfloat16),
             (24, 64, matvec.GELU_TANH, True, 2, torch.float32), (5, 1100, 0, False, 4, torch.bfloat16),
             (300, 48, matvec.SILU, True, 1, torch.float32)]
    for n, k, act, biased, rows, dtype in cases:
        w = torch.randint(-127, 128, (2 * n if act else n, k), dtype=torch.int8, generator=gen)
        scale = torch.rand(w.shape[0], generator=gen) / 50
        bias = torch.randn(w.shape[0], generator=gen) if biased else None
        x = torch.randn(rows, 1, k, generator=gen).to(dtype)
        assert matvec.applies(x)
        ref = x.double() @ (w.double() * scale.double()[:, None]).T + (bias.double() if biased else 0)
        if act:
            gate, up = ref.chunk(2, dim=-1)
            ref, out = ACTS[act](gate) * up, matvec.glu_matvec(x, w, scale, bias, act)
        else:
            out = matvec.matvec(x, w, scale, bias)
        error = ((out.double() - ref).norm() / ref.norm()).item()
        assert out.shape == (rows, 1, n) and out.dtype == dtype, (out.shape, out.dtype)
        assert error < (1e-6 if dtype == torch.float32 else 4e-3), (n, k, act, dtype, error)
    assert not matvec.applies(torch.randn(matvec.MAX_ROWS + 1, 8))  # a matrix product: not this kernel's


def check_decoders(tmp: Path) -> None:
    """A quantized float32 decoder's one-token step through the kernels equals the torch path (≤ 1e-5): Llama
    (SiLU), Gemma (tanh-GELU), Qwen2 (q | k | v biases)."""
    for family in ("llama", "gemma", "qwen2"):
        _, model = build(tmp / family, family)
        quantize_weights_int8(model)
        ids = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(2, 7, dtype=torch.long)
        with torch.no_grad():
            cache = model(ids, mask[:, :6], use_cache=True).past_key_values  # 12 rows: the torch path
            step = ids[:, -1:]  # (2, 1): two rows, the kernels
            fused = model(step, mask, past_key_values=copy.deepcopy(cache), use_cache=True).logits
            matvec.ENABLED = False
            plain = model(step, mask, past_key_values=cache, use_cache=True).logits
            matvec.ENABLED = True
        assert (fused - plain).abs().max() <= 1e-5, (family, (fused - plain).abs().max())


if __name__ == "__main__":
    assert matvec.INTERPRETED, "run with TRITON_INTERPRET=1"
    check_kernels()
    with tempfile.TemporaryDirectory() as tmp:
        check_decoders(Path(tmp))
    print("interpreted matvec: ok")
