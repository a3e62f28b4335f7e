"""`hfkit bench`: the benchmarks on the user's own machine — CPU sentence embeddings (side by side with
sentence-transformers / transformers where installed), then each GPU benchmark when CUDA is present."""

from __future__ import annotations

import contextlib
import importlib
from io import StringIO
from typing import Annotated

import typer

from .app import EmbedModel, Json, command
from .io import emit_json


def gpu_benchmarks(capture: bool) -> list[dict]:
    """Run every `hfkit.bench.<name>.main([])` of GPU_BENCHMARKS that this install has; a note for the others."""
    from ..bench import GPU_BENCHMARKS

    runs = []
    for name in GPU_BENCHMARKS:
        try:
            module = importlib.import_module(f"hfkit.bench.{name}")
        except ModuleNotFoundError as err:
            if err.name not in (f"hfkit.bench.{name}", "hfkit.bench"):
                raise
            module = None
        if module is None or not callable(getattr(module, "main", None)):
            runs.append({"benchmark": name, "ran": False, "note": f"skipped: hfkit.bench.{name} with a main(argv) "
                                                                   f"is not in this install"})
            if not capture:
                typer.echo(f"\n{name}: {runs[-1]['note']}.")
            continue
        if not capture:
            typer.echo(f"\n## {name}\n")
            module.main([])
            runs.append({"benchmark": name, "ran": True})
            continue
        printed = StringIO()
        with contextlib.redirect_stdout(printed):
            module.main([])
        runs.append({"benchmark": name, "ran": True, "output": printed.getvalue()})
    return runs


@command()
def bench(
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per implementation (the median is reported).")] = 3,
    texts: Annotated[int, typer.Option(min=2, help="Texts to embed (3–200 words each, seeded).")] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    model: EmbedModel = None,
    references: Annotated[bool, typer.Option(
        "--references/--no-references", help="Time sentence-transformers and transformers too, where installed.")] = True,
    gpu: Annotated[bool, typer.Option("--gpu/--no-gpu", help="Run the GPU benchmarks when CUDA is present.")] = True,
    emulated: Annotated[bool, typer.Option(
        "--emulated", help="Also time the bfloat16/int8 rows on a CPU without instructions for them (slow).")] = False,
    json: Json = False,
) -> None:
    """Benchmark hfkit on this machine: CPU sentence embeddings (exact float32, opt-in bfloat16 and int8), side by
    side with sentence-transformers and transformers when installed; then the GPU benchmarks when CUDA is present."""
    import torch

    from ..bench.embed_cpu import format_markdown, measure

    given = f"hfkit bench --repeats {repeats} --texts {texts}" + (f" --batch-size {batch_size}" if batch_size != 32 else "")
    if not json:
        typer.echo(f"Timing sentence embeddings on CPU ({texts} texts, {repeats} runs each after a warm-up)…", err=True)
    result = measure(texts, repeats, batch_size, model, references, command=given, emulated=emulated)
    cuda = gpu and torch.cuda.is_available()
    if json:
        return emit_json({"embed_cpu": result, "gpu": gpu_benchmarks(capture=True) if cuda else [],
                          "cuda": torch.cuda.is_available()})
    typer.echo(format_markdown(result))
    if cuda:
        gpu_benchmarks(capture=False)
    elif gpu:
        typer.echo("\nNo CUDA device here: the GPU benchmarks (encode_gpu, decode_gpu, train_gpu) were skipped.")
