"""Encoder forward throughput on one CUDA GPU, bf16, random init: padded vs length-sorted vs unpadded (varlen).

bert-base and ModernBERT-base shapes; 512 texts of lengths uniform in 16..512 (seeded), batch 64. Each variant
runs all 512 texts once per timed pass (CUDA events around the pass, inputs already on the GPU); passes run
round-robin across variants after warm-up; the median pass gives real (non-pad) tokens per second. Both
libraries run in this one process on the same inputs.

    PYTHONPATH=src python benchmarks/encode_gpu.py [--repeats 7] [--models bert,modernbert]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile

import torch
import transformers

import hfkit
from hfkit.nn import fused_linear

from .timing import switched

TEXTS, BATCH, MIN_LEN, MAX_LEN, SEED = 512, 64, 16, 512, 0
TOKEN_BUDGET = 32768  # real tokens per token-budget batch (sorted by length, filled greedily)
LARGE_BUDGET = 131072  # all 512 texts in one batch: fewer launches and host syncs (the GPU has the memory)
EXPLORED = ((fused_linear, "RESIDUAL_EPILOGUE"),)  # --explore: (module, flag) switches off by default, each set True


def make_lengths() -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED)
    return torch.randint(MIN_LEN, MAX_LEN + 1, (TEXTS,), generator=gen)


def make_ids(lengths: torch.Tensor, vocab: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    return [torch.randint(5, vocab - 1, (int(n),), generator=gen) for n in lengths]


def pad_batch(seqs: list[torch.Tensor], pad: int) -> dict[str, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)], mask[row, :len(s)] = s, 1
    return {"input_ids": ids.cuda(), "attention_mask": mask.cuda()}


def batches(seqs, order, pad, size=BATCH):
    return [pad_batch([seqs[i] for i in order[start:start + size]], pad) for start in range(0, len(order), size)]


def budget_batches(seqs, pad, budget=TOKEN_BUDGET):
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out, current, tokens = [], [], 0
    for i in order:
        if current and tokens + len(seqs[i]) > budget:
            out.append(current)
            current, tokens = [], 0
        current.append(seqs[i])
        tokens += len(seqs[i])
    out.append(current)
    return [pad_batch(group, pad) for group in out]


def time_pass(fn, inputs) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for batch in inputs:
        fn(batch)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3  # seconds


def bench_model(name: str, config, repeats: int, explore: bool = False, profile: bool = False) -> list[tuple]:
    reference = transformers.AutoModel.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        ours = hfkit.AutoModel.from_pretrained(tmp, dtype="bfloat16", device="cuda")
        exact = hfkit.AutoModel.from_pretrained(tmp, dtype="float32", device="cuda")  # ground truth for the diffs
    reference = reference.cuda().eval()
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    lengths = make_lengths()
    seqs = make_ids(lengths, config.vocab_size)
    real_tokens = int(lengths.sum())
    unsorted = list(range(TEXTS))
    by_length = sorted(unsorted, key=lambda i: -len(seqs[i]))
    inputs = {"unsorted": batches(seqs, unsorted, pad), "sorted": batches(seqs, by_length, pad),
              "budget": budget_batches(seqs, pad), "large budget": budget_batches(seqs, pad, LARGE_BUDGET)}
    padded_tokens = {k: sum(b["input_ids"].numel() for b in v) for k, v in inputs.items()}

    def hf(batch):
        return reference(**batch).last_hidden_state

    def hfkit_mode(unpadded):
        return lambda batch: ours(**batch, unpadded=unpadded).last_hidden_state

    variants = [
        ("transformers SDPA, padded, unsorted", hf, "unsorted"),
        ("transformers SDPA, padded, length-sorted", hf, "sorted"),
        ("hfkit padded, length-sorted", hfkit_mode(False), "sorted"),
        ("hfkit unpadded (varlen), unsorted", hfkit_mode(True), "unsorted"),
        ("hfkit unpadded (varlen), length-sorted", hfkit_mode(True), "sorted"),
        (f"hfkit unpadded (varlen), token budget {TOKEN_BUDGET}", hfkit_mode(True), "budget"),
        ("hfkit automatic (unpadded=None), unsorted", hfkit_mode(None), "unsorted"),
    ]
    compiled_blocks, plain_blocks = ours.compile_layers().blocks, ours.uncompile_layers().blocks

    def compiled_layers(batch):  # model.compile_layers(): each layer under torch.compile, varlen attention inside
        ours.__dict__["blocks"] = compiled_blocks
        try:
            return ours(**batch, unpadded=True).last_hidden_state
        finally:
            ours.__dict__["blocks"] = plain_blocks

    budgets = {"unsorted": "unsorted", "budget": f"token budget {TOKEN_BUDGET}", "large budget": f"token budget {LARGE_BUDGET}"}
    variants += [(f"hfkit unpadded + compile_layers(), {label}", compiled_layers, key) for key, label in budgets.items()]
    if explore:  # the switches built and off by default, each on the compiled layers at the large budget
        for module, flag in EXPLORED:
            def switched_on(batch, switch=((module, flag, True),)):
                with switched(switch):
                    return compiled_layers(batch)
            variants.append((f"[explore] compile_layers() + {flag}, token budget {LARGE_BUDGET}", switched_on,
                             "large budget"))
    with torch.inference_mode():
        # equality at real tokens: hfkit unpadded vs hfkit padded vs transformers, first sorted batch
        batch = inputs["sorted"][0]
        keep = batch["attention_mask"].bool()
        a, b, c = (f(batch)[keep].float() for f in (hfkit_mode(True), hfkit_mode(False), hf))
        tf32, torch.backends.cuda.matmul.allow_tf32 = torch.backends.cuda.matmul.allow_tf32, False
        truth = exact(**batch, unpadded=False).last_hidden_state[keep]
        torch.backends.cuda.matmul.allow_tf32 = tf32
        del exact
        d = compiled_layers(batch)[keep].float()
        diffs = {"hfkit compile_layers() vs hfkit unpadded": (d - a).abs().max().item(),
                 "hfkit unpadded vs hfkit padded": (a - b).abs().max().item(),
                 "hfkit padded vs transformers": (b - c).abs().max().item(),
                 "vs float32 (no TF32): hfkit compile_layers()": (d - truth).abs().max().item(),
                 "hfkit unpadded": (a - truth).abs().max().item(),
                 "hfkit padded": (b - truth).abs().max().item(), "transformers": (c - truth).abs().max().item(),
                 "|float32| max": truth.abs().max().item()}
        for _, fn, key in variants:  # warm-up: two passes each
            for _ in range(2):
                time_pass(fn, inputs[key])
        times = {label: [] for label, _, _ in variants}
        for _ in range(repeats):  # round-robin
            for label, fn, key in variants:
                times[label].append(time_pass(fn, inputs[key]))
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch.inference_mode(), torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            time_pass(hfkit_mode(True), inputs["sorted"])
        averages = prof.key_averages()
        for key in ("self_device_time_total", "self_cuda_time_total"):
            try:
                table = averages.table(sort_by=key, row_limit=18, max_name_column_width=70)
                break
            except Exception:  # noqa: BLE001 - the column's name differs across torch versions
                table = "(no table)"
        print(f"\n#### profile: {name}, hfkit unpadded, one sorted pass\n{table}")
    rows = []
    for label, _, key in variants:
        med = statistics.median(times[label])
        spread = (max(times[label]) - min(times[label])) / med
        rows.append((name, label, len(inputs[key]), real_tokens / padded_tokens[key], med * 1e3, real_tokens / med / 1e6, spread))
    del reference, ours
    torch.cuda.empty_cache()
    return rows, diffs, real_tokens


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="bert,modernbert")
    parser.add_argument("--explore", action="store_true", help="also each switch of EXPLORED on, compiled layers")
    parser.add_argument("--profile", action="store_true", help="print a kernel profile of one unpadded pass")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    configs = {"bert": ("bert-base (shape)", transformers.BertConfig()),
               "modernbert": ("ModernBERT-base (shape)", transformers.ModernBertConfig())}
    lines = [f"### Encoder forward on GPU: bert-base / ModernBERT-base shapes, bf16, {TEXTS} texts of {MIN_LEN}–{MAX_LEN} tokens, batch {BATCH}",
             "",
             f"{datetime.date.today()} · {torch.cuda.get_device_name()} · torch {torch.__version__} · transformers "
             f"{transformers.__version__} · `PYTHONPATH=src python benchmarks/encode_gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
             ""]
    all_rows, notes = [], []
    for key in args.models.split(","):
        label, config = configs[key]
        rows, diffs, real = bench_model(label, config, args.repeats, args.explore, args.profile)
        all_rows += rows
        notes.append(f"{label}: {real} real tokens; bf16 max abs diff at real tokens (first sorted batch): "
                     + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items()))
    lines += ["| model | implementation | batches | real / padded tokens | ms per 512 texts (median) | real M tok/s | spread |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for model, impl, nb, density, ms, rate, spread in all_rows:
        lines.append(f"| {model} | {impl} | {nb} | {density:.2f} | {ms:.1f} | {rate:.2f} | {spread:.1%} |")
    lines += ["", f"Median of {args.repeats} timed passes over all 512 texts each, after 2 warm-up passes, round-robin; "
              "CUDA events; spread = (max − min) / median.", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench.md"), "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
