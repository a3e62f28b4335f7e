"""`hfkit train` and `hfkit pretrain`: the library calls plus formatting. Under `torchrun --nproc-per-node N`
the same commands train data-parallel (every process runs them; the first one writes and prints)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from .app import Device, command
from .io import emit_json


class TrainTask(str, Enum):
    classify = "classify"
    ner = "ner"
    qa = "qa"
    mlm = "mlm"
    causal_lm = "causal-lm"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"


ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="Training options as .yaml/.json (TrainingConfig field names); flags given here win.")]
Epochs = Annotated[int | None, typer.Option(min=1, help="Passes over the training data [default: 3].")]
MaxSteps = Annotated[int | None, typer.Option(min=1, help="Optimizer steps (overrides --epochs).")]
Lr = Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")]
Batch = Annotated[int | None, typer.Option(min=1, help="Examples per step and process.")]
PrecisionOption = Annotated[Precision | None, typer.Option(help="fp32, bf16, fp16 (CUDA) or auto [default: fp32].")]
Json = Annotated[bool, typer.Option("--json", help="Print the final record as JSON.")]


def main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_config(config_file: Path | None, out: Path, **flags: Any):
    """TrainingConfig from the file (if any) with the flags that were given on top; output_dir = OUT."""
    from ..train.config import TrainingConfig

    given = {key: value.value if isinstance(value, Enum) else value for key, value in flags.items() if value is not None}
    given["output_dir"] = str(out)
    return TrainingConfig.from_file(config_file, **given) if config_file else TrainingConfig.from_dict(given)


def report(record: dict[str, Any], json: bool, wrote: Path) -> None:
    if not main_process():
        return
    if json:
        return emit_json(record)
    for key, value in record.items():
        typer.echo(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    typer.echo(f"Wrote {wrote}")


@command()
def train(
    task: Annotated[TrainTask, typer.Option(help="What to fine-tune the model for.", show_default=False)],
    train_file: Annotated[str, typer.Option("--train", help="Training rows: .jsonl, .json, .csv or .parquet.",
                                            show_default=False)],
    out: Annotated[Path, typer.Option(help="Output folder (model/ or adapter/, checkpoints/, metrics.jsonl).",
                                      show_default=False)],
    model: Annotated[str | None, typer.Option(
        help="Base model: a local folder or a Hub repo id [default: the packaged all-MiniLM-L6-v2].")] = None,
    eval_file: Annotated[str | None, typer.Option("--eval", help="Evaluation rows, same format.")] = None,
    config: ConfigFile = None,
    lora: Annotated[bool, typer.Option(help="Train LoRA adapters (and the head) instead of all weights.")] = False,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 8,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (scale = alpha / r).")] = 16.0,
    lora_targets: Annotated[str | None, typer.Option(
        help="Comma-separated module names to adapt [default: the attention query and value projections].")] = None,
    epochs: Epochs = None, max_steps: MaxSteps = None, lr: Lr = None, batch_size: Batch = None,
    precision: PrecisionOption = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --out.")] = False,
    device: Device = None,
    json: Json = False,
) -> None:
    """Fine-tune MODEL on labelled rows: {text,label} · {tokens,tags} or {text,entities} · SQuAD rows · {text}."""
    from ..train.run import train as run_training

    settings = training_config(config, out, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
                               precision=precision, resume=resume or None)
    adapters = None
    if lora:
        from ..lora import LoraConfig

        targets = [name.strip() for name in lora_targets.split(",")] if lora_targets else None
        adapters = LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=targets)
    if model is None:
        from ..defaults import default_embedding_model

        model = str(default_embedding_model())
    record = run_training(task.value, model, train_file, eval_file, settings, lora=adapters, device=device)
    report(record, json, out / ("adapter" if lora else "model"))


@command()
def pretrain(
    files: Annotated[list[str], typer.Option(
        "--files", help='Text files or glob patterns ("src/**/*.py"); repeat for more.', show_default=False)],
    model_config: Annotated[Path, typer.Option(
        "--config", help="Model config.json (model_type llama, gpt2, …; vocab and special ids come from the tokenizer).",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Output folder: tokenizer/, model/, checkpoints/, metrics.jsonl.")] = Path("pretrained"),
    tokenizer_vocab: Annotated[int, typer.Option(min=257, help="Byte-level BPE vocabulary size.")] = 8000,
    train_config: Annotated[Path | None, typer.Option(
        "--train-config", help="Training options as .yaml/.json (TrainingConfig field names).")] = None,
    epochs: Epochs = None, max_steps: MaxSteps = None, lr: Lr = None, batch_size: Batch = None,
    block_size: Annotated[int | None, typer.Option(min=2, help="Tokens per packed training block.")] = None,
    precision: PrecisionOption = None,
    sample_every: Annotated[int, typer.Option(min=0, help="Print a sample every N steps (0: never).")] = 100,
    prompt: Annotated[str | None, typer.Option(help="Text the samples continue [default: the BOS token].")] = None,
    device: Device = None,
    json: Json = False,
) -> None:
    """Train a tokenizer and a small causal LM from scratch on your own files, sampling from it as it learns."""
    from ..train.pretrain import PRETRAIN_DEFAULTS
    from ..train.pretrain import pretrain as run_pretraining

    flags = {"epochs": epochs, "max_steps": max_steps, "lr": lr, "batch_size": batch_size, "block_size": block_size,
             "precision": precision}
    settings = training_config(train_config, out, **{**(PRETRAIN_DEFAULTS if train_config is None else {}), **{
        k: v for k, v in flags.items() if v is not None}})

    def show(step: int, text: str) -> None:
        typer.echo(f"\n--- sample at step {step} ---\n{text}\n---", err=True)

    record = run_pretraining(files, model_config, out, tokenizer_vocab, settings, sample_every=sample_every,
                             prompt=prompt, show=show if main_process() else (lambda step, text: None), device=device)
    report(record, json, out / "model")
