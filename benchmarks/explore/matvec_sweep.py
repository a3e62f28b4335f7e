"""Exploration: the matrix-vector products of a Llama-3.2-1B decode step (batch 1, bf16 activations), bf16 or int8
weights (this script was `int8_gemv.py` before bf16 weights went through the same kernel).

Per product of a layer as the decode step runs them (q | k | v; gate | up with the SiLU-GLU inside the kernel; o; down;
the LM head): `hfkit.nn.matvec`'s Triton kernel over a sweep of launch configs, against what the decode step ran
before the kernel took these weights (inductor's compiled products, coordinate-descent tuned, one per unstacked layer,
the GLU's SiLU·up fused by inductor; int8: `F.linear(x, w.to(bf16)) * s`) and cuBLAS bf16 on the stacked weight.
Weights: bf16 as the model holds them (q, k, v and gate, up separate tensors, the kernel reads them side by side);
int8 as `quantize_weights_int8` stacks them (one tensor each, per-row scales). Each timing replays 200 calls captured
in a CUDA graph, cycling through copies of the weights totalling > 200 MB, so every call streams from HBM as in a
real step (the H100's 50 MB L2 would otherwise hold small weights). Prints µs per product and bytes per second.

--fused: the forms of matvec.FUSED_NORMS, swept the same way — q | k | v and gate | up with the layer's RMSNorm
inside (norm=(g, eps)), o and down with the residual addition inside — and "before" is then the step without them:
inductor's add + RMSNorm kernel followed by the shipped product (q | k | v, gate | up), the shipped product alone
(o, down: their addition is in that kernel). The per-step totals compare a layer's products with and without the
norms inside.

    PYTHONPATH=src python benchmarks/explore/matvec_sweep.py [--weights bf16|int8] [--quick] [--fused]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math

import torch
import torch.nn.functional as F
import triton

from hfkit.nn import matvec

# (label, stacked weight rows, K, GLU?, the unstacked products' rows); with --fused, a norm before q | k | v and
# gate | up, the residual addition after o and down
PRODUCTS = [("down", 2048, 8192, False, (2048,)), ("o", 2048, 2048, False, (2048,)),
            ("lm head", 128256, 2048, False, (128256,)), ("gate|up + SiLU", 16384, 2048, True, (8192, 8192)),
            ("q|k|v", 3072, 2048, False, (2048, 512, 512))]


def per_call_us(fn, operands: list, calls: int = 200) -> float:
    """Kernel time per call: `calls` calls captured in one CUDA graph (no host launch cost), median of 7 replays."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compilation) outside the capture
        for i in range(3):
            fn(*operands[i % len(operands)])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(*operands[i % len(operands)])
    times = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return sorted(times)[3]


