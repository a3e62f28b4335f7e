"""Exploration: one decode step's attention for the Llama-3.2-1B shape (batch 1, 32 query heads over 8 key/value
heads, head size 64, bf16) against caches of several lengths: `hfkit.nn.decode_attention`'s kernel (the cache split
as by default, merged by eager torch ops here; and unsplit, one program per key/value head), SDPA with the query
heads folded onto their key/value head (what `grouped_attention` runs without the kernel) and SDPA with the keys and
values repeated per query head (before that). Each timed in a CUDA graph of 200 calls over 16 caches
(as 16 layers), the mask hiding the last quarter of the cache (a static cache not yet full). Prints µs per call.

    PYTHONPATH=src python benchmarks/explore/decode_attention.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from matvec_sweep import per_call_us  # (this script's folder is on sys.path)

from hfkit.nn import decode_attention as kernel_module


def main() -> None:
    torch.manual_seed(0)
    B, nh, nkv, D = 1, 32, 8, 64
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; B {B}, {nh} / {nkv} heads, D {D}, bf16; "
          "µs per call")
    for S in (384, 1024, 2048, 4096, 8192):
        layers = []
        for _ in range(16):
            q = torch.randn(B, nh, 1, D, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(B, nkv, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            mask = (torch.arange(S, device="cuda") < S * 3 // 4)[None, None, None]  # (1, 1, 1, S)
            layers.append((q, k, v, mask))
        kernel = lambda q, k, v, mask: kernel_module.decode_attention(q, k, v, mask)
        unsplit = lambda q, k, v, mask: kernel_module.decode_attention(q, k, v, mask, splits=1)
        folded = lambda q, k, v, mask: F.scaled_dot_product_attention(q.view(B, nkv, nh // nkv, D), k, v,
                                                                      attn_mask=mask)
        repeated = lambda q, k, v, mask: F.scaled_dot_product_attention(
            q, k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1), attn_mask=mask)
        q, k, v, mask = layers[0]
        ref = repeated(q, k, v, mask).float()
        error = (kernel(q, k, v, mask).float() - ref).abs().max().item()
        times = {name: per_call_us(fn, layers) for name, fn in
                 (("kernel", kernel), ("kernel unsplit", unsplit), ("SDPA folded", folded),
                  ("SDPA repeated", repeated))}
        print(f"S {S:5d}: " + ", ".join(f"{name} {us:6.2f}" for name, us in times.items())
              + f"; max |kernel - SDPA| {error:.2e}", flush=True)


if __name__ == "__main__":
    main()
