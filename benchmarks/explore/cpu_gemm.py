"""Exploration: how fast this CPU multiplies matrices in float32, bfloat16, float16 and int8 (`torch._int_mm`), at
all-MiniLM-L6-v2's feed-forward shape (4096 tokens × 384 → 1536), and what `hfkit.cpu_support` concludes.

Why it exists: bfloat16 and int8 are only faster than float32 on CPUs with instructions for them; without them the
opt-in CPU paths are several times slower, and hfkit warns (see cpu_support.py). Median of 10 calls after 3.

    python benchmarks/explore/cpu_gemm.py [--tokens 4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hfkit.bench.embed_cpu import cpu_features
from hfkit.cpu_support import missing_instructions


def gflops(fn, flops: float, runs: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flops / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=4096)
    args = parser.parse_args()
    M, K, N = args.tokens, 384, 1536
    flops = 2 * M * K * N
    torch.manual_seed(0)
    x, w = torch.randn(M, K), torch.randn(N, K)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        xd, wd = x.to(dtype), w.to(dtype)
        rates[str(dtype).removeprefix("torch.")] = gflops(lambda xd=xd, wd=wd: F.linear(xd, wd), flops)
    xi = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    wi = torch.randint(-127, 128, (K, N), dtype=torch.int8)
    rates["int8 (torch._int_mm)"] = gflops(lambda: torch._int_mm(xi, wi), flops)
    flags = ", ".join(cpu_features()) or "none read"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flags: {flags}")
    print(f"shape ({M}, {K}) x ({K}, {N})")
    print("| dtype | GFLOP/s | × float32 |\n|---|---:|---:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / rates['float32']:.2f} |")
    for kind in ("bfloat16", "int8"):
        missing = missing_instructions(kind)
        print(f"cpu_support: {kind} " + (f"emulated (no {missing})" if missing else "native (or not judged)"))


if __name__ == "__main__":
    main()
