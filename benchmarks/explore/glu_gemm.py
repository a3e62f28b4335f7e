"""Exploration: ModernBERT-base's GeGLU input projection on one packed batch (bf16), alone.

The plain path (cuBLAS's (M, 2304) product, then inductor's act(a) · g kernel: what compile_layers() runs) against
`hfkit.nn.glu_gemm` (both halves' tiles from one tile of x, only act(a) · g written) at its shipped launch and,
with --sweep, at the launch shapes of SWEEP; max |Δ| against the plain path, and ms (CUDA events, medians). The
kernel gains a whole pass ~0.3 ms a layer of traffic; it has to stay within that of cuBLAS's GEMM.

    PYTHONPATH=src python benchmarks/explore/glu_gemm.py [--tokens 130052] [--sweep]
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from hfkit.bench.timing import cuda_median_ms
from hfkit.nn import glu_gemm

SWEEP = [{"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8, "num_warps": w, "num_stages": s}
         for m, n, k, w, s in itertools.product((64, 128), (64, 128), (32, 64), (4, 8), (3, 4))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=130052, help="packed tokens (the 512 texts as one batch)")
    parser.add_argument("--sweep", action="store_true", help="the kernel at every launch shape of SWEEP")
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden, inner = 768, 1152
    layer = nn.Linear(hidden, 2 * inner, bias=False, device="cuda", dtype=torch.bfloat16).requires_grad_(False)
    x = torch.randn(args.tokens, hidden, device="cuda", dtype=torch.bfloat16)
    geglu = torch.compile(lambda h: F.gelu(h[:, :inner]) * h[:, inner:], dynamic=False)  # inductor's kernel
    plain = lambda: geglu(layer(x))
    reference = plain().float()
    flops = 2 * args.tokens * hidden * 2 * inner
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {args.tokens} tokens, {hidden} → 2 × {inner}")
    ms = cuda_median_ms(plain, 20, warmup=5)
    gemm = cuda_median_ms(lambda: layer(x), 20, warmup=5)
    print(f"  plain: cuBLAS + inductor's GeGLU   {ms:.3f} ms (the GEMM alone {gemm:.3f} ms, "
          f"{flops / gemm / 1e9:.0f} TFLOP/s)", flush=True)
    shipped = dict(glu_gemm.LAUNCH)
    glu_gemm.ENABLED = True
    try:
        for launch in [shipped, *(SWEEP if args.sweep else [])]:
            glu_gemm.LAUNCH = launch
            call = lambda: glu_gemm.glu_linear(x, layer, F.gelu)
            label = "/".join(str(launch[k]) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "num_warps", "num_stages"))
            try:
                delta = (call().float() - reference).abs().max().item()
                ms = cuda_median_ms(call, 20, warmup=5)
                print(f"  glu_gemm {label:18s} {ms:.3f} ms ({flops / ms / 1e9:.0f} TFLOP/s); max |Δ| {delta:.2e}",
                      flush=True)
            except Exception as failure:  # noqa: BLE001 — a launch shape the compiler refuses (shared memory)
                print(f"  glu_gemm {label:18s} failed: {type(failure).__name__}: {str(failure).splitlines()[0][:90]}")
    finally:
        glu_gemm.ENABLED, glu_gemm.LAUNCH = False, shipped


if __name__ == "__main__":
    main()
