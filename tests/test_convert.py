"""`hfkit convert`: pytorch_model.bin (single or sharded) → safetensors through torch.load(weights_only=True)
only; shared tensors stored once; malicious pickles refused with nothing executed; HF cache snapshots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import hfkit
from hfkit.cli.app import app
from hfkit.convert import convert
from hfkit.errors import CheckpointError
from hfkit.verify import verify_export

from .parity.tiny import padded_batch, tiny_reference

transformers = pytest.importorskip("transformers")
runner = CliRunner()


class Payload:
    """Unpickling this runs code: it creates the file `marker` (a weights-only load must refuse it)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def bin_checkpoint(directory: Path, family: str = "bert", task: str = "masked-lm", shards: int = 1):
    """A transformers model's config + `torch.save(state_dict)` (tied tensors share storage, as v4 saved them)."""
    reference = tiny_reference(family, task)
    reference.config.architectures = [type(reference).__name__]
    reference.config.save_pretrained(directory)
    state = reference.state_dict()
    if shards == 1:
        torch.save(state, directory / "pytorch_model.bin")
        return reference, state
    keys = list(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in keys[i::shards]}
        torch.save(part, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return reference, state


def logits(model, config):
    with torch.no_grad():
        return model(**padded_batch(config)).logits


@pytest.mark.parametrize("family,head", [("bert", "cls.predictions"), ("roberta", "lm_head")])
def test_single_bin_becomes_model_safetensors(tmp_path, family, head):
    reference, state = bin_checkpoint(tmp_path, family)
    embeddings = f"{family}.embeddings.word_embeddings.weight"
    assert state[f"{head}.decoder.weight"].data_ptr() == state[embeddings].data_ptr()
    result = convert(tmp_path)
    assert result.written == ["model.safetensors"] and result.directory == tmp_path
    stored = load_file(tmp_path / "model.safetensors")
    # the tied aliases are stored once, under the key transformers keeps (the embeddings, the head's bias)
    assert sorted(result.dropped) == [f"{head}.decoder.bias", f"{head}.decoder.weight"] and embeddings in stored
    assert set(stored) == set(state) - set(result.dropped)
    assert all(torch.equal(stored[k], state[k]) for k in stored)
    model = hfkit.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(logits(model, reference.config), logits(reference, reference.config))
    report = verify_export(tmp_path)  # transformers loads it strictly, outputs bit-identical
    assert report.ok, report.render()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_sharded_bin_with_index(tmp_path):
    reference, state = bin_checkpoint(tmp_path, "roberta", "token-classification", shards=3)
    result = convert(tmp_path)
    names = [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    assert result.written == [*names, "model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    stored = {k: v for name in names for k, v in load_file(tmp_path / name).items()}
    assert set(index["weight_map"]) == set(stored) == set(state) and set(index["weight_map"].values()) == set(names)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in stored.values())
    model = hfkit.AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert torch.equal(logits(model, reference.config), logits(reference, reference.config))
    assert convert(tmp_path).skipped  # already converted: nothing to do


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2), "evil": Payload(marker)},
               tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*code execution") as caught:
        convert(tmp_path)
    assert "exec" in str(caught.value)  # says why: the global the pickle wanted
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "pytorch_model.bin"]  # nothing written
    result = runner.invoke(app, ["convert", str(tmp_path)])
    assert result.exit_code == 2 and "code execution" in result.output and not marker.exists()


def test_not_a_state_dict_and_corrupt_files(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="state dict"):
        convert(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        convert(tmp_path)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="nothing to convert"):
        convert(tmp_path)


def test_out_dir_gets_a_loadable_copy(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    reference, _ = bin_checkpoint(source, "distilbert", "sequence-classification")
    (source / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    result = runner.invoke(app, ["convert", str(source), "--out", str(tmp_path / "converted")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "converted"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert sorted(p.name for p in source.iterdir()) == ["config.json", "pytorch_model.bin", "vocab.txt"]
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(out)
    assert torch.equal(logits(model, reference.config), logits(reference, reference.config))


def test_hf_cache_snapshot_is_converted_in_place(tmp_path, monkeypatch):
    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--org--tiny-bin"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    staging = tmp_path / "staging"
    staging.mkdir()
    reference, _ = bin_checkpoint(staging)
    for item in staging.iterdir():  # the cache layout: snapshot files are symlinks to blobs
        blob = repo / "blobs" / item.name
        item.rename(blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / item.name)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="hfkit convert"):
        hfkit.AutoModelForMaskedLM.from_pretrained("org/tiny-bin")
    result = runner.invoke(app, ["convert", "org/tiny-bin"])
    assert result.exit_code == 0, result.output
    assert (snapshot / "model.safetensors").is_file()
    model = hfkit.AutoModelForMaskedLM.from_pretrained("org/tiny-bin")
    assert torch.equal(logits(model, reference.config), logits(reference, reference.config))
