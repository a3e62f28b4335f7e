"""Exploration (not a benchmark of record): where the compiled Llama-3.2-1B-shaped training step spends its time.

The step of `benchmarks/train_gpu.py` (B8 × S1024, bf16 autocast, clip 1.0, fused AdamW) on hfkit's model under
torch.compile, one variant per `--variants` entry, each compiled afresh in this process: comma-separated words,
`default`, `eager` (not compiled), `clipped-adamw` (hfkit's ClippedAdamW: the clip's scale fused into a compiled
multi-tensor AdamW update that never writes the clipped gradients) and inductor options KEY=VALUE. (A
`bf16-weights` variant, bf16 shadows of float32 masters updated inside ClippedAdamW, measured 1 % faster on
2026-12-07 and was removed: RESULTS.md.)
For each: the whole step, and its parts timed apart (forward + backward, clip, optimizer); `--profile` adds the
GPU kernels of 3 steps grouped (GEMM, attention, inductor's fused kernels, optimizer and clip, other) and the GPU's
idle gaps between kernels (each step synchronised, as the timing does).

    PYTHONPATH=src python benchmarks/explore/train_step.py [--variants default eager ...] [--profile]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import torch
import transformers

import hfkit
from hfkit.bench.timing import cuda_median_ms
from hfkit.bench.train_gpu import (
    batches,
    benchmark_optimizer,
    forward_backward,
    llama_config,
    train_step,
)

GROUPS = (("GEMM", ("nvjet", "gemm", "cutlass", "xmma")), ("attention", ("fmha", "flash", "cudnn", "attention")),
          ("optimizer / clip", ("multi_tensor", "foreach", "adam")), ("inductor fused", ("triton",)))


def group_of(name: str) -> str:
    lower = name.lower()
    return next((group for group, keys in GROUPS if any(k in lower for k in keys)), "other")


def kernel_groups(step, steps: int = 3) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
            torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    per_group, launches = collections.Counter(), collections.Counter()
    for e in kernels:
        per_group[group_of(e.key)] += e.self_device_time_total / 1000 / steps
        launches[group_of(e.key)] += e.count / steps
    lines = [f"  {g:18s} {ms:7.2f} ms/step  {launches[g]:6.0f} launches" for g, ms in per_group.most_common()]
    lines.append(f"  {'total':18s} {sum(per_group.values()):7.2f} ms/step")
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:14]
    lines += [f"    {e.self_device_time_total / 1000 / steps:7.2f} ms {e.count // steps:5d}x  {e.key[:100]}"
              for e in top]
    return "\n".join(lines + idle_gaps(prof, steps))


def idle_gaps(prof, steps: int, top: int = 10) -> list[str]:
    """GPU time with no kernel running inside each step (between its first and last kernel), and the largest gaps."""
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type.name == "CUDA")
    if not kernels:
        return ["  (the profiler recorded no CUDA kernel events)"]
    gaps, busy_until, previous = [], kernels[0][1], kernels[0][2]
    for start, end, name in kernels[1:]:
        if start > busy_until:
            gaps.append((start - busy_until, previous, name))
        if end > busy_until:
            busy_until, previous = end, name
    within = [g for g in gaps if g[0] < 20_000]  # longer ones are the host's sync between steps
    idle_ms = sum(g[0] for g in within) / 1000 / steps
    lines = [f"  idle inside steps {idle_ms:7.2f} ms/step in {len(within) / steps:.0f} gaps; largest:"]
    lines += [f"    {us / 1000:6.2f} ms after {before[:60]} / before {after[:60]}"
              for us, before, after in sorted(within, reverse=True)[:top]]
    return lines


def run_variant(variant: str, directory: Path, data: list[dict], steps: int, profile: bool) -> None:
    words = variant.split(",")
    options = {k: {"True": True, "False": False}.get(v, v) for k, v in (w.split("=", 1) for w in words if "=" in w)}
    torch._dynamo.reset()
    model = hfkit.AutoModelForCausalLM.from_pretrained(directory).cuda()
    clipped = "clipped-adamw" in words
    if "eager" not in words:
        model = torch.compile(model, options=options or None)
    model.train()
    batch = iter(range(10 ** 9))
    next_batch = lambda: data[next(batch) % len(data)]
    optimizer = benchmark_optimizer(model, clipped)
    step = lambda: train_step(model, next_batch(), optimizer)
    for _ in range(8):
        step()
    whole = cuda_median_ms(step, steps)
    fb = cuda_median_ms(lambda: (optimizer.zero_grad(set_to_none=True), forward_backward(model, next_batch())), steps)
    if clipped:  # one step: its clip and update are timed together, by difference
        parts = f"clip + AdamW {whole - fb:5.2f} ms (the difference)"
    else:
        clip = cuda_median_ms(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), steps)
        adamw = cuda_median_ms(optimizer.step, steps)
        optimizer.zero_grad(set_to_none=True)
        parts = f"clip {clip:5.2f}, AdamW {adamw:5.2f} ms"
    tokens = data[0]["input_ids"].numel()
    print(f"{variant:40s} step {whole:7.2f} ms ({tokens / whole:5.1f} k tok/s); forward+backward {fb:7.2f}, {parts}",
          flush=True)
    if profile:
        print(kernel_groups(step), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=["default", "eager"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    directory = Path(tempfile.mkdtemp()) / "llama"
    config = llama_config()
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    data = [{k: v for k, v in b.items() if k != "attention_mask"} for b in batches("llama", config, 4, 8, 1024)]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; Llama-3.2-1B shape, B8 × S1024")
    for variant in args.variants:
        run_variant(variant, directory, data, args.steps, args.profile)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
