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
        if rope:  # the same from tables per position (P, D) and each token's position, and heads first
            positions = (packed.indices % mask.shape[1]).to(torch.int32)
            cos_p, sin_p = rope_tables(D, 160.0, torch.arange(mask.shape[1]), dtype)  # (P, D) each
            for heads_first in (False, True):
                again = window_attention.launch(q, k, v, packed.rows, window, 0.3, cos_p, sin_p, block_m,
                                                positions=positions, heads_first=heads_first)
                assert torch.equal(again, out), heads_first
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
    launch, rotated = window_attention.launch, []
    shipped = window_attention.ROTATES, window_attention.BY_POSITION
    window_attention.launch = lambda *args, **kw: rotated.append(  # RoPE inside? by position?
        (args[6] is not None, kw["positions"] is not None)) or launch(*args, **kw)
    try:
        with torch.no_grad():
            padded = model(ids, mask, unpadded=False).last_hidden_state[mask.bool()]
            for inside, by_position in [(False, False), (True, False), (False, True), (True, True)]:
                window_attention.ROTATES, window_attention.BY_POSITION = inside, by_position
                packed = model(ids, mask, unpadded=True).last_hidden_state[mask.bool()]
                assert (packed - padded).abs().max() <= 1e-5, (inside, (packed - padded).abs().max())
                if by_position:  # the tables a row per position: the same function as a row per token
                    window_attention.BY_POSITION = False
                    assert torch.equal(packed, model(ids, mask, unpadded=True).last_hidden_state[mask.bool()])
    finally:
        window_attention.launch = launch
        window_attention.ROTATES, window_attention.BY_POSITION = shipped
    # the one local layer through the kernel: RoPE before it, inside it, before it with the tables by position
    # (gathered per token first), inside by position; after each of the latter two, the same with tables per token
    assert rotated == [(False, False), (True, False), (False, False), (False, False), (True, True), (True, False)], \
        rotated


if __name__ == "__main__":
    assert matvec.INTERPRETED, "run with TRITON_INTERPRET=1"
    assert window_attention.ENABLED  # on by default (measured on an H100)
    assert window_attention.ROTATES  # on by default (measured on an H100)
    with tempfile.TemporaryDirectory() as tmp:
        check_window_attention(Path(tmp))
    print("interpreted kernels: ok")
