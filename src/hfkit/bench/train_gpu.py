"""Training-step throughput on one CUDA GPU, bf16 autocast, fused AdamW, random init: hfkit vs transformers.

Workloads (issue 7): bert-base sequence classification B32 × S128; Llama-3.2-1B-shaped causal LM B8 × S1024.
Each implementation runs the same step on the same random batches — forward with labels, backward, clip,
AdamW (fused), zero_grad — after warm-up; CUDA events around every step; the median step gives tokens/s. The
ClippedAdamW rows take hfkit's compiled clip + AdamW update instead (TrainingConfig(optimizer="clipped-adamw")).
`--trainer` also times hfkit's Trainer.fit end to end (tokenised rows → collation → step → logging) on a
synthetic word-level tokenizer, from the tokens/s it logs (median of the log windows after the first).

    PYTHONPATH=src python benchmarks/train_gpu.py [--workloads bert,llama] [--steps 30] [--trainer]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import transformers

import hfkit
from hfkit.train.optim import ClippedAdamW, parameter_groups

from .timing import only_variants

WARMUP = 10


def bert_config():
    return transformers.BertConfig(num_labels=2)  # bert-base: 12 × 768, 30522 vocabulary


def llama_config():
    return transformers.LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, max_position_embeddings=131072, tie_word_embeddings=True, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=128000, eos_token_id=128001)


WORKLOADS = {  # name → (config, the Auto class name in both libraries, batch, sequence length)
    "bert": (bert_config, "AutoModelForSequenceClassification", 32, 128),
    "llama": (llama_config, "AutoModelForCausalLM", 8, 1024),
}


def batches(name: str, config, count: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        ids = torch.randint(5, config.vocab_size - 1, (batch, seq), generator=gen)
        labels = torch.randint(0, 2, (batch,), generator=gen) if name == "bert" else ids
        out.append({"input_ids": ids.cuda(), "attention_mask": torch.ones_like(ids).cuda(), "labels": labels.cuda()})
    return out


def forward_backward(model, batch: dict) -> None:
    """Forward with labels under bf16 autocast, then backward."""
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**batch).loss
    loss.backward()


def train_step(model, batch: dict, optimizer) -> None:
    """The step every implementation runs: forward and backward, clip (ClippedAdamW clips as it steps), AdamW."""
    forward_backward(model, batch)
    if not isinstance(optimizer, ClippedAdamW):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def benchmark_optimizer(model, clipped_adamw: bool) -> torch.optim.Optimizer:
    """The fused AdamW every implementation steps (lr 1e-5), or hfkit's ClippedAdamW (clip compiled into the update;
    AdamW's default decay 0.01 on matrices)."""
    if clipped_adamw:
        return ClippedAdamW(parameter_groups(model, 0.01), 1.0, lr=1e-5)
    return torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)


def time_steps(model, data: list[dict], steps: int, clipped_adamw: bool = False) -> tuple[float, float, float]:
    """Median and spread of the step time in ms (after WARMUP steps, each step synchronised), then the mean ms of
    `steps` more steps run back to back as a training loop runs them (no host sync between steps, so the host
    launches a step while the GPU runs the previous one). `clipped_adamw`: hfkit's ClippedAdamW (clip compiled into
    the update) instead of clip_grad_norm_ + fused AdamW."""
    optimizer = benchmark_optimizer(model, clipped_adamw)
    model.train()
    times = []
    for i in range(WARMUP + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        train_step(model, data[i % len(data)], optimizer)
        end.record()
        end.synchronize()
        if i >= WARMUP:
            times.append(start.elapsed_time(end))
    median = statistics.median(times)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(steps):
        train_step(model, data[i % len(data)], optimizer)
    end.record()
    end.synchronize()
    return median, (max(times) - min(times)) / median, start.elapsed_time(end) / steps


def profile(model, data: list[dict], path: Path) -> None:
    """Kernel time table of 3 training steps (after the timed ones), sorted by total CUDA time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for batch in data[:3]:
            train_step(model, batch, optimizer)
        torch.cuda.synchronize()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))


def synthetic_tokenizer(directory: Path, vocab_size: int, words: list[str] | None = None) -> None:
    """A word-level tokenizer over `words` (default `w5 … w{V-1}`, so word wN is id N) after BERT's five specials:
    text rows have known token counts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(5, vocab_size)] if words is None else words
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
        "sep_token": "[SEP]", "mask_token": "[MASK]", "model_max_length": 512}))


