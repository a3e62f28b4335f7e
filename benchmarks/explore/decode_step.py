"""Exploration (not a benchmark of record): where a compiled static-cache decode step spends its time.

(a) generate_tokens end to end; (b) the compiled greedy step (forward, argmax, bookkeeping: what generate replays
per token) alone in a tight loop; (c) the same with q|k|v and gate|up fused into single GEMVs (weights concatenated
in a copy; --fused, bf16 only). --int8: the model under quantize_weights_int8. --before: also the step without
`nn.matvec`'s kernels and with K/V repeated per query head for SDPA in the same process (bf16: cuBLAS / inductor
products; --int8: the int8 step as the third session had it, unstacked layers and inductor's products), and the
shipped step with K/V repeated for SDPA (and, with --attention-kernel, with SDPA's folded query heads instead of
`nn.decode_attention`); --candidates: also the step with each kernel switch of CANDIDATES set against the
default; --profile: the kernels of 50 step replays, and their timeline: the time each kernel moves the step's
finish line, and the GPU's idle time, per kernel and per position in the step (what durations cannot say when
dependent launches overlap the kernels); --options: inductor options added to STEP_OPTIONS, one
variant per argument (KEY=VALUE[,KEY=VALUE]), each compiled afresh in this process, e.g.
`--options "" combo_kernels=True triton.enable_pdl=True`.

    PYTHONPATH=src python benchmarks/explore/decode_step.py [--int8] [--fused] [--candidates] [--profile] [--options ...]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import transformers
from torch import nn

import hfkit
from hfkit.bench.decode_gpu import CANDIDATES, llama_1b_config
from hfkit.bench.timing import only_variants, switched
from hfkit.generation import generate_tokens, static_cache
from hfkit.generation.greedy_static import GreedyState, greedy_step
from hfkit.generation.static_cache import (
    compiled_step,
    prefill_static,
    static_cache_for,
)
from hfkit.models import decoder
from hfkit.nn import decode_attention, matvec
from hfkit.nn.attention import attention, grouped_attention
from hfkit.nn.quantize import Int8WeightLinear, quantize_weights_int8
from hfkit.nn.replace import replace_modules


def loop_ms(fn, n=200) -> float:
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / n)
    return statistics.median(times)


def kernel_table(replay, steps: int = 50) -> str:
    """GPU kernels of `steps` replays: total, launches, the top kernels (per step), then the step's timeline."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            replay()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    spans = []  # (start, end, name) of every kernel, µs
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time_total
            entry[1] += 1
            spans.append((event.time_range.start, event.time_range.end, event.name))
    total = sum(us for us, _ in kernels.values()) / steps
    lines = [f"per step: {total / 1e3:.3f} ms of kernels, {sum(n for _, n in kernels.values()) / steps:.0f} launches"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]:
        lines.append(f"  {us / steps:8.1f} us  {n / steps:5.1f}x  {name[:120]}")
    return "\n".join([*lines, *timeline(sorted(spans), steps)])


def timeline(spans: list[tuple[float, float, str]], steps: int) -> list[str]:
    """Where the replays' wall time goes when kernels overlap (dependent launches start a kernel while the one before
    it runs, so durations include waits and sum to more than the step): in start order, each kernel is charged the
    time by which it moves the finish line past every earlier kernel's end, and idle time is the GPU running nothing
    before it starts. These two sum to the wall time. Per kernel name, then per position in the step (the replays
    launch the same sequence; `steps` of them)."""
    finish, charged, idle, rows = spans[0][0], {}, {}, []
    for start, end, name in spans:
        gap = max(0.0, start - finish)
        extend = max(0.0, end - max(finish, start))
        finish = max(finish, end)
        charged[name] = charged.get(name, 0.0) + extend
        idle[name] = idle.get(name, 0.0) + gap
        rows.append((name, end - start, extend, gap))
    wall = spans[-1][1] - spans[0][0]
    lines = [(f"timeline: {wall / steps:.1f} us a step = {sum(charged.values()) / steps:.1f} us of kernels moving the "
              f"finish line + {sum(idle.values()) / steps:.1f} us idle")]
    for name in sorted(charged, key=lambda n: -charged[n] - idle[n]):
        lines.append(f"  {charged[name] / steps:8.1f} us charged  {idle[name] / steps:6.1f} us idle before  "
                     f"{name[:100]}")
    per_step = len(rows) // steps
    if per_step * steps != len(rows):
        return [*lines, f"  ({len(rows)} kernels in {steps} replays: no common sequence, no positions)"]
    lines.append("position in the step: duration / charged / idle before (us, mean over the replays), kernel")
    for j in range(per_step):
        at = rows[j::per_step]
        duration, extend, gap = (sum(row[i] for row in at) / steps for i in (1, 2, 3))
        lines.append(f"  {j:3d} {duration:7.1f} {extend:7.1f} {gap:6.1f}  {at[0][0][:90]}")
    return lines


