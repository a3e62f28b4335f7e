"""`hfkit train` / `hfkit pretrain` end to end on tiny models: every task trains, evaluates with its metrics,
exports; pretraining from scratch learns a corpus and samples text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import hfkit
from hfkit.cli.app import app
from hfkit.train.run import labels_in, train

from .train_fixtures import tiny_bert, topic_rows

runner = CliRunner()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_train_cli_reads_labels_from_the_data(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertModel")  # no head yet: the classifier is created with 3 labels
    train_file = write_jsonl(tmp_path / "train.jsonl", topic_rows(800, seed=1))
    dev_file = write_jsonl(tmp_path / "dev.jsonl", topic_rows(60, seed=2))
    (tmp_path / "train.yaml").write_text("epochs: 2\nwarmup_ratio: 0.1\nbatch_size: 16\nprogress: false\n")
    result = runner.invoke(app, ["train", "--task", "classify", "--model", str(base), "--train", str(train_file),
                                 "--eval", str(dev_file), "--out", str(tmp_path / "out"), "--epochs", "4",
                                 "--lr", "0.003", "--config", str(tmp_path / "train.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{"):])
    assert record["eval_accuracy"] > 0.9
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "model")
    assert sorted(model.config.label2id) == ["fruit", "sport", "tech"]


def test_train_cli_errors_are_named(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertModel")
    result = runner.invoke(app, ["train", "--task", "classify", "--model", str(base), "--train",
                                 str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "missing.jsonl" in result.output


NER_ROWS = [{"tokens": ["alice", "visited", "paris", "and", "berlin"], "tags": ["B-PER", "O", "B-LOC", "O", "B-LOC"]},
            {"tokens": ["bob", "lives", "in", "new", "york"], "tags": ["B-PER", "O", "O", "B-LOC", "I-LOC"]}] * 8
SPAN_ROWS = [{"text": "carol flew to tokyo", "entities": [{"start": 0, "end": 5, "label": "PER"},
                                                          {"start": 14, "end": 19, "label": "LOC"}]}]


def test_ner_trains_with_entity_f1(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertModel")
    assert labels_in("ner", NER_ROWS) == ["O", "B-LOC", "B-PER", "I-LOC"]
    assert labels_in("ner", SPAN_ROWS) == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    record = train("ner", str(base), NER_ROWS, NER_ROWS[:2], hfkit.TrainingConfig(
        max_steps=40, lr=5e-3, batch_size=8, progress=False, output_dir=str(tmp_path / "out")))
    assert record["eval_f1"] > 0.9 and {"eval_precision", "eval_recall"} <= set(record)


QA_ROWS = [{"question": "who wrote it?", "context": "the book was written by alice in paris.",
            "answers": {"text": ["alice"], "answer_start": [24]}},
           {"question": "where was it written?", "context": "the book was written by alice in paris.",
            "answers": {"text": ["paris"], "answer_start": [33]}}] * 8


def test_qa_trains_with_squad_metrics(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertModel")
    record = train("qa", str(base), QA_ROWS, QA_ROWS[:2], hfkit.TrainingConfig(
        max_steps=60, lr=5e-3, batch_size=8, progress=False))
    assert record["eval_exact_match"] == 100.0 and record["eval_f1"] == 100.0


def test_mlm_reports_perplexity(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertForMaskedLM")
    rows = [{"text": row["text"]} for row in topic_rows(64, seed=5)]
    record = train("mlm", str(base), rows, rows[:16], hfkit.TrainingConfig(max_steps=30, lr=3e-3, batch_size=16,
                                                                           progress=False))
    assert record["eval_perplexity"] == pytest.approx(torch.tensor(record["eval_loss"]).exp().item(), rel=1e-6)
    assert record["eval_perplexity"] < 30522 / 10  # far below a uniform guess over the vocabulary


CORPUS = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n\n\nprint(add(2, 3), mul(4, 5))\n"


def test_pretrain_from_scratch(tmp_path):
    for i in range(12):
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / f"m{i}.py").write_text(CORPUS.replace("add", f"add{i}"))
    config = tmp_path / "small-llama.json"
    config.write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                  "max_position_embeddings": 128}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["pretrain", "--files", str(tmp_path / "corpus" / "*.py"), "--config", str(config),
                                 "--tokenizer-vocab", "300", "--out", str(out), "--max-steps", "150",
                                 "--block-size", "32", "--sample-every", "50", "--prompt", "def", "--json"])
    assert result.exit_code == 0, result.output
    assert "--- sample at step 50 ---" in result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0] / 2
    assert isinstance(records[-1]["sample"], str) and records[-1]["sample"]
    model = hfkit.AutoModelForCausalLM.from_pretrained(out / "model")
    text = model.generate("def", max_new_tokens=12)
    assert isinstance(text, str) and text
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoModelForCausalLM.from_pretrained(out / "model")
    ids = torch.tensor([model.tokenizer.encode("def add(a, b):")])
    with torch.no_grad():
        assert (reference(ids).logits - model(ids).logits).abs().max() <= 1e-5


def test_lora_fine_tuning_writes_an_adapter_that_reloads(tmp_path):
    base = tiny_bert(tmp_path / "base", head="BertModel")
    train_file = write_jsonl(tmp_path / "train.jsonl", topic_rows(200, seed=1))
    result = runner.invoke(app, ["train", "--task", "classify", "--model", str(base), "--train", str(train_file),
                                 "--out", str(tmp_path / "out"), "--max-steps", "20", "--lr", "0.01", "--lora",
                                 "--lora-r", "4", "--json"])
    assert result.exit_code == 0, result.output
    adapter = tmp_path / "out" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["target_modules"] == ["query", "value"] and config["task_type"] == "SEQ_CLS"
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label={0: "fruit", 1: "sport", 2: "tech"}, label2id={"fruit": 0, "sport": 1, "tech": 2})
    before = model.predict("apple banana", top_k=None)
    model.load_adapter(adapter)
    after = model.predict("apple banana", top_k=None)
    assert before != after
    model.merge_lora()
    assert model.predict("apple banana", top_k=None) == after
