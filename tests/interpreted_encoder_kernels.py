"""The encoder kernel (nn.window_attention) run by Triton's interpreter on the CPU
(TRITON_INTERPRET=1, set by test_matvec.py, which runs this module in a subprocess: the variable must be set before
Triton is imported).

    TRITON_INTERPRET=1 python -m tests.interpreted_encoder_kernels
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from hfkit.nn import matvec, window_attention
from hfkit.nn.attention import PackedBatch, packed_attention
from hfkit.nn.rope import apply_rope, rope_tables

from .parity.tiny import HFKIT_AUTO, tiny_reference


def check_window_attention(tmp: Path) -> None:
    """Sliding windows over packed rows (a row of one token, rows longer and shorter than the window, windows
    that span several rows in one block) against float64 on the padded path; then a float32 ModernBERT (local
    window 4) unpadded through the kernel, RoPE before it and inside it, equals its padded forward (<= 1e-5)."""
    gen = torch.Generator().manual_seed(4)
    for lengths, window, heads, D, dtype, block_m, rope in [([5, 70, 1, 130, 33], 64, 2, 32, torch.float32, 64, True),
                                                            ([9, 1, 40], 3, 3, 64, torch.bfloat16, 32, False),
                                                            ([9, 1, 40], 3, 3, 64, torch.bfloat16, 32, True),
                                                            ([100, 17], 8, 1, 32, torch.float16, 128, False)]:
        mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
        packed = PackedBatch.from_mask(mask).windowed(window)
        q, k, v = torch.randn(int(mask.sum()), 3, heads, D, generator=gen).to(dtype).unbind(1)
        assert window_attention.applies(q, k, v, 0.0) and not window_attention.applies(q, k, v, 0.1)
        assert not window_attention.applies(q, k.detach().requires_grad_(), v, 0.0)  # no backward: varlen_attn
        assert not window_attention.applies(q[..., :16], k[..., :16], v[..., :16], 0.0)  # halves below tl.dot's 16
        with torch.no_grad():
            assert window_attention.applies(q, k.detach().requires_grad_(), v, 0.0)
        tables = rope_tables(D, 160.0, packed.indices % mask.shape[1], dtype) if rope else None  # (N, D) each
        cos, sin = tables or (None, None)
        out = window_attention.window_attention(q, k, v, packed.rows, window, 0.3, block_m, cos=cos, sin=sin)
        other_order = window_attention.launch(q, k, v, packed.rows, window, 0.3, cos, sin, block_m,
                                              heads_first=not window_attention.HEADS_FIRST)
        assert torch.equal(other_order, out)  # the order of the programs changes nothing they compute
        if rope:  # rotated as the layers rotated them before (float32, rounded to the dtype)
            q, k = apply_rope(q, k, *tables)
        window_attention.ENABLED = False
        truth = packed_attention(q.double(), k.double(), v.double(), packed, scale=0.3)
        window_attention.ENABLED = True
        error = ((out.double() - truth).abs().max() / truth.abs().max()).item()  # relative: bf16 outputs reach 3
        assert out.shape == q.shape and out.dtype == dtype
        # bf16 / fp16 with RoPE: the interpreter truncates the rotated q and k where a GPU rounds (twice the error)
        bound = 1e-6 if dtype == torch.float32 else 8e-3 * (2 if rope else 1)
        assert error < bound, (lengths, window, dtype, rope, error)
    reference = tiny_reference("modernbert", "base", hidden_size=64, num_attention_heads=2)  # heads of 32
    reference.save_pretrained(tmp / "modernbert")
    model = HFKIT_AUTO["base"].from_pretrained(tmp / "modernbert")
    ids = torch.randint(3, 90, (3, 23), generator=gen)
    mask = (torch.arange(23)[None, :] < torch.tensor([23, 9, 1])[:, None]).long()
    launch, rotated, shipped = window_attention.launch, [], window_attention.ROTATES
    window_attention.launch = lambda *args: rotated.append(args[6] is not None) or launch(*args)
    try:
        with torch.no_grad():
            padded = model(ids, mask, unpadded=False).last_hidden_state[mask.bool()]
            for inside in (False, True):
                window_attention.ROTATES = inside
                packed = model(ids, mask, unpadded=True).last_hidden_state[mask.bool()]
                assert (packed - padded).abs().max() <= 1e-5, (inside, (packed - padded).abs().max())
    finally:
        window_attention.launch, window_attention.ROTATES = launch, shipped
    assert rotated == [False, True], rotated  # the one local layer through the kernel, RoPE before it, then inside


if __name__ == "__main__":
    assert matvec.INTERPRETED, "run with TRITON_INTERPRET=1"
    assert window_attention.ENABLED  # on by default (measured on an H100)
    assert window_attention.ROTATES and window_attention.HEADS_FIRST  # on by default (measured on an H100)
    with tempfile.TemporaryDirectory() as tmp:
        check_window_attention(Path(tmp))
    print("interpreted kernels: ok")
