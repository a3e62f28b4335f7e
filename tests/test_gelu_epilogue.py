"""`linear` / `linear_gelu`: the bias and GELU inside the product for inference — cuBLASLt's epilogue for half
precision on CUDA, oneDNN's fused linear for bfloat16 on the CPU —; the plain path everywhere else. `linear_residual`:
the residual added inside the product (RESIDUAL_EPILOGUE, off by default).

The encoder's outputs with them are as close to a float32 run as the plain path's are: bfloat16 on the CPU, and on
CUDA (skipped without it) bf16/fp16, under torch.compile too (cuBLASLt's tanh-form GELU differs from erf-GELU far
below half-precision rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hfkit.nn import fused_linear
from hfkit.nn.activations import gelu_new
from hfkit.nn.fused_linear import addmm_residual, linear, linear_gelu, linear_residual

from .parity.tiny import HFKIT_AUTO, padded_batch, tiny_reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_not_taken_on_cpu_in_float32_or_with_gradients():
    layer = nn.Linear(8, 16)
    x = torch.randn(3, 8)
    with torch.inference_mode():
        assert linear_gelu(x, layer, F.gelu) is None  # float32: F.linear, exact
        assert torch.equal(linear(x, layer), layer(x))
    assert linear_gelu(x.bfloat16(), layer.bfloat16(), F.gelu) is None  # the weight requires grad


@pytest.mark.parametrize("bias", [True, False])
def test_residual_inside_the_product_is_the_sum(monkeypatch, bias):
    """addmm_residual computes residual + module(x) (float32 on the CPU: to rounding); linear_residual keeps the
    plain sum where its GEMM does not apply (the CPU; active dropout), bit for bit."""
    torch.manual_seed(0)
    layer, x, residual = nn.Linear(24, 40, bias=bias), torch.randn(2, 5, 24), torch.randn(2, 5, 40)
    monkeypatch.setattr(fused_linear, "RESIDUAL_EPILOGUE", True)
    with torch.inference_mode():
        expected = residual + layer(x)
        torch.testing.assert_close(addmm_residual(x, layer, residual), expected, rtol=1e-6, atol=1e-6)
        assert torch.equal(linear_residual(x, layer, residual, nn.Dropout(0.1).eval()), expected)
    dropout = nn.Dropout(0.5)  # training: the plain path, dropout applied to the product only
    torch.manual_seed(1)
    dropped = linear_residual(x, layer, residual, dropout)
    torch.manual_seed(1)
    assert torch.equal(dropped, residual + dropout(layer(x)))


needs_onednn = pytest.mark.skipif(not fused_linear.onednn_linear_works(), reason="needs oneDNN's bfloat16 linear")


@needs_onednn
@pytest.mark.parametrize("act, exact", [(F.gelu, F.gelu), (gelu_new, lambda t: F.gelu(t, approximate="tanh"))])
def test_cpu_bfloat16_fused_linear_is_as_close_to_float32_as_the_plain_path(act, exact):
    torch.manual_seed(0)
    layer = nn.Linear(384, 1536)
    x = torch.randn(2, 300, 384)
    low, xb = nn.Linear(384, 1536, dtype=torch.bfloat16), x.bfloat16()
    low.load_state_dict(layer.state_dict())
    with torch.inference_mode():
        truth = exact(layer(x))
        fused, plain = linear_gelu(xb, low, act), act(low(xb))
        assert fused.shape == plain.shape and fused.dtype == torch.bfloat16
        err = lambda out: (out.float() - truth).abs().max().item()
        assert err(fused) <= 1.25 * err(plain) + 1e-3, (err(fused), err(plain))
        no_bias = nn.Linear(384, 16, bias=False, dtype=torch.bfloat16)
        assert (linear(xb, no_bias).float() - no_bias(xb).float()).abs().max() <= 0.05
        assert (linear(xb, low).float() - low(xb).float()).abs().max() <= 0.05


ENCODERS = ["bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta-v2", "modernbert"]


@needs_onednn
@pytest.mark.parametrize("model_type", ENCODERS)  # erf-GELU, gelu_new (albert), GeGLU (modernbert), no biases
def test_cpu_bfloat16_encoder_is_as_close_to_float32_as_the_plain_path(tmp_path, monkeypatch, model_type):
    tiny_reference(model_type, "base").save_pretrained(tmp_path)
    truth_model = HFKIT_AUTO["base"].from_pretrained(tmp_path)
    model = HFKIT_AUTO["base"].from_pretrained(tmp_path, dtype=torch.bfloat16)
    batch = padded_batch(model.config)
    keep = batch["attention_mask"].bool()
    taken, chooses = [], fused_linear.on_cpu_bfloat16
    with torch.inference_mode():
        truth = truth_model(**batch).last_hidden_state[keep]
        spy = lambda x, layer: taken.append(chooses(x, layer)) or taken[-1]
        monkeypatch.setattr(fused_linear, "on_cpu_bfloat16", spy)
        fused = model(**batch).last_hidden_state[keep].float()
        assert taken and all(taken)  # every Linear of the stack took the fused path
        monkeypatch.setattr(fused_linear, "CPU_FUSED_LINEAR", False)
        plain = model(**batch).last_hidden_state[keep].float()
    err = lambda out: (out - truth).abs().max().item()
    assert err(fused) <= 1.25 * err(plain) + 1e-3, (err(fused), err(plain))


@cuda
def test_not_taken_where_autograd_needs_the_plain_graph():
    layer = nn.Linear(8, 16, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(3, 8, device="cuda", dtype=torch.bfloat16)
    assert linear_gelu(x, layer, F.gelu) is None  # the weight requires grad
    with torch.no_grad():
        assert linear_gelu(x, layer, F.gelu).shape == (3, 16)
        assert linear_gelu(x.float(), layer.float(), F.gelu) is None  # float32: exact erf-GELU stays
        assert linear_gelu(x, nn.Linear(8, 16, bias=False, device="cuda", dtype=torch.bfloat16), F.gelu) is None


GELU, RESIDUAL = (fused_linear, "GELU_EPILOGUE"), (fused_linear, "RESIDUAL_EPILOGUE")


@cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model_type, switch", [("bert", GELU), ("albert", GELU),  # erf-GELU, gelu_new
                                                ("bert", RESIDUAL), ("modernbert", RESIDUAL)])  # post-, pre-norm
def test_epilogue_is_as_close_to_float32_as_the_plain_path(tmp_path, monkeypatch, dtype, model_type, switch):
    """Each switch on against it off, eager and under compile_layers(): GELU_EPILOGUE (on by default),
    RESIDUAL_EPILOGUE (the residual sums inside the GEMMs), off by default."""
    tiny_reference(model_type, "base").save_pretrained(tmp_path)
    truth_model = HFKIT_AUTO["base"].from_pretrained(tmp_path, device="cuda")
    model = HFKIT_AUTO["base"].from_pretrained(tmp_path, device="cuda", dtype=dtype)
    batch = {k: v.cuda() for k, v in padded_batch(model.config).items()}
    keep = batch["attention_mask"].bool()
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with torch.inference_mode():
        truth = truth_model(**batch).last_hidden_state[keep]
        monkeypatch.setattr(*switch, False)
        plain = model(**batch).last_hidden_state[keep].float()
        monkeypatch.setattr(*switch, True)
        fused = model(**batch).last_hidden_state[keep].float()
        compiled = model.compile_layers()(**batch).last_hidden_state[keep].float()
        model.uncompile_layers()
    err = lambda out: (out - truth).abs().max().item()
    assert not torch.equal(fused, plain)  # the epilogue ran
    assert err(fused) <= 1.25 * err(plain) + 1e-3, (err(fused), err(plain))
    assert err(compiled) <= 1.25 * err(plain) + 1e-3, (err(compiled), err(plain))