def fuse(model) -> None:
    """Experiment: q|k|v and gate|up as one Linear each (copies), so a step runs 4 GEMVs a layer instead of 7."""
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        qkv = torch.nn.Linear(a.q_proj.in_features, sum(a.sizes), bias=False, device="cuda", dtype=torch.bfloat16)
        qkv.weight.data = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        a.__dict__["qkv_proj"] = qkv
        gu = torch.nn.Linear(m.gate_proj.in_features, 2 * m.gate_proj.out_features, bias=False, device="cuda",
                             dtype=torch.bfloat16)
        gu.weight.data = torch.cat([m.gate_proj.weight, m.up_proj.weight])
        m.__dict__["proj_in"] = gu


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--fused", action="store_true", help="also the q|k|v, gate|up variant (bf16 only)")
    parser.add_argument("--before", action="store_true",
                        help="also the step without the matvec kernels (--int8: with the layers unstacked, as before)")
    parser.add_argument("--options", nargs="*", default=[""], help="inductor option sets, one variant each")
    parser.add_argument("--only", help="only the variants whose labels contain one of these '|'-separated parts")
    parser.add_argument("--attention-kernel", action="store_true",
                        help="with --before, also the step with SDPA instead of nn.decode_attention (on by default)")
    parser.add_argument("--candidates", action="store_true",
                        help="also the kernel switches against the default: " + ", ".join(CANDIDATES))
    args = parser.parse_args()
    torch.manual_seed(0)
    config = llama_1b_config()
    reference = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model = hfkit.AutoModelForCausalLM.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    del reference
    before = None
    if args.before and not args.int8:  # the fifth session's bf16 step: cuBLAS / inductor products
        before = model
    if args.before and args.int8:  # the third session's int8 step: unstacked layers, inductor's products
        before = copy.deepcopy(model)
        replace_modules(before, {m: Int8WeightLinear.from_layer(m) for m in before.modules() if type(m) is nn.Linear})
    if args.int8:
        quantize_weights_int8(model)
    ids = torch.randint(5, config.vocab_size - 1, (1, 128), generator=torch.Generator().manual_seed(1)).cuda()
    mask = torch.ones_like(ids)
    variants = [(f"separate projections, options {o or 'as shipped'}", o, lambda: None) for o in args.options]
    if args.candidates:
        variants += [(label, "", lambda: None) for label in CANDIDATES]
    if args.fused and not args.int8:
        variants.append(("fused q|k|v, gate|up", "", lambda: fuse(model)))
    if args.before and args.attention_kernel:
        variants.append(("SDPA, query heads folded (decode_attention off)", "", lambda: None))
        variants.append(("K/V repeated per query head, SDPA", "", lambda: None))
    if before is not None:
        what = "unstacked int8, inductor's products" if args.int8 else "cuBLAS / inductor products"
        variants.append((f"before: {what} (matvec off, K/V repeated)", "", lambda: None))
    picked = only_variants([label for label, _, _ in variants], args.only)
    for label, options, prepare in variants:
        if label not in picked:
            continue
        prepare()
        repeated = label.startswith(("K/V", "before"))
        decode_attention.ENABLED = not label.startswith(("SDPA", "K/V", "before"))
        decoder.grouped_attention = repeated_kv_attention if repeated else grouped_attention
        torch._dynamo.reset()
        static_cache._CHOSEN.clear()
        static_cache._FORMS.clear()
        static_cache.STEP_OPTIONS.clear()
        static_cache.STEP_OPTIONS.update(SHIPPED, **parse_options(options))
        matvec.ENABLED = not label.startswith("before")
        with switched(CANDIDATES.get(label, ())):
            measure(before if label.startswith("before") else model, ids, mask, label, args.profile)


SHIPPED = dict(static_cache.STEP_OPTIONS)


def repeated_kv_attention(q, k, v, mask, dropout_p=0.0, scale=None):
    """Grouped attention as it was before a decode step's query heads were folded onto their key/value head."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)  # (B, nh, S, D)
    return attention(q, k, v, mask, dropout_p=dropout_p, scale=scale)


def parse_options(text: str) -> dict:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {key: {"True": True, "False": False}.get(value, value) for key, value in pairs}


def measure(model, ids, mask, label: str, profile: bool) -> None:
    full = lambda: generate_tokens(model, ids, mask, max_new_tokens=256, eos_token_id=None, cache="static")
    one = lambda: generate_tokens(model, ids, mask, max_new_tokens=1, eos_token_id=None, cache="static")
    compile_start = time.perf_counter()
    for _ in range(2):
        full(), one()
    compile_s = time.perf_counter() - compile_start
    t_full = statistics.median(loop_ms(full, 1) for _ in range(3))
    t_one = statistics.median(loop_ms(one, 1) for _ in range(3))
    per_token = (t_full - t_one) / 255
    kv = static_cache_for(model, 1, 128 + 256, torch.bfloat16, ids.device)
    with torch.inference_mode():
        logits = prefill_static(model, ids, mask, kv)
        step = compiled_step(greedy_step, ids.device)
        no_eos = torch.zeros(0, dtype=torch.long, device="cuda")
        state = GreedyState.for_cache(kv, 1, no_eos)
        state.start(logits, torch.full((1, 1), 127, device="cuda"), no_eos, None)

        def replay():
            step(model, state, kv)
            kv.filled.fill_(128)  # stay inside the cache
            state.count.fill_(1)

        replay_ms = loop_ms(replay)
        torch.cuda.synchronize()
        issued = time.perf_counter()
        for _ in range(200):
            replay()
        issue_ms = (time.perf_counter() - issued) * 1e3 / 200  # host time per step, before the GPU catches up
        torch.cuda.synchronize()
        print(f"host time to issue one step replay: {issue_ms:.3f} ms (GPU-bound if well below the replay time)")
        if profile:
            print(kernel_table(replay))
    print(f"{label}: generate {1 / per_token * 1000:.0f} tok/s ({per_token:.3f} ms/token); compiled step replay "
          f"alone {replay_ms:.3f} ms ({1 / replay_ms * 1000:.0f} /s); warm-up incl. compile {compile_s:.0f} s", flush=True)


if __name__ == "__main__":
    main()
