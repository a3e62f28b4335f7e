"""Exploration: ModernBERT's sliding-window layers on packed batches (bf16, 12 heads of 64, window 64 each side).

(a) Attention alone on the first batch of the encoder benchmark's token budgets (the 512 texts of 16–512 tokens):
varlen_attn with window_size (what the local layers ran before), `hfkit.nn.window_attention` at two query-block
sizes, and varlen_attn without a window (the global layers) for scale; max |kernel - varlen| per variant.
(b) The ModernBERT-base-shaped encoder, unpadded with compile_layers(), whole passes over the 512 texts: the
window kernel on and off in the same process (CUDA events, medians, round-robin).

    PYTHONPATH=src python benchmarks/explore/window_attention.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
import transformers

import hfkit
from hfkit.bench.encode_gpu import (
    LARGE_BUDGET,
    TOKEN_BUDGET,
    budget_batches,
    make_ids,
    make_lengths,
    time_pass,
)
from hfkit.bench.timing import cuda_median_ms
from hfkit.nn import window_attention
from hfkit.nn.attention import PackedBatch


def attention_alone(batch: dict, heads: int = 12, head_dim: int = 64, window: int = 64) -> None:
    packed = PackedBatch.from_mask(batch["attention_mask"]).windowed(window)
    n, longest, cu = int(packed.cu_seqlens[-1]), packed.max_len, packed.cu_seqlens
    qkv = torch.randn(n, 3, heads, head_dim, device="cuda", dtype=torch.bfloat16)  # as the model's q | k | v view
    q, k, v = qkv.unbind(1)
    varlen = lambda **kw: packed.kernel(q, k, v, cu, cu, longest, longest, **kw)
    reference = varlen(window_size=(window, window)).float()
    variants = {"varlen_attn, window": lambda: varlen(window_size=(window, window)), "varlen_attn, full": varlen}
    for block_m in (64, 128):
        variants[f"kernel, {block_m} queries a program"] = (
            lambda block_m=block_m: window_attention.window_attention(q, k, v, packed.rows, window, head_dim ** -0.5,
                                                                      block_m))
    print(f"attention alone, {n} tokens (longest {longest}), {heads} heads of {head_dim}, window {window}:")
    for label, call in variants.items():
        error = "" if "full" in label else f"; max |Δ| vs varlen window {(call().float() - reference).abs().max():.2e}"
        print(f"  {label:34s} {cuda_median_ms(call, 20, warmup=5):.3f} ms{error}", flush=True)


def whole_passes(repeats: int) -> None:
    config = transformers.ModernBertConfig()
    reference = transformers.AutoModel.from_config(config, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model = hfkit.AutoModel.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    del reference
    lengths = make_lengths()
    seqs, real = make_ids(lengths, config.vocab_size), int(lengths.sum())
    inputs = {b: budget_batches(seqs, config.pad_token_id, b) for b in (TOKEN_BUDGET, LARGE_BUDGET)}
    model.compile_layers()

    def forward(kernel: bool):
        def run(batch):
            window_attention.ENABLED = kernel
            return model(**batch, unpadded=True).last_hidden_state
        return run

    variants = [(f"{'kernel' if kernel else 'varlen_attn'} windows, budget {b}", forward(kernel), b)
                for b in inputs for kernel in (True, False)]
    with torch.inference_mode():
        batch = inputs[TOKEN_BUDGET][0]
        keep = batch["attention_mask"].bool()
        diff = (forward(True)(batch)[keep].float() - forward(False)(batch)[keep].float()).abs().max().item()
        times = {label: [] for label, _, _ in variants}
        for _ in range(2):
            for label, fn, b in variants:
                time_pass(fn, inputs[b])
        for _ in range(repeats):
            for label, fn, b in variants:
                times[label].append(time_pass(fn, inputs[b]))
    print(f"ModernBERT-base shape, compile_layers(), {real} real tokens; max |kernel - varlen| at real tokens "
          f"(first batch) {diff:.3g}")
    for label, _, b in variants:
        med = statistics.median(times[label])
        print(f"  {label:40s} {len(inputs[b]):2d} batches {med * 1e3:7.1f} ms  {real / med / 1e6:5.2f} M tok/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    seqs = make_ids(make_lengths(), 50368)
    for budget in (TOKEN_BUDGET, LARGE_BUDGET):
        attention_alone(budget_batches(seqs, 0, budget)[0])
    whole_passes(args.repeats)


if __name__ == "__main__":
    main()
