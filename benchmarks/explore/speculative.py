"""Exploration (not a benchmark of record): what speculative decoding can gain on the Llama-1B shape, bf16.

(a) The cost of one compiled static-cache pass that checks K candidates (`verify_static`, 1 + K tokens), K = 0…16,
    against the one-token greedy step: that ratio, not the weights, bounds the gain — a pass that keeps n tokens on
    average is worth it when n exceeds its cost in one-token steps.
(b) generate_tokens end to end, plain static + compile against prompt lookup (--lookup K), with the passes it took.
    The weights are random, so what lookup finds depends on the model repeating itself: a best case, not a forecast.

    PYTHONPATH=src python benchmarks/explore/speculative.py [--lookup 8] [--new 256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
import transformers

import hfkit
from hfkit.bench.decode_gpu import llama_1b_config
from hfkit.generation import generate_tokens, speculative
from hfkit.generation.static_cache import (
    compiled_step,
    prefill_static,
    static_cache_for,
    verify_static,
)


def median_ms(fn, repeats: int = 7, n: int = 50) -> float:
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / n)
    return statistics.median(times)


PASSES = [0]  # speculative passes, counted around the compiled verify step


def counted_compiled_step(step, device):
    compiled = compiled_step(step, device)

    def run(*args):
        PASSES[0] += 1
        return compiled(*args)

    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookup", type=int, default=8)
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--widths", default="0,1,2,4,8,16")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = llama_1b_config()
    with tempfile.TemporaryDirectory() as tmp:
        transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
        model = hfkit.AutoModelForCausalLM.from_pretrained(tmp, dtype="bfloat16", device="cuda")
    ids = torch.randint(5, config.vocab_size - 1, (1, 128), generator=torch.Generator().manual_seed(1)).cuda()
    mask = torch.ones_like(ids)
    torch._dynamo.config.recompile_limit = 32  # one graph per width K
    step = compiled_step(verify_static, ids.device)
    print("(a) one compiled pass over 1 + K tokens at position 128 (bf16, H100-class GPU)")
    base = None
    with torch.inference_mode():
        for K in [int(k) for k in args.widths.split(",")]:
            kv = static_cache_for(model, 1, 128 + 256 + 16, torch.bfloat16, ids.device)
            prefill_static(model, ids, mask, kv)
            tokens = ids[:, -1 - K :].clone()
            positions = torch.arange(128, 129 + K, device="cuda")[None]

            def one_pass(kv=kv, tokens=tokens, positions=positions):
                kv.step, kv.order = tokens.shape[1], None
                step(model, tokens, positions, kv)
                kv.crop(128)

            for _ in range(3):
                one_pass()
            ms = median_ms(one_pass)
            base = base or ms
            print(f"  K = {K:2d}: {ms:.3f} ms per pass, {ms / base:.2f}× the K = 0 pass", flush=True)
        print(f"(b) generate_tokens, {args.new} new tokens after 128")
        speculative.compiled_step = counted_compiled_step
        results = {}
        for label, options in (("static + compile", {}), (f"+ prompt lookup {args.lookup}",
                                                          {"prompt_lookup_num_tokens": args.lookup})):
            run = lambda options=options: generate_tokens(model, ids, mask, max_new_tokens=args.new, eos_token_id=None,
                                          cache="static", compile=True, **options)
            for _ in range(2):
                run()
            PASSES[0] = 0
            times, out = [], None
            for _ in range(5):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = run()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            results[label] = out
            seconds = statistics.median(times)
            passes = f"; speculative passes per call {PASSES[0] / 5:.0f}" if options else ""
            print(f"  {label}: {args.new / seconds:.0f} tok/s{passes}", flush=True)
        same = torch.equal(*results.values())
        print(f"  same tokens: {same}; distinct tokens in the continuation: {out[0, 128:].unique().numel()}")


if __name__ == "__main__":
    main()
