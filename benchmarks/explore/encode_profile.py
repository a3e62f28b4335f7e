"""Where the compiled unpadded encoder forward spends its time (issue 7 exploration, not a results script).

For bert-base and ModernBERT-base shapes (bf16, random init, the 512 texts of benchmarks/encode_gpu.py) with
`model.compile_layers()`: passes at several token budgets and compile options (CUDA events, medians), then a
kernel profile of one pass grouped into GEMM / flash attention / fused Triton / other.

    PYTHONPATH=src python benchmarks/explore/encode_profile.py [--models bert,modernbert] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import defaultdict

import torch
import transformers

import hfkit
from hfkit.bench.encode_gpu import budget_batches, make_ids, make_lengths, time_pass
from hfkit.bench.timing import cuda_median_ms
from hfkit.nn.attention import PackedBatch, varlen_window_supported

CATEGORIES = (("GEMM", ("gemm", "xmma", "cutlass", "nvjet", "cublas", "sm90", "sm80")), ("flash attention", ("flash",)),
              ("fused Triton", ("triton",)))


COMPILE_VARIANTS = {  # label → compile_layers() options
    "dynamic": {},
    "dynamic, coordinate-descent tuning": {"options": {"coordinate_descent_tuning": True}},
    "dynamic, max-autotune-no-cudagraphs": {"mode": "max-autotune-no-cudagraphs"},
}


def category(name: str) -> str:
    low = name.lower()
    return next((label for label, keys in CATEGORIES if any(k in low for k in keys)), "other")


def profile_pass(forward, inputs) -> str:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        time_pass(forward, inputs)
    totals, kernels = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            us = event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
            totals[category(event.name)] += us
            kernels[event.name][0] += us
            kernels[event.name][1] += 1
    lines = [" | ".join(f"{k} {v / 1e3:.1f} ms" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])),
             f"kernel launches: {sum(n for _, n in kernels.values())}"]
    for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:22]:
        lines.append(f"  {us / 1e3:7.2f} ms  {n:5d}×  [{category(name)}] {name[:110]}")
    return "\n".join(lines)


def attention_windows(batch, config) -> str:
    """varlen_attn alone on one budget batch (bf16, head dim 64): full attention vs sliding windows."""
    packed = PackedBatch.from_mask(batch["attention_mask"])
    n, heads = int(packed.cu_seqlens[-1]), config.num_attention_heads
    q, k, v = (torch.randn(n, heads, config.hidden_size // heads, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = [f"varlen_attn on one batch ({n} tokens, longest {packed.max_len}):"]
    for window in (None, 64, 128, 256):
        kwargs = {} if window is None else {"window_size": (window, window)}
        call = lambda kwargs=kwargs: packed.kernel(q, k, v, packed.cu_seqlens, packed.cu_seqlens, packed.max_len, packed.max_len, **kwargs)
        out.append(f"  window {window}: {cuda_median_ms(call, 20, warmup=5):.3f} ms")
    return "\n".join(out)


def explore(label: str, config, repeats: int) -> None:
    reference = transformers.AutoModel.from_config(config, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model = hfkit.AutoModel.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    del reference
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    lengths = make_lengths()
    seqs, real = make_ids(lengths, config.vocab_size), int(lengths.sum())
    budgets = {b: budget_batches(seqs, pad, b) for b in (16384, 32768, 65536, 131072)}
    plain = list(model.blocks)
    compiled = {}
    for opt, options in COMPILE_VARIANTS.items():
        compiled[opt] = model.compile_layers(**options).blocks
        model.uncompile_layers()

    def run(blocks):
        def forward(batch):
            model.__dict__["blocks"] = blocks
            return model(**batch, unpadded=True).last_hidden_state
        return forward

    variants = [(f"unpadded, budget {b}", run(plain), b) for b in (32768,)]
    variants += [(f"compile_layers({opt}), budget {b}", run(blocks), b) for opt, blocks in compiled.items() for b in budgets
                 if opt == "dynamic" or b in (32768, 131072)]
    times = defaultdict(list)
    with torch.inference_mode():
        for name, fn, b in variants:
            for _ in range(2):
                time_pass(fn, budgets[b])
        for _ in range(repeats):
            for name, fn, b in variants:
                times[name].append(time_pass(fn, budgets[b]))
    print(f"\n## {label}: {real} real tokens; varlen window supported: {varlen_window_supported()}")
    for name, _, b in variants:
        med = statistics.median(times[name])
        print(f"  {name:60s} {len(budgets[b]):3d} batches  {med * 1e3:7.1f} ms  {real / med / 1e6:5.2f} M tok/s")
    print(f"\n### profile: compile_layers(dynamic), budget 32768\n{profile_pass(run(compiled['dynamic']), budgets[32768])}")
    for opt in list(compiled)[1:]:
        print(f"\n### profile: compile_layers({opt}), budget 32768\n{profile_pass(run(compiled[opt]), budgets[32768])}")
    print(attention_windows(budgets[32768][0], config))
    from torch._dynamo.utils import counters

    print("dynamo:", dict(counters["stats"]), "graph breaks:", dict(counters["graph_break"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="bert,modernbert")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    print(torch.cuda.get_device_name(), torch.__version__, transformers.__version__)
    configs = {"bert": ("bert-base", transformers.BertConfig()), "modernbert": ("ModernBERT-base", transformers.ModernBertConfig())}
    for key in args.models.split(","):
        explore(*configs[key], args.repeats)


if __name__ == "__main__":
    main()
