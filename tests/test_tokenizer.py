"""hfkit.Tokenizer against transformers' AutoTokenizer on the real all-MiniLM-L6-v2 and tiny BPE/Unigram tokenizers:
calls (pairs, truncation, padding, overflow windows, tensors), decoding, vocabulary helpers, attributes and `pad`,
plus arbitrary unicode (hypothesis). Folder variants and behaviour of hfkit's own are in test_tokenizer_folders.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hfkit.tokenizer import Tokenizer

from .conftest import (
    PAIRS,
    TEXTS,
    assert_same_encodings,
    load_both,
    packaged_minilm,
    reference_call,
)

MINILM = packaged_minilm()

transformers = pytest.importorskip("transformers")

QUESTIONS = ["who?", "what is it", "東京", "😀", "a", "b c", "why", "x", "y", "the fox"]

CASES = {
    "padded": dict(texts=TEXTS),
    "pairs": dict(texts=TEXTS, text_pairs=PAIRS),
    "truncate_to_model_max_length": dict(texts=TEXTS, truncation=True),
    "truncate_pairs": dict(texts=TEXTS, text_pairs=PAIRS, truncation=True),
    "max_length_padding": dict(texts=TEXTS, padding="max_length", truncation=True, max_length=16),
    "no_special_tokens": dict(texts=TEXTS, add_special_tokens=False, truncation="only_first", max_length=12),
    "overflow_only_second": dict(texts=QUESTIONS, text_pairs=TEXTS, truncation="only_second", max_length=24,
                                 stride=5, return_overflowing_tokens=True),
    "overflow_longest_first": dict(texts=TEXTS, truncation=True, max_length=20, stride=3,
                                   return_overflowing_tokens=True),
}


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def xlmr_dir(xlmr_raw_dir, tmp_path_factory) -> Path:
    """The XLM-R folder as transformers writes it after loading: its XLM-R pipeline (see test_tokenizer_folders.py)."""
    path = tmp_path_factory.mktemp("xlmr")
    transformers.AutoTokenizer.from_pretrained(xlmr_raw_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def folders(roberta_dir, xlmr_dir) -> dict[str, Path]:
    return {"minilm": MINILM, "roberta": roberta_dir, "xlmr": xlmr_dir}


@pytest.fixture(params=["minilm", "roberta", "xlmr"])
def pair(request, folders):
    return load_both(folders[request.param])


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("case", CASES)
def test_call_matches_transformers(pair, case):
    hf, tok = pair
    kwargs = dict(CASES[case])
    ref = reference_call(hf, **kwargs, return_offsets_mapping=True)
    ours = tok(**kwargs, return_offsets_mapping=True, return_tensors=None)
    assert list(ours) == list(ref)
    assert dict(ours) == dict(ref)
    assert_same_encodings(ref, ours, len(ref["input_ids"]))


@pytest.mark.parametrize("case", ["pairs", "overflow_only_second", "max_length_padding"])
def test_tensors_match_transformers(pair, case):
    hf, tok = pair
    ref = reference_call(hf, **CASES[case], return_offsets_mapping=True, return_tensors="pt")
    ours = tok(**CASES[case], return_offsets_mapping=True)
    assert list(ours) == list(ref)
    for key in ref:
        assert ours[key].dtype == torch.long and torch.equal(ours[key], ref[key]), key


def test_overflow_windows_cover_every_context(pair):
    hf, tok = pair
    ours = tok(**CASES["overflow_only_second"], return_tensors=None)
    mapping = ours["overflow_to_sample_mapping"]
    assert sorted(set(mapping)) == list(range(len(QUESTIONS))) and mapping == sorted(mapping)
    assert len(mapping) > len(QUESTIONS)  # the long context really was split into windows
    assert all(len(ids) == 24 for ids in ours["input_ids"])


def test_truncation_stops_at_model_max_length(pair):
    hf, tok = pair
    ours = tok(TEXTS, truncation=True)
    assert ours["input_ids"].shape == (len(TEXTS), tok.model_max_length)


@pytest.mark.parametrize("text,text_pair", [("Héllo wörld!", None), ("a question", "a context"), ("x", ""), ("", None)])
def test_single_text_is_unbatched_like_transformers(pair, text, text_pair):
    hf, tok = pair
    ref = reference_call(hf, text, text_pair, return_offsets_mapping=True)
    ours = tok(text, text_pair, return_offsets_mapping=True, return_tensors=None)
    assert dict(ours) == dict(ref)
    assert_same_encodings(ref, ours, 1)
    assert tok(text, text_pair)["input_ids"].shape == (1, len(ref["input_ids"]))


def test_decode_matches_transformers(pair):
    hf, tok = pair
    rows = reference_call(hf, TEXTS, PAIRS)["input_ids"]
    for ids in rows + [[], [5], list(range(len(tok)))]:
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip)
        assert tok.decode(ids, clean_up_tokenization_spaces=True) == hf.decode(ids, clean_up_tokenization_spaces=True)
    assert tok.batch_decode(rows, skip_special_tokens=True) == hf.batch_decode(rows, skip_special_tokens=True)
    assert tok.batch_decode(torch.tensor(rows)) == hf.batch_decode(rows)
    assert tok.decode(torch.tensor(rows[0])) == hf.decode(rows[0]) and tok.decode(rows[0][1]) == hf.decode(rows[0][1])


def test_vocabulary_helpers_match_transformers(pair):
    hf, tok = pair
    for text in TEXTS:
        assert tok.tokenize(text) == hf.tokenize(text)
        assert tok.encode(text) == hf.encode(text)
        assert tok.encode(text, "a pair", add_special_tokens=False) == hf.encode(text, "a pair", add_special_tokens=False)
    ids = hf.encode(TEXTS[0] + TEXTS[2])
    assert tok.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    assert tok.convert_ids_to_tokens(ids[1]) == hf.convert_ids_to_tokens(ids[1])
    tokens = hf.convert_ids_to_tokens(ids) + ["definitely-not-in-the-vocab"]
    assert tok.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids(tokens[1]) == hf.convert_tokens_to_ids(tokens[1])


def test_attributes_match_transformers(pair):
    hf, tok = pair
    assert len(tok) == len(hf)
    assert tok.model_max_length == hf.model_max_length
    assert tok.model_input_names == hf.model_input_names
    assert tok.padding_side == hf.padding_side == "right"
    assert tok.all_special_ids == hf.all_special_ids
    for name in ("pad", "cls", "sep", "mask", "unk", "bos", "eos"):
        assert getattr(tok, f"{name}_token") == getattr(hf, f"{name}_token"), name
        assert getattr(tok, f"{name}_token_id") == getattr(hf, f"{name}_token_id"), name
    assert tok.chat_template is None
    tokens = hf.convert_ids_to_tokens(hf.encode(TEXTS[0]))
    assert tok.backend_tokenizer.decoder.decode(tokens) == hf.convert_tokens_to_string(tokens)


def test_pad_matches_transformers(pair):
    hf, tok = pair
    encoded = [hf(text, return_token_type_ids=True) for text in TEXTS[:4]]
    features = [{key: list(value) for key, value in e.items()} for e in encoded]
    ref = hf.pad(features, return_tensors="pt")
    ours = tok.pad(features)
    assert list(ours) == list(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    without_mask = [{"input_ids": f["input_ids"]} for f in features]
    assert dict(tok.pad(without_mask, return_tensors=None)) == dict(hf.pad(without_mask))


def test_pad_offsets_and_tensors_and_left_side(roberta_dir):
    tok = Tokenizer.from_dir(roberta_dir)
    features = [dict(tok(t, return_offsets_mapping=True, return_tensors=None)) for t in ("a b c d", "a")]
    features[0]["input_ids"] = torch.tensor(features[0]["input_ids"])
    out = tok.pad(features, return_tensors=None)
    longest = len(out["input_ids"][0])
    assert out["offset_mapping"][1][-1] == (0, 0) and len(out["offset_mapping"][1]) == longest
    tok.padding_side = "left"
    try:
        left = tok.pad(features)
    finally:
        tok.padding_side = "right"
    assert left["input_ids"][1, 0].item() == tok.pad_token_id and left["attention_mask"][1, 0].item() == 0


# ---------------------------------------------------------------------------------------------- hypothesis
@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=60), text_pair=st.one_of(st.none(), st.text(max_size=40)))
def test_arbitrary_unicode_matches_transformers(text, text_pair):
    hf, tok = load_both(MINILM)
    ref = reference_call(hf, text, text_pair, truncation=True, return_offsets_mapping=True)
    ours = tok(text, text_pair, truncation=True, return_offsets_mapping=True, return_tensors=None)
    assert dict(ours) == dict(ref)
    assert ours.word_ids() == ref.word_ids() and ours.sequence_ids() == ref.sequence_ids()
    assert tok.decode(ours["input_ids"], skip_special_tokens=True) == hf.decode(ref["input_ids"], skip_special_tokens=True)
