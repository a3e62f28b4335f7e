"""nn.cpu_linear: a few float32 rows against a weight of many outputs as W · xᵀ on the CPU — the same products as
F.linear (float32 rounding), taken only where it applies, and decoding through it token-identical to transformers."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from hfkit.generation import generate_tokens
from hfkit.nn import cpu_linear

from .parity.test_decoder_matrix import build, left_padded


@pytest.mark.parametrize("shape", [(3, 64), (2, 5, 64), (32, 64)])
@pytest.mark.parametrize("bias", [True, False])
def test_few_rows_match_f_linear(shape, bias):
    layer = nn.Linear(64, 4096, bias=bias)
    x = torch.randn(shape)
    assert cpu_linear.applies(layer, x)
    got = cpu_linear.linear(layer, x)
    torch.testing.assert_close(got, layer(x), rtol=1e-5, atol=1e-5)
    assert got.shape == (*shape[:-1], 4096)


def test_other_products_keep_f_linear(monkeypatch):
    wide, narrow = nn.Linear(64, 4096), nn.Linear(64, 4095)
    x = torch.randn(3, 64)
    assert not cpu_linear.applies(wide, torch.randn(1, 64))  # one row: the same matrix–vector product
    assert not cpu_linear.applies(wide, torch.randn(33, 64))  # enough rows for F.linear's split
    assert not cpu_linear.applies(narrow, x)
    assert not cpu_linear.applies(wide.to(torch.bfloat16), x.bfloat16())
    assert not cpu_linear.applies(type("Adapted", (nn.Linear,), {})(64, 4096), x)  # subclasses keep their forward
    monkeypatch.setattr(cpu_linear, "ENABLED", False)
    assert not cpu_linear.applies(wide, x)


def test_batched_decoding_through_it_matches_transformers(tmp_path):
    """A tiny Llama with 4096 MLP features and vocabulary: its gate, up and LM head take W · xᵀ for 3 rows."""
    reference, ours = build(tmp_path, "llama", vocab_size=4096, intermediate_size=4096)
    ids, mask = left_padded()
    assert cpu_linear.applies(ours.lm_head, torch.zeros(3, 1, ours.config.hidden_size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            expected = reference.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                          eos_token_id=None)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=None), expected)
