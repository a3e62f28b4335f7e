"""Exploration (not a benchmark of record): what speculative decoding can gain on the Llama-1B shape, bf16.

(a) The cost of one compiled static-cache pass that checks K candidates (`verify_static`, 1 + K tokens), K = 0…16,
    against the one-token greedy step: that ratio, not the weights, bounds the gain — a pass that keeps n tokens on
    average is worth it when n exceeds its cost in one-token steps.
(b) generate_tokens end to end, plain greedy against prompt lookup (--lookup K) and an assistant model (2 layers
    of 512, --drafted tokens a pass). The weights are random, so what lookup finds depends on the model repeating
    itself (a best case, not a forecast), and the random assistant's candidates are rarely kept: that row shows
    what drafting costs.
Without CUDA: a ~60 M-parameter Llama in float32 on the CPU, eager, (b) with the dynamic cache.

    PYTHONPATH=src python benchmarks/explore/speculative.py [--lookup 8] [--new 256]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import transformers

import hfkit
from hfkit.bench.decode_gpu import llama_1b_config, small_llama_config
from hfkit.bench.timing import median_ms
from hfkit.generation import generate_tokens
from hfkit.generation.static_cache import (
    compiled_step,
    prefill_static,
    static_cache_for,
    verify_static,
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lookup", type=int, default=8)
    parser.add_argument("--drafted", type=int, default=4, help="the assistant's tokens a pass")
    parser.add_argument("--new", type=int, default=256)
    parser.add_argument("--widths", default="0,1,2,4,8,16")
    args = parser.parse_args()
    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    config, dtype, device = (llama_1b_config(), torch.bfloat16, "cuda") if cuda else (small_llama_config(), torch.float32, "cpu")
    draft_config = small_llama_config()  # the assistant: 2 layers of 512, the model's vocabulary
    draft_config.vocab_size, draft_config.num_hidden_layers = config.vocab_size, 2
    with tempfile.TemporaryDirectory() as tmp:
        transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).save_pretrained(f"{tmp}/model")
        transformers.AutoModelForCausalLM.from_config(draft_config, dtype=dtype).save_pretrained(f"{tmp}/draft")
        model, draft = (hfkit.AutoModelForCausalLM.from_pretrained(f"{tmp}/{name}", dtype=str(dtype).split(".")[1],
                                                                   device=device) for name in ("model", "draft"))
    ids = torch.randint(5, config.vocab_size - 1, (1, 128), generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones_like(ids)
    torch._dynamo.config.recompile_limit = 32  # one graph per width K: each width its own static shapes, not one
    torch._dynamo.config.automatic_dynamic_shapes = False  # dynamic graph recorded again per width by CUDA graphs
    step = compiled_step(verify_static, ids.device, cuda)
    what = "compiled on the GPU, bf16, Llama-1B shape" if cuda else "eager on the CPU, float32, 8 × 512 Llama"
    print(f"(a) one pass over 1 + K tokens at position 128 through the static cache ({what})")
    base = None
    with torch.inference_mode():
        for K in [int(k) for k in args.widths.split(",")]:
            kv = static_cache_for(model, 1, 128 + args.new + 16, dtype, ids.device)
            prefill_static(model, ids, mask, kv)
            tokens = ids[:, -1 - K :].clone()
            positions = torch.arange(128, 129 + K, device=device)[None]

            def one_pass(kv=kv, tokens=tokens, positions=positions):
                kv.ready(tokens.shape[1])
                step(model, tokens, positions, kv)
                kv.crop(128)

            for _ in range(3):
                one_pass()
            n = 50 if cuda else 10
            ms = median_ms(lambda one_pass=one_pass, n=n: [one_pass() for _ in range(n)], 7) / n
            base = base or ms
            print(f"  K = {K:2d}: {ms:.3f} ms per pass, {ms / base:.2f}× the K = 0 pass", flush=True)
        cache = "static" if cuda else "dynamic"
        print(f"(b) generate_tokens, {args.new} new tokens after 128, cache={cache!r}")
        results = {}
        for label, options in (("plain greedy", {}),
                               (f"prompt lookup {args.lookup}", {"prompt_lookup_num_tokens": args.lookup}),
                               (f"assistant (2 × 512 Llama), {args.drafted} a pass",
                                {"assistant_model": draft, "num_assistant_tokens": args.drafted})):
            run = lambda options=options: generate_tokens(model, ids, mask, max_new_tokens=args.new, eos_token_id=None,
                                                          cache=cache, **options)
            for _ in range(2):
                results[label] = run()
            seconds = median_ms(run, 5 if cuda else 3) / 1e3
            print(f"  {label}: {args.new / seconds:.0f} tok/s", flush=True)
        plain, *speculative = (out[0, 128:] for out in results.values())
        for label, new in zip(list(results)[1:], speculative, strict=True):
            print(f"  {label}: same tokens as plain greedy: {torch.equal(plain, new)} (leading equal: "
                  f"{int((plain == new).cumprod(0).sum())})")
        print(f"  distinct tokens in plain greedy's continuation: {plain.unique().numel()}")


if __name__ == "__main__":
    main()
