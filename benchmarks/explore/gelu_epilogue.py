"""Exploration: the feed-forward input projection + GELU of bert-base on 32768 packed tokens (bf16, H100).

(a) addmm then F.gelu (erf), eager; (b) the same under torch.compile (dynamic, with and without coordinate-descent
tuning); (c) `torch._addmm_activation(use_gelu=True)`: cuBLASLt's GELU epilogue (the tanh approximation) in the GEMM
itself. Medians of CUDA-event timings; max abs error of each against a float32 erf-GELU of the same inputs.

    PYTHONPATH=src python benchmarks/explore/gelu_epilogue.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hfkit.bench.timing import cuda_median_ms


def main() -> None:
    torch.manual_seed(0)
    n, hidden, inner = 32768, 768, 3072
    x = torch.randn(n, hidden, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(inner, hidden, device="cuda", dtype=torch.bfloat16) * hidden**-0.5
    bias = torch.randn(inner, device="cuda", dtype=torch.bfloat16) * 0.1
    truth = F.gelu(torch.addmm(bias.float(), x.float(), weight.float().T))

    plain = lambda x: F.gelu(torch.addmm(bias, x, weight.T))
    compiled = torch.compile(plain, dynamic=True)
    tuned = torch.compile(plain, dynamic=True, options={"coordinate_descent_tuning": True})
    epilogue = lambda x: torch._addmm_activation(bias, x, weight.T, use_gelu=True)
    variants = {"(a) addmm + F.gelu, eager": plain, "(b) torch.compile(dynamic)": compiled,
                "(b) torch.compile(dynamic) + coordinate-descent tuning": tuned,
                "(c) _addmm_activation(use_gelu=True) (cuBLASLt epilogue)": epilogue,
                "addmm alone (no GELU)": lambda x: torch.addmm(bias, x, weight.T)}
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: ({n}, {hidden}) @ ({hidden}, {inner}) + bias, GELU")
    for name, fn in variants.items():
        ms = cuda_median_ms(lambda fn=fn: fn(x), 50, warmup=5)
        err = (fn(x).float() - truth).abs().max().item() if "alone" not in name else float("nan")
        print(f"  {name:60s} {ms:6.3f} ms   max |err| vs float32 erf-GELU {err:.4f}")
    for rows in (32465, 31999):  # token counts that are not multiples of 16
        ms = {name: cuda_median_ms(lambda fn=fn, rows=rows: fn(x[:rows]), 50, warmup=5)
              for name, fn in variants.items() if "(b)" in name}
        print(f"  rows {rows}: " + ", ".join(f"{k.split(')')[0]}) {v:.3f} ms" for k, v in ms.items()))


if __name__ == "__main__":
    main()
