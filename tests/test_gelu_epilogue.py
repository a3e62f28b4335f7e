"""`linear_gelu`: GELU in cuBLASLt's GEMM epilogue for half-precision CUDA inference; the plain path everywhere else.

On CUDA (skipped without it) the encoder's bf16/fp16 outputs with the epilogue are as close to a float32 run as the
plain path's are (its tanh-form GELU differs from erf-GELU far below half-precision rounding), under torch.compile too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hfkit.nn import activations
from hfkit.nn.activations import linear_gelu

from .parity.tiny import HFKIT_AUTO, padded_batch, tiny_reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_not_taken_on_cpu_in_float32_or_with_gradients():
    linear = nn.Linear(8, 16)
    x = torch.randn(3, 8)
    assert linear_gelu(x, linear) is None  # CPU
    assert linear_gelu(x.bfloat16(), linear.bfloat16()) is None  # CPU, bfloat16


@cuda
def test_not_taken_where_autograd_needs_the_plain_graph():
    linear = nn.Linear(8, 16, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(3, 8, device="cuda", dtype=torch.bfloat16)
    assert linear_gelu(x, linear) is None  # the weight requires grad
    with torch.no_grad():
        assert linear_gelu(x, linear).shape == (3, 16)
        assert linear_gelu(x.float(), linear.float()) is None  # float32: exact erf-GELU stays
        assert linear_gelu(x, nn.Linear(8, 16, bias=False, device="cuda", dtype=torch.bfloat16)) is None


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model_type", ["bert", "albert"])  # erf-GELU, gelu_new
def test_epilogue_is_as_close_to_float32_as_the_plain_path(tmp_path, monkeypatch, dtype, model_type):
    tiny_reference(model_type, "base").save_pretrained(tmp_path)
    truth_model = HFKIT_AUTO["base"].from_pretrained(tmp_path, device="cuda")
    model = HFKIT_AUTO["base"].from_pretrained(tmp_path, device="cuda", dtype=dtype)
    batch = {k: v.cuda() for k, v in padded_batch(model.config).items()}
    keep = batch["attention_mask"].bool()
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with torch.inference_mode():
        truth = truth_model(**batch).last_hidden_state[keep]
        fused = model(**batch).last_hidden_state[keep].float()
        compiled = model.compile_layers()(**batch).last_hidden_state[keep].float()
        model.uncompile_layers()
        monkeypatch.setattr(activations, "GELU_EPILOGUE", False)
        plain = model(**batch).last_hidden_state[keep].float()
    err = lambda out: (out - truth).abs().max().item()
    assert not torch.equal(fused, plain)  # the epilogue ran
    assert err(fused) <= 1.25 * err(plain) + 1e-3, (err(fused), err(plain))
    assert err(compiled) <= 1.25 * err(plain) + 1e-3, (err(compiled), err(plain))
