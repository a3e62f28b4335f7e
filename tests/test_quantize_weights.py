"""`quantize_weights_int8`: int8 weights (per output channel) with activations in the model's dtype, for decoding.

Each layer multiplies by exactly its dequantized weight; every Linear / GPT-2 Conv1D of a decoder is swapped, q | k | v
and gate | up stacked into one layer each, the LM head gets its own copy when tied, embeddings stay; the tiny
decoders' logits stay close to the unquantized ones; generation runs with the dynamic and the static cache alike
(and compiled on CUDA, token-identical to eager). Quantized models refuse export, training and a second quantization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hfkit.errors import ConfigError
from hfkit.export import ExportError
from hfkit.generation import generate_tokens
from hfkit.nn.conv1d import Conv1D
from hfkit.nn.quantize import (
    Int8WeightLinear,
    QuantizationError,
    is_quantized,
    quantize_weights_int8,
)
from hfkit.train import Trainer

from .parity.test_decoder_matrix import build, left_padded


def test_layer_multiplies_by_its_dequantized_weight():
    torch.manual_seed(0)
    linear = nn.Linear(48, 20)
    layer = Int8WeightLinear.from_layer(linear)
    x = torch.randn(5, 7, 48)
    expected = F.linear(x, layer.dequantized_weight(), linear.bias)
    assert (layer(x) - expected).abs().max() <= 1e-5
    scale = layer.weight_scale[:, None]
    assert ((layer.dequantized_weight() - linear.weight).abs() <= scale / 2 + 1e-7).all()  # round to nearest
    assert layer.weight_int8.dtype == torch.int8 and layer.weight_int8.abs().amax(1).eq(127).all()


def test_conv1d_is_read_transposed():
    torch.manual_seed(0)
    conv = Conv1D(16, 24)
    nn.init.normal_(conv.weight)
    layer = Int8WeightLinear.from_layer(conv)
    x = torch.randn(3, 16)
    assert layer.weight_int8.shape == (24, 16)
    assert torch.nn.functional.cosine_similarity(layer(x).flatten(), conv(x).flatten(), 0) > 0.9999


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "gpt2"])
def test_decoders_quantize_every_projection_and_stay_close(family, tmp_path):
    _, ours = build(tmp_path, family)
    ids, mask = left_padded()
    projections = [m for m in ours.modules() if type(m) in (nn.Linear, Conv1D)]
    with torch.no_grad():
        exact = ours(ids, mask).logits
        quantize_weights_int8(ours)
        lossy = ours(ids, mask).logits
    swapped = [m for m in ours.modules() if isinstance(m, Int8WeightLinear)]
    stacked = 3 * 2 if family != "gpt2" else 0  # per layer, q | k | v and gate | up became one layer each
    assert len(swapped) == len(projections) - stacked  # the LM head among them, tied or not
    assert sum(m.out_features for m in swapped) == sum(m.out_features if type(m) is nn.Linear else m.weight.shape[1]
                                                       for m in projections)
    assert isinstance(ours.lm_head, Int8WeightLinear) and not any(type(m) in (nn.Linear, Conv1D) for m in ours.modules())
    embeddings = [m for m in ours.modules() if isinstance(m, nn.Embedding)]
    assert embeddings and all(m.weight.dtype == torch.float32 for m in embeddings)  # embeddings stay
    keep = mask.bool()
    cosine = F.cosine_similarity(exact[keep], lossy[keep], dim=-1)
    assert cosine.min() > 0.999, cosine.min()
    assert is_quantized(ours) and not ours.training


def test_stacked_layers_compute_the_layers_side_by_side():
    torch.manual_seed(0)
    parts = [Int8WeightLinear.from_layer(nn.Linear(32, n, bias=b)) for n, b in ((24, True), (8, False), (8, True))]
    stacked = Int8WeightLinear.stack(parts)
    x = torch.randn(3, 5, 32)
    assert torch.allclose(stacked(x), torch.cat([p(x) for p in parts], dim=-1), atol=1e-6)
    assert stacked.bias[24:32].eq(0).all() and stacked.weight_int8.shape == (40, 32)


def test_stacked_glu_is_the_activation_of_gate_times_up():
    torch.manual_seed(0)
    gate, up = (Int8WeightLinear.from_layer(nn.Linear(16, 12)) for _ in range(2))
    stacked = Int8WeightLinear.stack([gate, up])
    x = torch.randn(2, 16)
    assert torch.allclose(stacked.forward_glu(x, F.silu), F.silu(gate(x)) * up(x), atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_generation_with_int8_weights_static_equals_dynamic(family, tmp_path):
    _, ours = build(tmp_path, family)
    quantize_weights_int8(ours)
    ids, mask = left_padded()
    dynamic = generate_tokens(ours, ids, mask, max_new_tokens=12)
    static = generate_tokens(ours, ids, mask, max_new_tokens=12, cache="static", compile=False)
    assert torch.equal(static, dynamic)


def test_quantized_models_refuse_export_training_and_requantizing(tmp_path):
    _, ours = build(tmp_path / "model", "llama")
    quantize_weights_int8(ours)
    with pytest.raises(QuantizationError, match="already int8-quantized"):
        quantize_weights_int8(ours)
    with pytest.raises(ExportError, match="int8-quantized.*export it before quantizing"):
        ours.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="int8-quantized.*train the model before quantizing"):
        Trainer(ours)
    with pytest.raises(QuantizationError, match="no Linear layers"):
        quantize_weights_int8(nn.Sequential(nn.Embedding(3, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
def test_compiled_int8_decode_identical_to_eager_on_cuda(tmp_path):
    _, ours = build(tmp_path, "llama")
    ours = quantize_weights_int8(ours.cuda())
    ids, mask = (t.cuda() for t in left_padded())
    eager = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static", compile=False)
    compiled = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static", compile=True)
    assert torch.equal(compiled, eager)
