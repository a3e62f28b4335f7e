"""`nn.matvec`: the int8 decode kernels compute the function they claim, and a quantized decoder's step through them
equals its torch path. On the CPU through Triton's interpreter (tests/interpreted_matvec.py, in a subprocess: the
interpreter is chosen when Triton is imported); on CUDA compiled, in this process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfkit.nn import matvec

from .interpreted_matvec import ACTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernels_and_decoders_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-W", "ignore", "-m", "tests.interpreted_matvec"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "interpreted matvec: ok" in run.stdout


def test_not_taken_for_many_rows_gradients_or_when_switched_off(monkeypatch):
    x = torch.randn(2, 8)
    monkeypatch.setattr(matvec, "INTERPRETED", True)
    monkeypatch.setattr(matvec, "triton", matvec.triton or object())
    assert matvec.applies(x)
    assert not matvec.applies(torch.randn(matvec.MAX_ROWS + 1, 8))
    assert not matvec.applies(torch.randn(2, 8, requires_grad=True))
    monkeypatch.setattr(matvec, "ENABLED", False)
    assert not matvec.applies(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@pytest.mark.parametrize("act", [0, matvec.SILU, matvec.GELU_TANH])
@pytest.mark.parametrize("n, k", [(3072, 2048), (2048, 8192), (1000, 96)])
def test_cuda_kernels_against_float64(act, n, k):
    torch.manual_seed(0)
    w = torch.randint(-127, 128, (2 * n if act else n, k), dtype=torch.int8, device="cuda")
    scale = torch.rand(w.shape[0], device="cuda", dtype=torch.bfloat16) / 50
    bias = torch.randn(w.shape[0], device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, 1, k, device="cuda", dtype=torch.bfloat16)
    ref = x.double() @ (w.double() * scale.double()[:, None]).T + bias.double()
    if act:
        gate, up = ref.chunk(2, dim=-1)
        ref = ACTS[act](gate) * up
        out = matvec.glu_matvec(x, w, scale, bias, act)
    else:
        out = matvec.matvec(x, w, scale, bias)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 4e-3
