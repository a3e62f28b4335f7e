"""The Trainer on the CPU: it learns, it resumes bit-identically, two DDP processes equal one, it refuses bad set-ups."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import hfkit
from hfkit.errors import ConfigError
from hfkit.train.optim import (
    ClippedAdamW,
    lr_factor,
    make_optimizer,
    parameter_groups,
)

from .train_fixtures import ID2LABEL, tiny_bert, topic_rows


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny-cls"), num_labels=3, id2label=ID2LABEL,
                     label2id={v: k for k, v in ID2LABEL.items()})


def load(directory):
    return hfkit.AutoModelForSequenceClassification.from_pretrained(directory)


def test_learns_a_synthetic_task(classifier_dir, tmp_path):
    config = hfkit.TrainingConfig(epochs=4, lr=3e-3, batch_size=16, warmup_ratio=0.1, progress=False,
                                  output_dir=str(tmp_path / "run"), log_every=5)
    trainer = hfkit.Trainer(load(classifier_dir), config, train_data=topic_rows(800, seed=1),
                            eval_data=topic_rows(120, seed=2))
    before = trainer.evaluate()
    final = trainer.fit()
    assert trainer.total_steps() == 200
    assert final["eval_accuracy"] > 0.9 > before["accuracy"] + 0.3
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"] / 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "tokens_per_s"} <= set(records[0]) and any("eval_macro_f1" in r for r in records)
    exported = hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model")
    assert exported.predict("I like to eat apple and cherry")[0]["label"] == "fruit"


def run_losses(classifier_dir, out, stop_after: int | None = None, resume: bool = False,
               optimizer: str = "adamw") -> list[dict]:
    """20 steps with dropout on and MLM-free data; `stop_after` interrupts once that step's checkpoint exists."""
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(classifier_dir, hidden_dropout_prob=0.1)

    def interrupt(trainer, record):
        if stop_after is not None and record.get("step") == stop_after + 1:
            raise KeyboardInterrupt

    config = hfkit.TrainingConfig(max_steps=20, lr=1e-3, batch_size=8, grad_accum=2, save_every=5, log_every=1,
                                  warmup_steps=3, progress=False, output_dir=str(out), resume=resume, save_limit=1,
                                  optimizer=optimizer)
    trainer = hfkit.Trainer(model, config, train_data=topic_rows(100, seed=3), callbacks=[interrupt], device="cpu")
    try:
        trainer.fit()
    except KeyboardInterrupt:
        pass
    return trainer.history


