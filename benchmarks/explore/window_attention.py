"""Exploration: ModernBERT's sliding-window layers on packed batches (bf16, 12 heads of 64, window 64 each side).

(a) Attention alone on the first batch of the encoder benchmark's token budgets (the 512 texts of 16–512 tokens),
q, k, v as views of one (N, 3, H, D) tensor as the layers have them: varlen_attn with window_size (what the local
layers ran before the kernel), `hfkit.nn.window_attention` with RoPE inside and with apply_rope before it, and
varlen_attn without a window (the global layers) for scale; max |Δ| against varlen with a window. --sweep: the
kernel (RoPE inside) at every launch shape of SWEEP, and the kernel after apply_rope at those of PLAIN_SWEEP.
(b) The ModernBERT-base-shaped encoder, unpadded with compile_layers(), whole passes over the 512 texts as one
batch: the kernel with RoPE inside (`window_attention.ROTATES`, shipped), the kernel after apply_rope, each also at
three pipeline stages (`window_attention.STAGES`, shipped 1), varlen_attn windows, and the shipped pass with the
residual sums inside the GEMMs (`fused_linear.RESIDUAL_EPILOGUE`), with 32 keys a step (`window_attention.BLOCK_N`)
and with one head's query blocks first (`HEADS_FIRST` off; in (a) too); in the same process (CUDA events, medians,
round-robin).

    PYTHONPATH=src python benchmarks/explore/window_attention.py [--repeats 7] [--sweep]
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
from hfkit.bench.timing import cuda_median_ms, switched
from hfkit.nn import fused_linear, window_attention
from hfkit.nn.attention import PackedBatch
from hfkit.nn.rope import apply_rope, rope_tables

SWEEP = [(block_m, block_n, warps, stages) for block_m in (32, 64, 128) for block_n in (32, 64, 128)
         for warps in (4, 8) for stages in (1, 2, 3)]
PLAIN_SWEEP = [(block_m, block_n, 4, stages) for block_m in (64, 128) for block_n in (32, 64) for stages in (1, 2, 3)]


def attention_alone(batch: dict, sweep: bool, heads: int = 12, head_dim: int = 64, window: int = 64) -> None:
    packed = PackedBatch.from_mask(batch["attention_mask"]).windowed(window)
    n, longest, cu = int(packed.cu_seqlens[-1]), packed.max_len, packed.cu_seqlens
    qkv = torch.randn(n, 3, heads, head_dim, device="cuda", dtype=torch.bfloat16)  # as the model's q | k | v view
    q, k, v = qkv.unbind(1)
    cos, sin = rope_tables(head_dim, 10000.0, packed.indices % packed.shape[1], torch.bfloat16)  # (N, D)
    qr, kr = apply_rope(q, k, cos, sin)
    varlen = lambda **kw: packed.kernel(qr, kr, v, cu, cu, longest, longest, **kw)
    reference = varlen(window_size=(window, window)).float()
    scale = head_dim ** -0.5
    variants = {"varlen_attn, window (after apply_rope)": lambda: varlen(window_size=(window, window)),
                "varlen_attn, full (after apply_rope)": varlen,
                "kernel, RoPE inside": lambda: window_attention.window_attention(q, k, v, packed.rows, window, scale,
                                                                                 cos=cos, sin=sin),
                "apply_rope, then kernel": lambda: window_attention.window_attention(
                    *apply_rope(q, k, cos, sin), v, packed.rows, window, scale)}
    shipped = variants["kernel, RoPE inside"]
    for order in (window_attention.HEADS_FIRST, not window_attention.HEADS_FIRST):  # the shipped order again, the other
        variants[f"kernel, RoPE inside, heads first {order}"] = lambda h=order: window_attention.launch(
            q, k, v, packed.rows, window, scale, cos, sin, heads_first=h)
    if sweep:
        for block_m, block_n, warps, stages in SWEEP:
            variants[f"kernel, RoPE inside, {block_m}/{block_n}/{warps} warps/{stages} stages"] = (
                lambda c=(block_m, block_n, warps, stages): window_attention.launch(q, k, v, packed.rows, window,
                                                                                    scale, cos, sin, *c))
        for block_m, block_n, warps, stages in PLAIN_SWEEP:  # q and k rotated before the kernel
            variants[f"kernel after apply_rope, {block_m}/{block_n}/{warps} warps/{stages} stages"] = (
                lambda c=(block_m, block_n, warps, stages): window_attention.launch(qr, kr, v, packed.rows, window,
                                                                                    scale, None, None, *c))
    print(f"attention alone, {n} tokens (longest {longest}), {heads} heads of {head_dim}, window {window}:")
    for label, call in variants.items():
        try:
            out = call()
            delta = (out.float() - reference).abs().max()
            if "RoPE inside" in label and not torch.equal(out, shipped()):
                print(f"  {label}: output differs from the shipped kernel's")
            error = "" if "full" in label else f"; max |Δ| vs varlen window {delta:.2e}"
            print(f"  {label:52s} {cuda_median_ms(call, 20, warmup=5):.3f} ms{error}", flush=True)
        except Exception as failure:  # noqa: BLE001 — a launch shape the compiler refuses (shared memory)
            print(f"  {label:52s} failed: {type(failure).__name__}: {str(failure).splitlines()[0][:100]}")


def whole_passes(repeats: int) -> None:
    config = transformers.ModernBertConfig()
    reference = transformers.AutoModel.from_config(config, dtype=torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model = hfkit.AutoModel.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    del reference
    lengths = make_lengths()
    seqs, real = make_ids(lengths, config.vocab_size), int(lengths.sum())
    batches = budget_batches(seqs, config.pad_token_id, LARGE_BUDGET)
    model.compile_layers()
    torch._dynamo.config.recompile_limit = 64  # a graph per layer kind and variant

    def forward(kernel: bool, inside: bool, stages: int | None = None, flags: tuple = ()):
        switches = ((window_attention, "ENABLED", kernel), (window_attention, "ROTATES", inside),
                    (window_attention, "STAGES", stages or window_attention.STAGES), *flags)

        def run(batch):
            with switched(switches):  # (module, flag, value) switches, back as they were after
                return model(**batch, unpadded=True).last_hidden_state
        return run

    RESIDUAL = (fused_linear, "RESIDUAL_EPILOGUE", True)
    variants = {"kernel, RoPE inside (shipped)": forward(True, True),
                "kernel, RoPE inside, 3 stages": forward(True, True, 3),
                "kernel after apply_rope": forward(True, False),
                "kernel after apply_rope, 3 stages": forward(True, False, 3),
                "varlen_attn windows": forward(False, False),
                "shipped + residual epilogue": forward(True, True, flags=(RESIDUAL,)),
                "shipped, 32 keys a step": forward(True, True, flags=((window_attention, "BLOCK_N", 32),)),
                "shipped, one head's query blocks first": forward(True, True, flags=(
                    (window_attention, "HEADS_FIRST", False),))}
    with torch.inference_mode():
        batch = batches[0]
        keep = batch["attention_mask"].bool()
        outs = {label: fn(batch)[keep].float() for label, fn in variants.items()}
        diffs = {label: (out - outs["kernel after apply_rope"]).abs().max().item() for label, out in outs.items()}
        times = {label: [] for label in variants}
        for _ in range(2):
            for fn in variants.values():
                time_pass(fn, batches)
        for _ in range(repeats):
            for label, fn in variants.items():
                times[label].append(time_pass(fn, batches))
    print(f"ModernBERT-base shape, compile_layers(), {real} real tokens in {len(batches)} batch(es)")
    for label in variants:
        med = statistics.median(times[label])
        print(f"  {label:42s} {med * 1e3:7.1f} ms  {real / med / 1e6:5.2f} M tok/s  "
              f"max |Δ| vs kernel after apply_rope {diffs[label]:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="the kernel at every launch shape of SWEEP")
    parser.add_argument("--alone", action="store_true", help="attention alone only, no whole passes")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    seqs = make_ids(make_lengths(), 50368)
    for budget in (TOKEN_BUDGET, LARGE_BUDGET):
        attention_alone(budget_batches(seqs, 0, budget)[0], args.sweep and budget == LARGE_BUDGET)
    if not args.alone:
        whole_passes(args.repeats)


if __name__ == "__main__":
    main()
