"""`hfkit export`, `verify-export`, `verify-matrix`, `convert`, `init`: the library calls plus formatting."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from .app import Dtype, DtypeOption, Json, Model, Revision, command
from .io import emit_json

HEAD_HELP = "base, seqcls, tokcls, qa, mlm, pretrain (or a full task name like sequence-classification)"


class Task(str, Enum):
    classify = "classify"
    ner = "ner"
    qa = "qa"
    embed = "embed"


def split_names(values: list[str] | None) -> list[str] | None:
    """`--families bert,roberta --families albert` → ['bert', 'roberta', 'albert']."""
    names = [name.strip() for value in values or [] for name in value.split(",") if name.strip()]
    return names or None


@command()
def export(
    src: Model,
    out: Annotated[Path, typer.Argument(
        help="Folder to write (replaced at the end if it is a model folder).", show_default=False)],
    head: Annotated[str | None, typer.Option(
        help=f"Model class to export: {HEAD_HELP} [default: the source's architectures].")] = None,
    dtype: DtypeOption = Dtype.auto,
    max_shard_size: Annotated[str, typer.Option(
        help="Largest safetensors file, e.g. 2GB, 500MB; bigger models are sharded.")] = "2GB",
    revision: Revision = None,
) -> None:
    """Load SRC with hfkit and write OUT in the HF layout that transformers and sentence-transformers load."""
    from ..config import read_config_json
    from ..export import save_pretrained
    from ..hub import resolve
    from ..models.auto import family_of, model_class
    from ..verify import task_name, task_of

    directory = resolve(src, revision=revision)
    raw = read_config_json(directory)
    family = family_of(raw.get("model_type"))
    task = task_name(head) if head else (task_of(raw["architectures"][0], family) if raw.get("architectures") else "base")
    model = model_class(family, task).from_pretrained(directory)
    written = save_pretrained(model, out, max_shard_size=max_shard_size, dtype=None if dtype is Dtype.auto else dtype.value,
                              base_model=src if _is_repo_id(src) else None)
    files = sorted(p.relative_to(written).as_posix() for p in written.rglob("*") if p.is_file())
    typer.echo(f"Exported {type(model).__name__} ({model.num_parameters():,} parameters) from {src} to {written}:")
    for name in files:
        typer.echo(f"  {name}")
    typer.echo(f"Check it: hfkit verify-export {out} --source {src}")


def _is_repo_id(name: str) -> bool:
    return not Path(name).expanduser().exists() and name.count("/") == 1 and not name.startswith((".", "/", "~"))


@command("verify-export")
def verify_export(
    out: Annotated[str, typer.Argument(help="The exported folder.", show_default=False)],
    source: Annotated[str | None, typer.Option(help="The checkpoint it was exported from: outputs must equal it too.")] = None,
    json: Json = False,
) -> None:
    """Load OUT with transformers (strict keys) and compare every output with hfkit bit for bit."""
    from ..verify import as_dict, verify_export as run

    report = run(out, source=source)
    if json:
        emit_json(as_dict(report))
    else:
        typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(1)


@command("verify-matrix")
def verify_matrix(
    families: Annotated[list[str] | None, typer.Option(help="Families to run (repeat or comma-separate) [default: all].")] = None,
    heads: Annotated[list[str] | None, typer.Option(help=f"Heads to run: {HEAD_HELP} [default: all].")] = None,
) -> None:
    """export + verify-export for every registered family × head on tiny random models: a PASS/FAIL grid."""
    from ..verify_matrix import verify_matrix as run

    matrix = run(split_names(families), split_names(heads))
    typer.echo(matrix.render())
    if not matrix.ok:
        raise typer.Exit(1)


@command()
def convert(
    src: Model,
    out: Annotated[Path | None, typer.Option(
        help="Write a converted copy of the folder here [default: beside the .bin files].")] = None,
    force: Annotated[bool, typer.Option(help="Convert even if the folder already has safetensors weights.")] = False,
    revision: Revision = None,
) -> None:
    """pytorch_model.bin (or its shards + index) → model.safetensors, loaded with torch.load(weights_only=True) only."""
    from ..convert import convert as run

    result = run(src, out=out, revision=revision, force=force)
    if result.skipped:
        typer.echo(f"{result.directory} already has safetensors weights; nothing to do (--force converts anyway).")
        return
    typer.echo(f"Converted {src} → {result.directory}:")
    for name in result.written:
        typer.echo(f"  {name}")
    if result.dropped:
        typer.echo(f"Shared tensors stored once; aliases not written: {', '.join(result.dropped)}")


@command()
def init(
    name: Annotated[str, typer.Argument(help="Project folder to create.", show_default=False)],
    task: Annotated[Task, typer.Option(help="What the example script does.")] = Task.classify,
) -> None:
    """Scaffold a small project: pyproject depending on hfkit, a runnable example.py, a README with next steps."""
    from ..scaffold import init_project

    path = init_project(name, task.value)
    typer.echo(f"Created {path}/ (pyproject.toml, example.py, README.md). Next:\n"
               f"  cd {path} && pip install -e . && python example.py")
