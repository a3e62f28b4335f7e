"""One Trainer for every head, on CPU, one GPU or several (`torchrun` + PyTorch DDP).

    rows ─featurize─▶ features ─batch_indices(seed, epoch, rank)─▶ collate ─▶ model(**batch).loss
        ─backward (no_sync until the last micro-batch)─▶ clip ─▶ AdamW ─▶ schedule ─▶ log / eval / checkpoint

The data order is a pure function of (seed, epoch), so a checkpoint only stores the position in the epoch;
with the RNG states and the collation generator restored, a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..cpu_support import warn_if_emulated
from ..errors import ConfigError
from . import metrics
from .checkpoint import (
    checkpoint_dir,
    checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from .collate import make_task_data, task_of
from .config import TrainingConfig
from .data import load_rows
from .distributed import setup_world, wrap
from .evaluation import evaluate
from .optim import ClippedAdamW, make_optimizer, make_scheduler
from .runlog import RunLog
from .sampling import batch_indices

Callback = Callable[["Trainer", dict[str, Any]], None]


def default_max_length(model_config, tokenizer, task: str) -> int:
    """The model's position limit, capped at 512 (1024 for causal-LM blocks) and at the tokenizer's limit."""
    cap = 1024 if task == "causal-lm" else 512
    positions = getattr(model_config, "max_position_embeddings", None) or cap
    return min(cap, positions, getattr(tokenizer, "model_max_length", cap) or cap)


class Trainer:
    """Fine-tune (or pretrain) `model` on `train_data`; rows are dicts (see `hfkit.train.collate`).

    train_data / eval_data: a list of dicts, a .jsonl/.json/.csv/.parquet path or a `datasets.Dataset`.
    tokenizer: default the one saved beside the model. task: default from the model's head.
    callbacks: called on the main process with every log record (`{"step", "loss", ...}` or `{"eval_…"}`)."""

    def __init__(self, model, config: TrainingConfig | None = None, train_data=None, eval_data=None, *,
                 tokenizer=None, task: str | None = None, device: str | torch.device | None = None,
                 callbacks: Sequence[Callback] = ()):
        from ..nn.quantize import is_quantized  # here: it brings nn.matvec (and Triton) with it

        if is_quantized(model):
            raise ConfigError("This model is int8-quantized (inference only): train the model before quantizing it.")
        self.config = config or TrainingConfig()
        if self.config.chunked_loss and not hasattr(model, "chunked_loss"):
            raise ConfigError(f"chunked_loss is for causal-LM models; {type(model).__name__} is not one.")
        self.world = setup_world(device)
        self.task = task or task_of(model)
        self.tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        self.max_length = self.config.max_length or default_max_length(model.config, self.tokenizer, self.task)
        self.doc_stride = self.config.doc_stride if self.config.doc_stride is not None else min(128, self.max_length // 3)
        self.data = make_task_data(self.task, self.tokenizer, model.config, max_length=self.max_length,
                                   doc_stride=self.doc_stride, mlm_probability=self.config.mlm_probability,
                                   block_size=self.config.block_size, pad_to_multiple_of=self.config.pad_to_multiple_of)
        self.model = model.to(self.world.device)
        self.train_features = self._features(train_data)
        self.eval_rows = None if eval_data is None else load_rows(eval_data, self.config.columns)
        self.eval_features = None if self.eval_rows is None else self.data.featurize(self.eval_rows)
        self.precision = self._precision()
        self.callbacks = list(callbacks)
        self.history: list[dict[str, Any]] = []  # {"step", "loss"} of every optimizer step
        self.summary: dict[str, Any] = {}  # the latest value of every logged field
        self.generator = torch.Generator().manual_seed(self.config.seed)  # collation randomness (MLM masks)

    def _features(self, data) -> list[dict] | None:
        if data is None:
            return None
        features = self.data.featurize(load_rows(data, self.config.columns))
        if not features:
            raise ConfigError("The training data gave no examples (empty, or every text shorter than one block).")
        return features

    def _precision(self) -> str:
        precision, device = self.config.precision, self.world.device
        if precision == "auto":
            return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU.")
        if precision == "bf16" and device.type == "cpu":
            warn_if_emulated("bfloat16", "Train with precision='fp32' on this CPU.")
        return precision

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.world.device.type, dtype=dtype)

    # ---- training ---------------------------------------------------------------------------------------

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        cfg = self.config
        return batch_indices(self.data.lengths(self.train_features), cfg.batch_size, seed=cfg.seed, epoch=epoch,
                             shuffle=True, group_by_length=cfg.group_by_length, rank=self.world.rank,
                             world_size=self.world.size)

    def total_steps(self) -> int:
        if self.config.max_steps:
            return self.config.max_steps
        return math.ceil(len(self._epoch_batches(0)) / self.config.grad_accum) * self.config.epochs

    def fit(self) -> dict[str, Any]:
        """Train to `max_steps` (or `epochs`); returns the latest value of every logged field (loss, eval_…)."""
        if self.train_features is None:
            raise ConfigError("Trainer.fit() needs train_data.")
        cfg, world = self.config, self.world
        torch.manual_seed(cfg.seed)
        total = self.total_steps()
        optimizer = make_optimizer(self.model, cfg, world.device)
        scheduler = make_scheduler(optimizer, cfg, total)
        scaler = torch.amp.GradScaler(world.device.type) if self.precision == "fp16" else None
        state = {"step": 0, "epoch": 0, "batch": 0, "best_metric": None, "best_step": None, "optimizer": cfg.optimizer}
        state.update(self._resume(optimizer, scheduler, scaler))
        model = wrap(self.model, world)
        runner = self._compiled(model)
        graphs = cfg.compile in ("reduce-overhead", "max-autotune")  # CUDA graphs: outputs live until the next replay
        log = RunLog(cfg.output_dir if world.main else None, total, state["step"], cfg.progress and world.main)
        self.model.train()
        chunked_before = getattr(self.model, "chunked_loss", None)
        if cfg.chunked_loss:  # for this run only: afterwards the model returns logits with its loss again
            self.model.chunked_loss = True
        losses, micro, tokens, clock = [], [], 0, time.perf_counter()
        try:
            while state["step"] < total:
                batches = self._epoch_batches(state["epoch"])
                for index in range(state["batch"], len(batches)):
                    group_end = min(len(batches), (index // cfg.grad_accum + 1) * cfg.grad_accum)
                    group = group_end - (index // cfg.grad_accum) * cfg.grad_accum
                    batch = self.data.collate([self.train_features[i] for i in batches[index]], self.generator)
                    tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
                    if "attention_mask" in batch and bool(batch["attention_mask"].all()):
                        del batch["attention_mask"]  # checked here on the CPU: the model skips masking without a sync
                    batch = {key: value.to(world.device, non_blocking=True) for key, value in batch.items()}
                    last = index + 1 == group_end
                    with (contextlib.nullcontext() if last or not world.distributed else model.no_sync()):
                        if graphs:
                            torch.compiler.cudagraph_mark_step_begin()
                        with self.autocast():
                            loss = runner(**batch).loss / group
                        (scaler.scale(loss) if scaler else loss).backward()
                    micro.append(loss.detach().clone() if graphs else loss.detach())
                    if not last:
                        continue
                    losses.append(torch.stack(micro).sum())  # this step's loss, kept on the device
                    micro = []
                    self._step(optimizer, scheduler, scaler)
                    state["step"], state["batch"] = state["step"] + 1, index + 1
                    if state["step"] % cfg.log_every == 0 or state["step"] == total:
                        self._log_train(log, state, losses, tokens, time.perf_counter() - clock, scheduler)
                        losses, tokens, clock = [], 0, time.perf_counter()
                    if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                        self._evaluate_and_select(log, state, optimizer, scheduler, scaler)
                    if cfg.save_every and state["step"] % cfg.save_every == 0:
                        self._save(state, optimizer, scheduler, scaler)
                    if state["step"] >= total:
                        break
                else:
                    state["epoch"], state["batch"] = state["epoch"] + 1, 0
                    if cfg.eval_every is None:
                        self._evaluate_and_select(log, state, optimizer, scheduler, scaler)
                    if cfg.save_every is None:
                        self._save(state, optimizer, scheduler, scaler)
            if self.eval_features is not None and state.get("evaluated_at") != state["step"]:
                self._evaluate_and_select(log, state, optimizer, scheduler, scaler)
        finally:
            log.close()
            if cfg.chunked_loss:
                self.model.chunked_loss = chunked_before
        self._finish(state)
        return dict(self.summary)

    def _compiled(self, model):
        """torch.compile per config.compile (True = the default mode); the model itself when off."""
        mode = self.config.compile
        if mode is False:
            return model
        return torch.compile(model, mode=None if mode is True or mode == "default" else mode)

    def _step(self, optimizer, scheduler, scaler) -> None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.config.max_grad_norm and not isinstance(optimizer, ClippedAdamW):  # that one clips as it steps
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    def _log_train(self, log: RunLog, state, losses, tokens: int, seconds: float, scheduler) -> None:
        """The losses of the steps since the last record, averaged over processes, in one host sync."""
        step_losses = [value / self.world.size for value in self.world.sum(torch.stack(losses).float().cpu().tolist())]
        tokens = int(self.world.sum([float(tokens)])[0])
        first = state["step"] - len(step_losses) + 1
        for offset, value in enumerate(step_losses):
            self.history.append({"step": first + offset, "loss": value})
        record = {"step": state["step"], "epoch": state["epoch"], "loss": sum(step_losses) / len(step_losses),
                  "lr": float(scheduler.get_last_lr()[0]), "tokens_per_s": tokens / max(seconds, 1e-9)}
        self._emit(log, record)

    def _emit(self, log: RunLog, record: dict[str, Any]) -> None:
        if self.world.main:
            for callback in self.callbacks:  # first: a callback may add to the record (a text sample)
                callback(self, record)
        log.write(record)
        self.summary.update(record)

    # ---- evaluation, best model, checkpoints ------------------------------------------------------------

    def evaluate(self, data=None) -> dict[str, float]:
        """Loss and task metrics on `data` (default: eval_data), computed on the main process."""
        rows = self.eval_rows if data is None else load_rows(data, self.config.columns)
        features = self.eval_features if data is None else self.data.featurize(rows)
        if features is None:
            raise ConfigError("Trainer.evaluate() needs eval_data (in the Trainer or as its argument).")
        size = self.config.eval_batch_size or 2 * self.config.batch_size
        generator = torch.Generator().manual_seed(self.config.seed)  # the same MLM masks at every evaluation
        lengths = self.data.lengths(features)
        order = sorted(range(len(features)), key=lengths.__getitem__)
        batches = (self.data.collate([features[i] for i in order[lo:lo + size]], generator)
                   for lo in range(0, len(order), size))
        result = evaluate(self.model, self.task, batches, rows, self.tokenizer, self.world.device, self.autocast,
                          self.doc_stride, self.max_length) if self.world.main else {}
        self.world.barrier()
        return result

    def _metric(self) -> tuple[str, bool]:
        name = self.config.metric or metrics.best_metric_name(self.task)
        return name, metrics.greater_is_better(name)

    def _evaluate_and_select(self, log: RunLog, state, optimizer, scheduler, scaler) -> None:
        if self.eval_features is None:
            return
        result = self.evaluate()
        state["evaluated_at"] = state["step"]
        self._emit(log, {"step": state["step"], "epoch": state["epoch"], **{f"eval_{k}": v for k, v in result.items()}})
        if not self.world.main:
            result = {}
        name, greater = self._metric()
        value, loss = self.world.sum([float(result.get(name, result.get("loss", 0.0))), float(result.get("loss", 0.0))])
        # rank 0 evaluated (the others added 0); ties on the metric (accuracy 1.0 twice) go to the lower loss
        score = (value if greater else -value, -loss)
        best = state.get("best_score")
        if best is None or score > tuple(best):
            state["best_metric"], state["best_score"], state["best_step"] = value, list(score), state["step"]
            if self.config.output_dir:
                self._save(state, optimizer, scheduler, scaler)

    def _save(self, state, optimizer, scheduler, scaler) -> None:
        if not self.config.output_dir or state.get("saved_at") == state["step"]:
            return
        state["saved_at"] = state["step"]
        keep = self.config.save_limit
        best = state["best_step"]
        path = save_checkpoint(self.config.output_dir, self.world, self.model, optimizer, scheduler, scaler,
                               self.generator, state, keep, protect=best)
        if path is not None and self.world.main:
            (Path(self.config.output_dir) / "trainer_state.json").write_text(json.dumps(state, indent=2))

    def _resume(self, optimizer, scheduler, scaler) -> dict[str, Any]:
        if not self.config.output_dir:
            return {}
        found = checkpoints(self.config.output_dir)
        if found and not self.config.resume:
            raise ConfigError(f"{self.config.output_dir} holds checkpoints of an earlier run ({found[-1].name}); "
                              "pass resume=True to continue it, or choose another output_dir.")
        if not found:
            return {}
        return load_checkpoint(found[-1], self.world, self.model, optimizer, scheduler, scaler, self.generator,
                               self.config.optimizer)

    def _finish(self, state) -> None:
        """Load the best evaluated weights (when asked and saved) and export the result to output_dir/model."""
        out = self.config.output_dir
        if out and self.config.load_best_at_end and state["best_step"] not in (None, state["step"]):
            load_weights(checkpoint_dir(out, state["best_step"]), self.model, self.world.device)
        if out and self.world.main:
            if getattr(self.model, "lora_config", None) is not None:
                self.model.save_adapter(Path(out) / "adapter")
            else:
                from ..export import save_pretrained

                save_pretrained(self.model, Path(out) / "model", tokenizer_source=self.tokenizer.source_dir)
        self.model.eval()
        self.world.barrier()