def synthetic_rows(count: int, words: int, vocab_size: int, seed: int) -> list[dict]:
    """Random word rows; label 1 when one of 100 marker words occurs (learnable, about one row in three)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (count, words), generator=gen)
    return [{"text": " ".join(f"w{i}" for i in row.tolist()), "label": int(bool((row < 105).any()))} for row in ids]


def trainer_run(directory: Path, batch: int, steps: int, compile: bool | str, log_every: int = 10,
                optimizer: str = "adamw") -> dict:
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(directory)
    config = hfkit.TrainingConfig(max_steps=steps, lr=3e-5, batch_size=batch, precision="bf16", compile=compile,
                                  log_every=log_every, progress=False, max_length=128, seed=0, optimizer=optimizer)
    trainer = hfkit.Trainer(model, config, synthetic_rows(batch * steps * trainer_world(), 130, 30522, seed=1))
    records = []
    trainer.callbacks.append(lambda t, record: records.append(record))
    trainer.fit()
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
    return {"tokens_per_s": statistics.median(rates), "losses": [h["loss"] for h in trainer.history],
            "rank": trainer.world.rank, "world": trainer.world.size}


TRAINER_RUNS = ((False, "adamw"), (True, "adamw"), ("reduce-overhead", "adamw"), ("reduce-overhead", "clipped-adamw"))


def trainer_world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--workloads", default="bert,llama")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--trainer", action="store_true", help="also time hfkit.Trainer.fit on bert-base")
    parser.add_argument("--trainer-only", metavar="JSON", help="(torchrun) only the Trainer run; rank 0 writes JSON")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--graphs", default="bert", help="workloads that also run compile mode='reduce-overhead'")
    parser.add_argument("--profile", metavar="DIR", help="write torch.profiler kernel tables of the hfkit variants")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="also transformers and compiled hfkit on bfloat16 weights (autocast as well)")
    parser.add_argument("--only", metavar="PARTS", help="only the variants whose labels contain one of these "
                        "'|'-separated parts (plain text)")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = True
    tmp = Path(tempfile.mkdtemp())

    if args.trainer_only:  # the same global batch on however many processes torchrun started
        directory = tmp / "bert"
        torch.manual_seed(0)  # every run and rank builds the same initial model
        transformers.BertForSequenceClassification(transformers.BertConfig(
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).save_pretrained(directory)
        synthetic_tokenizer(directory, 30522)
        result = trainer_run(directory, args.global_batch // trainer_world(), args.steps, compile=False, log_every=1)
        if result["rank"] == 0:
            Path(args.trainer_only).write_text(json.dumps(result))
        print(json.dumps({k: v for k, v in result.items() if k != "losses"}))
        return

    rows = []
    for name in args.workloads.split(","):
        make_config, auto, batch, seq = WORKLOADS[name]
        config = make_config()
        torch.manual_seed(0)
        directory = tmp / name
        getattr(transformers, auto).from_config(config).save_pretrained(directory)
        data = batches(name, config, 4, batch, seq)
        tokens = batch * seq
        unmasked = [{k: v for k, v in b.items() if k != "attention_mask"} for b in data]  # what the Trainer passes
        variants = {  # label → (library, torch.compile mode or None, inputs)
            "transformers (sdpa)": (transformers, None, data),
            "hfkit": (hfkit, None, unmasked),
            "hfkit + torch.compile": (hfkit, "default", unmasked),
            "hfkit + torch.compile + ClippedAdamW": (hfkit, "default", unmasked),
            "hfkit + compile (CUDA graphs)": (hfkit, "reduce-overhead", unmasked),
            "hfkit + compile (CUDA graphs) + ClippedAdamW": (hfkit, "reduce-overhead", unmasked),
        }
        if args.bf16_weights:  # the same steps on bfloat16 weights (and optimizer states)
            variants.update({f"{label}, bf16 weights": variants[label] for label in (
                "transformers (sdpa)", "hfkit + torch.compile", "hfkit + torch.compile + ClippedAdamW")})
        # (the transformers row stays: the ratios' baseline)
        variants = {label: variants[label] for label in only_variants(variants, args.only, {"transformers (sdpa)"})}
        results, loop_rates = {}, {}
        for label, (library, mode, inputs) in variants.items():
            if "graphs" in label and name not in args.graphs.split(","):
                continue
            options = {"attn_implementation": "sdpa"} if library is transformers else {}
            if label.endswith("bf16 weights"):
                options["dtype"] = torch.bfloat16
            model = getattr(library, auto).from_pretrained(directory, **options)
            if mode:
                model = torch.compile(model, mode=None if mode == "default" else mode)
            model = model.cuda()
            ms, spread, loop_ms = time_steps(model, inputs, args.steps, clipped_adamw="ClippedAdamW" in label)
            if args.profile and label in ("hfkit", "hfkit + torch.compile"):
                safe_label = re.sub(r"[^\w.-]+", "_", label)  # "hfkit + torch.compile" → hfkit_torch.compile
                profile(model, inputs, Path(args.profile) / f"{name}-{safe_label}.txt")
            results[label], loop_rates[label] = tokens / ms * 1000, tokens / loop_ms * 1000
            rows.append((name, f"B{batch} × S{seq}", label, ms, results[label], results[label] / results["transformers (sdpa)"],
                         spread, loop_rates[label], loop_rates[label] / loop_rates["transformers (sdpa)"]))
            print(rows[-1], flush=True)
            del model
            torch.cuda.empty_cache()
        if name == "bert" and args.trainer:
            synthetic_tokenizer(directory, config.vocab_size)
            for compile, optimizer in TRAINER_RUNS:
                rate = trainer_run(directory, batch, 120, compile, optimizer=optimizer)["tokens_per_s"]
                suffix = {False: "", True: " + compile", "reduce-overhead": " + compile (CUDA graphs)"}[compile]
                suffix += " + ClippedAdamW" if optimizer == "clipped-adamw" else ""
                rows.append((name, f"B{batch} × S{seq}", f"hfkit Trainer.fit{suffix}",
                             tokens / rate * 1000, rate, rate / results["transformers (sdpa)"], float("nan"), rate,
                             rate / loop_rates["transformers (sdpa)"]))
                print(rows[-1], flush=True)

    props = torch.cuda.get_device_properties(0)
    lines = [(f"Device: {props.name}; torch {torch.__version__}; transformers {transformers.__version__}; "
              f"{datetime.date.today()}; bf16 autocast, fused AdamW, TF32 on; median of {args.steps} steps after {WARMUP} "
              f"warm-up, each synchronised; back to back: the mean of {args.steps} more steps with no sync between them "
              "(Trainer.fit rows: its logged rate)."),
             "", ("| workload | shape | implementation | ms / step | tokens/s | × transformers | spread "
                  "| back to back: tokens/s | × transformers |"), "|---|---|---|---|---|---|---|---|---|"]
    for name, shape, label, ms, rate, ratio, spread, loop_rate, loop_ratio in rows:
        lines.append(f"| {name} | {shape} | {label} | {ms:.1f} | {rate / 1000:.1f} k | {ratio:.2f} | {spread:.2f} "
                     f"| {loop_rate / 1000:.1f} k | {loop_ratio:.2f} |")
    print("\n".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
