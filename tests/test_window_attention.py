"""`nn.window_attention` (ModernBERT's sliding-window layers on packed tokens) computes what the padded path does.
On the CPU through Triton's interpreter (tests/interpreted_encoder_kernels.py, run by test_matvec.py); on CUDA here."""

from __future__ import annotations

import pytest
import torch

from hfkit.nn import window_attention
from hfkit.nn.attention import PackedBatch, packed_attention
from hfkit.nn.rope import apply_rope, rope_tables


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernel needs CUDA")
@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("window, heads, head_dim", [(64, 12, 64), (3, 2, 32), (128, 4, 128)])
def test_cuda_window_attention_against_the_padded_path(dtype, window, heads, head_dim, rope, monkeypatch):
    assert window_attention.ENABLED  # on by default
    torch.manual_seed(0)
    lengths = [1, 70, 513, 5, 130, 64]
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long, device="cuda")
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    packed = PackedBatch.from_mask(mask).windowed(window)
    qkv = torch.randn(int(mask.sum()), 3, heads, head_dim, device="cuda", dtype=dtype)  # as a layer's q | k | v view
    q, k, v = qkv.unbind(1)
    assert window_attention.applies(q, k, v, 0.0)
    tables = rope_tables(head_dim, 10000.0, packed.indices % mask.shape[1], dtype) if rope else (None, None)
    run = lambda block_m: window_attention.window_attention(q, k, v, packed.rows, window, head_dim ** -0.5, block_m,
                                                            cos=tables[0], sin=tables[1])
    out = run(window_attention.BLOCK_M)
    # the kernel rotates q and k as apply_rope does (float32, rounded to the dtype); `run` keeps them unrotated
    rotated_q, rotated_k = apply_rope(q, k, *tables) if rope else (q, k)
    monkeypatch.setattr(window_attention, "ENABLED", False)
    truth = packed_attention(rotated_q.double(), rotated_k.double(), v.double(), packed)  # the padded path, float64
    # float32: exact to 1e-5; bf16 / fp16: the probabilities are rounded for their product with v (as in flash
    # attention) and the output is rounded, each at most a unit roundoff u of max |v| and of |out|
    u = torch.finfo(dtype).eps / 2
    bound = 1e-5 if dtype == torch.float32 else u * (v.abs().max().item() + truth.abs().max().item())
    for block_m in (window_attention.BLOCK_M, 32, 128):
        error = ((out if block_m == window_attention.BLOCK_M else run(block_m)).double() - truth).abs().max().item()
        assert error < bound, (block_m, error, bound)