def test_resume_repeats_the_uninterrupted_run(classifier_dir, tmp_path):
    full = run_losses(classifier_dir, tmp_path / "a")
    first = run_losses(classifier_dir, tmp_path / "b", stop_after=10)
    assert [r["step"] for r in first] == list(range(1, 12))  # step 11 ran, but its checkpoint was never written
    rest = run_losses(classifier_dir, tmp_path / "b", resume=True)
    assert [r["step"] for r in rest] == list(range(11, 21))
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[10:]]  # bit-identical, not merely close
    with pytest.raises(ConfigError, match="resume=True"):
        run_losses(classifier_dir, tmp_path / "b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_weights(classifier_dir, batch_size: int) -> dict[str, torch.Tensor]:
    config = hfkit.TrainingConfig(max_steps=6, lr=1e-3, batch_size=batch_size, progress=False, group_by_length=True)
    trainer = hfkit.Trainer(load(classifier_dir), config, train_data=topic_rows(64, seed=4), device="cpu")
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _ddp_worker(rank: int, world: int, port: int, classifier_dir, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    weights = _train_weights(classifier_dir, batch_size=4)
    if rank == 0:
        torch.save(weights, out)
    torch.distributed.destroy_process_group()


def test_two_ddp_processes_equal_one_with_the_same_global_batch(classifier_dir, tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), classifier_dir, out), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    single = _train_weights(classifier_dir, batch_size=8)
    start = load(classifier_dir).state_dict()
    assert max((ddp[k] - start[k]).abs().max() for k in start) > 1e-3  # the weights did move
    assert max((ddp[k] - single[k]).abs().max() for k in single) <= 1e-5


def test_trainer_steps_clipped_adamw_like_adamw_and_resumes_it(classifier_dir, tmp_path):
    """optimizer="clipped-adamw" (clipping inside its compiled step) follows the default clip + AdamW run, resumes
    bit-identically, and a checkpoint is resumed only with the optimizer that wrote it."""
    reference = run_losses(classifier_dir, tmp_path / "a")
    full = run_losses(classifier_dir, tmp_path / "b", optimizer="clipped-adamw")
    assert [r["step"] for r in full] == list(range(1, 21))
    for ours, theirs in zip(full, reference, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    run_losses(classifier_dir, tmp_path / "c", stop_after=10, optimizer="clipped-adamw")
    rest = run_losses(classifier_dir, tmp_path / "c", resume=True, optimizer="clipped-adamw")
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[10:]]
    with pytest.raises(ConfigError, match="written with optimizer='clipped-adamw'"):
        run_losses(classifier_dir, tmp_path / "c", resume=True)


def test_weight_decay_skips_biases_and_norms(classifier_dir):
    model = load(classifier_dir)
    decay, no_decay = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any(names[id(p)].endswith("word_embeddings.weight") for p in decay["params"])


def test_clipped_adamw_steps_like_clip_grad_norm_and_adamw():
    """ClippedAdamW (compiled, here on the CPU) takes clip_grad_norm_ + AdamW's step, follows the schedule through
    its tensor lr without recompiling, leaves no gradients and resumes from its state_dict."""
    torch.manual_seed(0)
    ours = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4))
    reference = copy.deepcopy(ours)
    config = hfkit.TrainingConfig(lr=1e-3, compile=True, max_grad_norm=0.05, weight_decay=0.1)
    clipped_config = dataclasses.replace(config, optimizer="clipped-adamw")
    optimizer = make_optimizer(ours, clipped_config, torch.device("cpu"))
    assert isinstance(optimizer, ClippedAdamW)
    reference_optimizer = make_optimizer(reference, config, torch.device("cpu"))
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1 - step / 10)
                 for o in (optimizer, reference_optimizer)]

    def step(model, optimizer, schedule, x):
        model(x).square().mean().backward()
        if not isinstance(optimizer, ClippedAdamW):
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if schedule is not None:
            schedule.step()

    torch._dynamo.utils.counters.clear()
    for _ in range(3):
        x = torch.randn(8, 16)
        assert all(p.grad is None for p in ours.parameters())
        step(ours, optimizer, schedules[0], x)
        step(reference, reference_optimizer, schedules[1], x)
        for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    resumed = copy.deepcopy(ours)
    resumed_optimizer = make_optimizer(resumed, clipped_config, torch.device("cpu"))
    resumed_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as a checkpoint holds it
    x = torch.randn(8, 16)
    step(ours, optimizer, schedules[0], x)
    step(resumed, resumed_optimizer, None, x)
    for mine, theirs in zip(ours.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_schedules():
    assert [lr_factor(s, 2, 10, "linear") for s in (0, 1, 2, 6, 10)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(9, 2, 10, "constant") == 1.0


def test_bad_options_are_named():
    with pytest.raises(ConfigError, match="precision"):
        hfkit.TrainingConfig(precision="fp8")
    with pytest.raises(ConfigError, match="batch_size"):
        hfkit.TrainingConfig(batch_size=0)
    with pytest.raises(ConfigError, match="GradScaler"):
        hfkit.TrainingConfig(optimizer="clipped-adamw", precision="fp16")
    with pytest.raises(ConfigError, match="Unknown optimizer"):
        hfkit.TrainingConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="Unknown training option"):
        hfkit.TrainingConfig.from_dict({"learning_rate": 1e-3})


def test_training_config_from_yaml(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\nlr: 0.001\nprecision: bf16\n")
    config = hfkit.TrainingConfig.from_file(path, batch_size=4)
    assert (config.epochs, config.lr, config.precision, config.batch_size) == (2, 0.001, "bf16", 4)


def test_pad_to_multiple_of_bounds_batch_shapes(classifier_dir):
    config = hfkit.TrainingConfig(batch_size=4, pad_to_multiple_of=16, max_length=40, progress=False)
    trainer = hfkit.Trainer(load(classifier_dir), config, train_data=topic_rows(8, seed=6))
    batch = trainer.data.collate(trainer.train_features[:4])
    assert batch["input_ids"].shape[1] == 16 and batch["attention_mask"][:, -1].sum() == 0