def sweep(glu: bool) -> list[dict]:
    """Launch shapes with 32–64 float32 per-lane sums per thread: fewer starve, more spill. Tiles up to 8192
    columns: the down projection's whole row in one tile, every weight load issued at once."""
    shapes = itertools.product((1, 2, 4, 8, 16, 32), (128, 256, 512, 1024, 2048, 4096, 8192), (2, 4, 8))
    return [{"BLOCK_N": bn, "BLOCK_K": bk, "num_warps": w} for bn, bk, w in shapes
            if 32 <= bn * bk // (32 * w) * (1 + glu) <= 64 and bn * bk // (32 * w) <= 64]


def weights_for(kind: str, n: int, k: int, glu: bool, parts: tuple) -> tuple[list, list | None, list]:
    """(the kernel's weights, its scales or None, the unstacked products' (weight, scale or None) for `before`)."""
    bounds = list(itertools.pairwise(itertools.accumulate(parts, initial=0)))
    if kind == "bf16":
        split = [torch.randn(b - a, k, device="cuda", dtype=torch.bfloat16) / 40 for a, b in bounds]
        return split, None, [(w, None) for w in split]
    w = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8)
    s = torch.rand(n, device="cuda", dtype=torch.bfloat16) / 100
    kernel_w, kernel_s = (list(w.chunk(2)), list(s.chunk(2))) if glu else ([w], [s])
    return kernel_w, kernel_s, [(w[a:b], s[a:b]) for a, b in bounds]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", choices=("bf16", "int8"), default="bf16")
    parser.add_argument("--quick", action="store_true", help="only the shipped config per product")
    parser.add_argument("--fused", action="store_true", help="the norms and residual additions inside the kernels")
    args = parser.parse_args()
    torch.manual_seed(0)
    lin = lambda x, w, s: F.linear(x, w.to(x.dtype)) if s is None else F.linear(x, w.to(x.dtype)) * s
    tuned = {"coordinate_descent_tuning": True}
    inductor = torch.compile(lambda x, ws: [lin(x, w, s) for w, s in ws], options=tuned, dynamic=False)
    inductor_glu = torch.compile(lambda x, ws: F.silu(lin(x, *ws[0])) * lin(x, *ws[1]), options=tuned, dynamic=False)
    add_norm = torch.compile(lambda r, y, g: rms_norm(r + y, g), options=tuned, dynamic=False)  # the decoder's
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; batch 1, bf16 x, "
          f"{args.weights} weights")
    total = {"shipped": 0.0, "best": 0.0, "before": 0.0, "cublas": 0.0}
    size = 2 if args.weights == "bf16" else 1
    for label, n, k, glu, parts in PRODUCTS:
        copies = max(2, math.ceil(200e6 / (n * k * size)))
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        sets = [weights_for(args.weights, n, k, glu, parts) for _ in range(copies)]
        kernel_ops = [(x, ws, ss) for ws, ss, _ in sets]
        before_ops = [(x, unstacked) for _, _, unstacked in sets]
        bf16 = [(x, torch.randn(n, k, device="cuda", dtype=torch.bfloat16)) for _ in range(copies)]
        act, out_rows = (matvec.SILU, n // 2) if glu else (0, n)
        g, r = torch.rand(k, device="cuda", dtype=torch.bfloat16) + 0.5, torch.randn_like(x)
        norm = (g, EPS) if args.fused and label in ("q|k|v", "gate|up + SiLU") else None
        added = args.fused and label in ("o", "down")
        residual = torch.randn(1, out_rows, device="cuda", dtype=torch.bfloat16) if added else None
        kernel = functools.partial(launcher, act, norm=norm, residual=residual)  # config → the kernel at it
        ref = torch.cat([lin(x.double() if norm is None else rms_norm(x, g).double(), w.double(),
                             None if s is None else s.double()) for w, s in sets[0][2]], -1)
        if glu:
            gate, up = ref.chunk(2, dim=-1)
            ref = F.silu(gate) * up
        if residual is not None:
            ref = ref + residual.double()
        shipped = matvec.config_for(out_rows, k, glu=glu)
        rates = {}
        for config in [shipped] if args.quick else [shipped, *sweep(glu)]:
            if config["BLOCK_K"] > triton.next_power_of_2(k):
                continue
            out = kernel(config)(*kernel_ops[0]).double()
            assert ((out - ref).norm() / ref.norm()).item() < (8e-3 if args.fused else 4e-3), config  # a rounding more
            rates[tuple(config.values())] = per_call_us(kernel(config), kernel_ops)
        best = min(rates, key=rates.get)
        if args.fused:  # the step without the fused forms: add + norm first (q | k | v, gate | up), then the product
            plain = launcher(act, None)
            before = per_call_us(plain if norm is None else after_add_norm(add_norm, r, g, plain), kernel_ops)
        else:
            before = per_call_us(inductor_glu if glu else inductor, before_ops)
        cublas = per_call_us(F.linear, bf16)
        mb = n * k * size / 1e6
        here = rates[tuple(shipped.values())]
        for key, value in (("shipped", here), ("best", rates[best]), ("before", before), ("cublas", cublas)):
            total[key] += value * (1 if label == "lm head" else 16)
        print(f"{label:15s} ({n}, {k}) {args.weights} {mb:6.1f} MB: shipped {here:7.2f} us ({mb / here:.2f} TB/s) "
              f"{tuple(shipped.values())}; best {rates[best]:7.2f} us ({mb / rates[best]:.2f} TB/s) {best}; "
              f"before ({'unfused' if args.fused else 'inductor'}, {len(parts)} product(s)) {before:7.2f} us "
              f"({mb / before:.2f} TB/s); "
              f"cuBLAS bf16 {cublas:7.2f} us ({2 * n * k / 1e6 / cublas:.2f} TB/s)", flush=True)
        if not args.quick:
            print("   top 5: " + "; ".join(f"{c} {rates[c]:.2f}" for c in sorted(rates, key=rates.get)[:5]))
    print("per step (16 layers + LM head), products only: " + ", ".join(f"{key} {value / 1e3:.3f} ms"
                                                                       for key, value in total.items()))


EPS = 1e-5


def launcher(act: int, config: dict | None, norm: tuple | None = None, residual: torch.Tensor | None = None):
    """matvec's kernel at `config` (None: the shipped one) as a function of (x, weights, scales)."""
    return lambda x, weights, scales: matvec._launch(x, weights, scales, None, act, config, norm, residual)


def after_add_norm(add_norm, r: torch.Tensor, g: torch.Tensor, product):
    """The step without the norm inside: add_norm(r, x, g) (one kernel), then `product` of it."""
    return lambda x, weights, scales: product(add_norm(r, x, g), weights, scales)


def rms_norm(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A decoder's RMSNorm: float32 x / rms(x), rounded to x's dtype, times g (hfkit.nn.norms.RMSNorm)."""
    return g * (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype)


if __name__ == "__main__":
    main()
