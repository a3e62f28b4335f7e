"""Exploration: float32 products of a few rows on this CPU, `F.linear` (x · Wᵀ) against `nn.cpu_linear` (W · xᵀ).

(a) single products at decoder shapes (Qwen2.5-0.5B: hidden 896, MLP 4864, vocabulary 151 936; a ~60 M Llama's
    32 000 × 512 LM head) for 1–32 rows: median ms of each;
(b) greedy generate_tokens on a ~70 M-parameter Llama (8 layers of 512, MLP 4608, vocabulary 32 000), batches of
    1, 4 and 8 prompts, 32 new tokens, with `cpu_linear.ENABLED` on and off in the same process, alternating.

    PYTHONPATH=src python benchmarks/explore/cpu_few_rows.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings

import torch
import torch.nn.functional as F
import transformers

import hfkit
from hfkit.bench.decode_gpu import small_llama_config
from hfkit.bench.timing import median_ms
from hfkit.generation import generate_tokens
from hfkit.nn import cpu_linear

SHAPES = {"Qwen-0.5B LM head": (151936, 896), "Qwen-0.5B gate|up": (9728, 896), "Qwen-0.5B down": (896, 4864),
          "60 M Llama LM head": (32000, 512), "Qwen-0.5B q|k|v": (1152, 896)}


def products(repeats: int) -> None:
    print("(a) ms per product, F.linear / W · xᵀ (cpu_linear takes W · xᵀ only for rows 2–32 and ≥ 4096 outputs)")
    rows = [1, 2, 4, 8, 16, 32]
    print("| shape (out × in) | " + " | ".join(f"{m} rows" for m in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for name, (n, k) in SHAPES.items():
        weight = torch.randn(n, k)
        cells = []
        for m in rows:
            x = torch.randn(m, k)
            plain = median_ms(lambda x=x, weight=weight: F.linear(x, weight), repeats, warmup=2)
            flipped = median_ms(lambda x=x, weight=weight: torch.mm(weight, x.t()).t(), repeats, warmup=2)
            cells.append(f"{plain:.2f} / {flipped:.2f}")
        print(f"| {name} ({n} × {k}) | " + " | ".join(cells) + " |", flush=True)


def generation(repeats: int) -> None:
    config = small_llama_config(intermediate_size=4608)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
        model = hfkit.AutoModelForCausalLM.from_pretrained(tmp)
    print("(b) greedy generate_tokens, 64-token prompts, 32 new tokens: new tokens/s, off / on")
    for batch in (1, 4, 8):
        ids = torch.randint(5, config.vocab_size - 1, (batch, 64), generator=torch.Generator().manual_seed(batch))
        outputs, rates = {}, {False: [], True: []}
        with torch.inference_mode():
            for _ in range(repeats):
                for enabled in (False, True):
                    cpu_linear.ENABLED = enabled
                    def run(ids=ids, enabled=enabled, outputs=outputs):
                        outputs[enabled] = generate_tokens(model, ids, max_new_tokens=32, eos_token_id=None)

                    ms = median_ms(run, 1)
                    rates[enabled].append(32 * batch / ms * 1e3)
        cpu_linear.ENABLED = True
        best = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        print(f"  batch {batch}: {best[False]:.1f} / {best[True]:.1f} tok/s ({best[True] / best[False]:.2f}×), "
              f"same tokens: {torch.equal(outputs[False], outputs[True])}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    products(args.repeats)
    generation(args.repeats)


if __name__ == "__main__":
    main()
