"""Checkpoint loading: sharding, tied weights, heads on base checkpoints, dtypes, and clear errors."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import hfkit
from hfkit.errors import CheckpointError, ConfigError, ModelNotFoundError

from .parity.tiny import padded_batch, tiny_reference


@pytest.fixture(scope="module")
def bert_mlm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert-mlm")
    tiny_reference("bert", "masked-lm").save_pretrained(path)
    return path


def logits_equal(reference, ours, batch):
    with torch.no_grad():
        return (reference(**batch).logits - ours(**batch).logits).abs().max().item() <= 1e-5


def test_sharded_checkpoint(tmp_path):
    reference = tiny_reference("roberta", "token-classification")
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("model-*.safetensors"))) > 2
    ours = hfkit.AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert logits_equal(reference, ours, padded_batch(reference.config))


def test_mlm_decoder_is_tied_to_word_embeddings(bert_mlm_dir):
    keys = load_file(bert_mlm_dir / "model.safetensors").keys()
    assert "cls.predictions.decoder.weight" not in keys  # transformers stores the tied weight once
    model = hfkit.AutoModelForMaskedLM.from_pretrained(bert_mlm_dir)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_legacy_checkpoint_with_tied_copies_and_gamma_beta(bert_mlm_dir, tmp_path):
    """Old checkpoints stored the decoder weight/bias copies and TF-era LayerNorm.gamma/beta names."""
    shutil.copy(bert_mlm_dir / "config.json", tmp_path)
    tensors = load_file(bert_mlm_dir / "model.safetensors")
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].clone()
    tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].clone()
    tensors["bert.embeddings.position_ids"] = torch.arange(512)[None]
    for key in [k for k in tensors if k.endswith("LayerNorm.weight")]:
        tensors[key.replace("LayerNorm.weight", "LayerNorm.gamma")] = tensors.pop(key)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reference = hfkit.AutoModelForMaskedLM.from_pretrained(bert_mlm_dir)
    legacy = hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert logits_equal(reference, legacy, padded_batch(reference.config))


def test_head_on_base_checkpoint_is_initialised_and_reported(tmp_path, caplog):
    tiny_reference("bert", "base").save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hfkit"):
        model = hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    assert model.classifier.weight.shape == (3, 32) and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert 0.005 < model.classifier.weight.std().item() < 0.05 and model.classifier.bias.abs().sum() == 0
    assert len([r for r in caplog.records if "newly initialised" in r.message]) == 1
    assert "classifier.weight" in caplog.text


def test_base_model_from_task_checkpoint(tmp_path):
    reference = tiny_reference("distilbert", "token-classification")
    reference.save_pretrained(tmp_path)
    base = hfkit.AutoModel.from_pretrained(tmp_path)
    batch = padded_batch(reference.config)
    with torch.no_grad():
        expected = reference.distilbert(**batch).last_hidden_state
        assert (base(**batch).last_hidden_state - expected).abs().max() <= 1e-5


def test_bfloat16_load_and_auto_dtype(tmp_path):
    tiny_reference("bert", "base").to(torch.bfloat16).save_pretrained(tmp_path)
    assert hfkit.AutoModel.from_pretrained(tmp_path).dtype == torch.bfloat16  # "auto": as stored
    assert hfkit.AutoModel.from_pretrained(tmp_path, dtype="float32").dtype == torch.float32


def test_config_overrides_and_label_maps(tmp_path):
    tiny_reference("bert", "sequence-classification").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert model.config.id2label == {int(k): v for k, v in saved["id2label"].items()}
    assert model.config.label2id == {v: int(k) for k, v in saved["id2label"].items()}
    with pytest.raises(CheckpointError, match="shape mismatch"):
        hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=4, ignore_mismatched_sizes=True)
    assert model.config.id2label == {i: f"LABEL_{i}" for i in range(4)} and model.classifier.weight.shape[0] == 4


# ---- bad input: each a clear HfkitError naming the problem ----

def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama-9000"}))
    with pytest.raises(ConfigError, match="llama-9000.*bert.*distilbert"):
        hfkit.AutoModel.from_pretrained(tmp_path)


def test_directory_without_config(tmp_path):
    with pytest.raises(ConfigError, match="No config.json"):
        hfkit.AutoModel.from_pretrained(tmp_path)


def test_invalid_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        hfkit.AutoModel.from_pretrained(tmp_path)


def test_no_weights_points_at_convert(bert_mlm_dir, tmp_path):
    shutil.copy(bert_mlm_dir / "config.json", tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="hfkit convert"):
        hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)


def test_truncated_safetensors(bert_mlm_dir, tmp_path):
    shutil.copy(bert_mlm_dir / "config.json", tmp_path)
    data = (bert_mlm_dir / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)


def test_garbage_safetensors_header(bert_mlm_dir, tmp_path):
    shutil.copy(bert_mlm_dir / "config.json", tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}...")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)


def test_missing_tensor_and_wrong_shape_listed_together(bert_mlm_dir, tmp_path):
    shutil.copy(bert_mlm_dir / "config.json", tmp_path)
    tensors = load_file(bert_mlm_dir / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.key.weight"]
    tensors["bert.encoder.layer.0.output.dense.bias"] = torch.zeros(7)
    tensors["bert.encoder.layer.9.surprise"] = torch.zeros(1)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as info:
        hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing (1): bert.encoder.layer.1.attention.self.key.weight" in message
    assert "unexpected (1): bert.encoder.layer.9.surprise" in message
    assert "shape mismatch (1): bert.encoder.layer.0.output.dense.bias: checkpoint (7,) vs model (32,)" in message


def test_nonexistent_repo_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        hfkit.AutoModel.from_pretrained("nobody-here/no-such-model", cache_dir=tmp_path)
    message = str(info.value)
    assert "nobody-here/no-such-model" in message and str(tmp_path) in message and "HF_HUB_OFFLINE" in message


def test_local_files_only_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "cache")):
        hfkit.AutoModel.from_pretrained("org/absent", local_files_only=True)


def cached_snapshot(model_dir, cache, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """Lay `model_dir` out as huggingface_hub caches `repo`: models--org--name/{refs/main, snapshots/<commit>}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(model_dir, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return root / "snapshots" / commit


def test_cached_snapshot_is_found_offline(bert_mlm_dir, tmp_path, monkeypatch):
    """A model in the HF cache layout (models--org--name/snapshots/<commit>) loads with HF_HUB_OFFLINE=1."""
    snapshot = cached_snapshot(bert_mlm_dir, tmp_path, "org/tiny-bert")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "unused"))
    model = hfkit.AutoModelForMaskedLM.from_pretrained("org/tiny-bert", cache_dir=tmp_path)
    assert model.source_dir == snapshot


def test_hf_hub_cache_env_is_honoured(bert_mlm_dir, tmp_path, monkeypatch):
    snapshot = cached_snapshot(bert_mlm_dir, tmp_path, "org/tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = hfkit.AutoModelForMaskedLM.from_pretrained("org/tiny", local_files_only=True)
    assert model.source_dir == snapshot


def test_wrong_family_class(tmp_path):
    tiny_reference("roberta", "base").save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="model_type 'roberta'.*Auto"):
        hfkit.BertModel.from_pretrained(tmp_path)
