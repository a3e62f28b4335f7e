"""Greedy decode throughput on one CUDA GPU: a Llama-3.2-1B-shaped model (random init, bf16), batch 1, 128-token
prompt + 256 new tokens. transformers dynamic / static cache, hfkit dynamic / static / static + compiled, static +
compiled with each kernel switch of CANDIDATES set against the default (the decode kernels as plain launches, the
layers' norms apart: matvec.PDL off; dependent launches with the norms apart: matvec.FUSED_NORMS off; inductor's
kernels as dependent launches too; inductor's independent kernels apart: no combo kernels; the attention step
kernel's merge unrolled, decode_attention.MERGE_UNROLLED, its first block loaded before it waits,
decode_attention.EARLY_LOADS, both, or its cache in fewer splits; the steps without their
RoPE and cache writes inside the attention kernel, decode_attention.STEP_ON off; the step's argmax in one reduction,
greedy_static.SPLIT_ARGMAX off), static + compiled with an EOS set (the host's checks read one check late, or back
at once: greedy_static.LAGGED_EOS_CHECK off), top-k sampling with that EOS (checked every 16 tokens, or every
token: decode.SAMPLED_EOS_CHECK_EVERY at 1), and static + compiled with int8 weights (opt-in, lossy),
all in this one process on the same weights and prompt (the int8, candidates' and EOS rows on copies of hfkit's
model, made when a chosen row first needs one). A row whose warm-up raises (a compile error) is reported as failed
and the others still run.

Decode tokens/s excludes the prefill: each timed round runs generate with 256 and with 1 new token (CUDA events,
synchronized), decode time = t(256) - t(1) for 255 decode steps. Warm-up rounds first (compilation and CUDA-graph
capture included), then rounds round-robin across variants; the median is reported.

    PYTHONPATH=src python benchmarks/decode_gpu.py [--repeats 5] [--new 256] [--prompt 128]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import functools
import statistics
import tempfile
import warnings

import torch
import transformers

import hfkit
from hfkit.generation import decode as sampled_loop
from hfkit.generation import generate_tokens, greedy_static, static_cache
from hfkit.nn import decode_attention, matvec
from hfkit.nn.quantize import quantize_weights_int8

from .timing import only_variants, switched


def llama_1b_config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=None, eos_token_id=None, pad_token_id=None)


def small_llama_config(intermediate_size: int = 1536) -> transformers.LlamaConfig:
    """A Llama of 8 layers of 512 and a 32 000-token vocabulary (~60–70 M parameters): CPU explorations."""
    return transformers.LlamaConfig(vocab_size=32000, hidden_size=512, intermediate_size=intermediate_size,
                                    num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                                    tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def timed(fn) -> tuple[float, torch.Tensor]:  # seconds, output
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3, out


CANDIDATES = {  # label → the kernel switches it sets (module, flag, value): the A/B of kernels against the default
    "plain launches, norms apart (matvec.PDL off)": ((matvec, "PDL", False),),  # (norms inside only with PDL)
    "dependent launches, norms apart (matvec.FUSED_NORMS off)": ((matvec, "FUSED_NORMS", False),),
    "inductor's kernels as dependent launches too (triton.enable_pdl)": (
        (static_cache, "STEP_OPTIONS", {**static_cache.STEP_OPTIONS, "triton.enable_pdl": True}),),
    "inductor's independent kernels apart (no combo_kernels)": (
        (static_cache, "STEP_OPTIONS", {**static_cache.STEP_OPTIONS, "combo_kernels": False}),),
    "attention's merge unrolled (decode_attention.MERGE_UNROLLED)": ((decode_attention, "MERGE_UNROLLED", True),),
    "attention's first block loaded early (decode_attention.EARLY_LOADS)": ((decode_attention, "EARLY_LOADS", True),),
    "attention's first block early and merge unrolled": ((decode_attention, "EARLY_LOADS", True),
                                                         (decode_attention, "MERGE_UNROLLED", True)),
    "attention in 3 splits (decode_attention.SPLIT_PROGRAMS 24)": ((decode_attention, "SPLIT_PROGRAMS", 24),),
    "attention in 1 split (decode_attention.SPLIT_PROGRAMS 8)": ((decode_attention, "SPLIT_PROGRAMS", 8),),
    "without the step kernel (decode_attention.STEP_ON off)": ((decode_attention, "STEP_ON", False),),
    "argmax in one reduction (greedy_static.SPLIT_ARGMAX off)": ((greedy_static, "SPLIT_ARGMAX", False),),
}


INT8_ROW = "hfkit, static cache + compile + quantize_weights_int8 (opt-in, lossy)"


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--only", default="", help="run the variants whose names contain one of these '|'-separated parts")
    parser.add_argument("--profile", metavar="FILE", help="kernel table of 32 decode steps of the last variant run")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    config = llama_1b_config()
    reference = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    reference.generation_config.eos_token_id = reference.generation_config.pad_token_id = None
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        ours = hfkit.AutoModelForCausalLM.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    reference = reference.cuda().eval()

    def copy_on_first_use(make=copy.deepcopy):  # another model, made from `ours` when a chosen row first asks for it
        return functools.cache(lambda: make(ours))

    ours_int8 = copy_on_first_use(lambda model: quantize_weights_int8(copy.deepcopy(model)))
    ours_fused = copy_on_first_use()  # the candidates' (each flag set re-records its step)
    eos_model = copy_on_first_use()  # its own cache and greedy state: an EOS changes the step
    ids = torch.randint(5, config.vocab_size - 1, (1, args.prompt), generator=torch.Generator().manual_seed(1)).cuda()
    mask = torch.ones_like(ids)

    def hf(cache):
        kw = {} if cache == "dynamic" else {"cache_implementation": "static"}
        return lambda n: reference.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, **kw)

    def ours_(cache, compile=False, model=lambda: ours, eos=None):
        return lambda n: generate_tokens(model(), ids, mask, max_new_tokens=n, eos_token_id=eos, pad_token_id=eos,
                                         cache=cache, compile=compile)

    eos = config.vocab_size - 1  # outside the prompt; greedy decoding is not expected to reach it (checked below)

    def with_eos(lagged):
        def run(n):
            with switched([(greedy_static, "LAGGED_EOS_CHECK", lagged)]):
                return ours_("static", True, eos_model, eos=eos)(n)
        return run

    def sampled(every):  # top-k sampling, seeded the same for each call, with that EOS
        def run(n):
            with switched([(sampled_loop, "SAMPLED_EOS_CHECK_EVERY", {"cuda": every})]):
                return generate_tokens(eos_model(), ids, mask, max_new_tokens=n, do_sample=True, top_k=50,
                                       generator=torch.Generator("cuda").manual_seed(0), eos_token_id=eos,
                                       pad_token_id=eos, cache="static", compile=True)
        return run

    def candidate(flags):
        def run(n):
            with switched(flags):
                return ours_("static", True, ours_fused)(n)
        return run

    torch._dynamo.config.recompile_limit = 32  # the step recompiles for each model and flag set

    variants = {
        "transformers, dynamic cache": hf("dynamic"),
        "transformers, static cache (cache_implementation='static')": hf("static"),
        "hfkit, dynamic cache": ours_("dynamic"),
        "hfkit, static cache": ours_("static"),
        "hfkit, static cache + compile (reduce-overhead)": ours_("static", True),
        **{f"hfkit, static cache + compile + {label}": candidate(flags) for label, flags in CANDIDATES.items()},
        "hfkit, static cache + compile, an EOS set (checks read one late)": with_eos(True),
        "hfkit, static cache + compile, an EOS set, read back at once (LAGGED_EOS_CHECK off)": with_eos(False),
        "hfkit, static cache + compile, top-k sampling, an EOS set (checked every 16 tokens)": sampled(16),
        "hfkit, static cache + compile, top-k sampling, an EOS set, checked every token": sampled(1),
        INT8_ROW: ours_("static", True, ours_int8),
    }
    variants = {name: variants[name] for name in only_variants(variants, args.only)}
    from torch._dynamo.utils import counters

    outputs, notes, failed = {}, {}, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, fn in list(variants.items()):  # warm-up: compile, CUDA-graph capture
            try:
                for _ in range(args.warmup):
                    fn(args.new), fn(1)
            except Exception as error:  # noqa: BLE001 (one variant's failure, e.g. a compile error: the rest still run)
                failed[name] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[-1][:200]}"
                print(f"{name} failed, left out: {failed[name]}", flush=True)
                del variants[name]
                continue
            graphs = counters["stats"]["unique_graphs"]
            notes[name] = f"dynamo graphs so far: {graphs}; cudagraph skips: {counters['inductor'].get('cudagraph_skips', 0)}"
            print(name, "warm;", notes[name], flush=True)
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                full, out = timed(lambda: fn(args.new))
                pre, _ = timed(lambda: fn(1))
                times[name].append((full - pre, full, pre))
                outputs[name] = out
    for w in {str(w.message)[:200] for w in caught}:
        print("warning:", w)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        fn = list(variants.values())[-1]
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn(33)
            torch.cuda.synchronize()
        with open(args.profile, "w") as f:
            f.write(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=100))

    # the tokens every row is compared with: uncompiled static decoding, else the first hfkit row run
    base_name = next((n for n in ["hfkit, static cache", *outputs] if n in outputs and n.startswith("hfkit")), None)
    base = outputs.get(base_name)
    rows = []
    for name, ts in times.items():
        decode = statistics.median(t[0] for t in ts)
        spread = (max(t[0] for t in ts) - min(t[0] for t in ts)) / decode
        new = outputs[name][0, args.prompt:]
        if len(new) < args.new:  # an EOS row's EOS came: its time is for fewer tokens
            print(f"note: {name} stopped after {len(new)} new tokens")
        equal = min(len(new), base.shape[1] - args.prompt) if base is not None else 0
        same = "" if base is None else str(int((new[:equal] == base[0, args.prompt:][:equal]).cumprod(0).sum()))
        rows.append((name, (args.new - 1) / decode, decode * 1e3 / (args.new - 1), statistics.median(t[2] for t in ts) * 1e3,
                     spread, same))
    quality = ""
    if INT8_ROW in outputs:  # what int8 weights cost: the prompt's next-token logits against bf16 weights
        with torch.inference_mode():
            exact, lossy = (m(ids, mask).logits[0].float() for m in (ours, ours_int8()))  # (T, V)
        cosine = torch.nn.functional.cosine_similarity(exact, lossy, dim=-1)
        top1 = (exact.argmax(-1) == lossy.argmax(-1)).float().mean()
        quality = (f"int8 weights vs bf16 on the prompt's {args.prompt} positions: logits cosine min {cosine.min():.4f}"
                   f" / mean {cosine.mean():.4f}, top-1 equal {top1:.1%} (random init: near-flat logits make top-1 a"
                   " strict check).")
    gpu = torch.cuda.get_device_name()
    lines = [
        f"Device: {gpu}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"CUDA {torch.version.cuda}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"Llama-3.2-1B shape (hidden 2048, 16 layers, 32 heads / 8 kv, intermediate 8192, vocab 128256, tied, rope llama3),"
        f" random init, bf16, batch 1, prompt {args.prompt}, {args.new} new tokens, greedy; median of {args.repeats}"
        f" after {args.warmup} warm-up rounds.",
        "",
        ("| variant | decode tok/s | ms / token | prefill + 1 token (ms) | spread "
         f"| leading new tokens equal to {base_name} |"),
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {n} | {tps:.0f} | {ms:.3f} | {pre:.1f} | {sp:.1%} | {same} |" for n, tps, ms, pre, sp, same in rows],
        *[f"| {n} | failed: {why} | | | | |" for n, why in failed.items()],
        "",
        quality,
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
