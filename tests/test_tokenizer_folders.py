"""hfkit.Tokenizer on folder variants and on behaviour of its own. Folders: tokenizer_config.json settings
(padding side, model_max_length, model_input_names, chat templates), vocab.txt without tokenizer.json, and a
hand-made tokenizer.json that hfkit runs as written. Behaviour: no backend state leaks between calls,
BatchEncoding helpers, clear errors for bad inputs and missing files, from_pretrained on a local folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hfkit.errors import HfkitError, ModelNotFoundError
from hfkit.tokenizer import VERY_LARGE_INTEGER, BatchEncoding, Tokenizer, TokenizerError

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
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="session")
def vocab_only_dir(tmp_path_factory) -> Path:
    """The MiniLM tokenizer files without tokenizer.json."""
    path = tmp_path_factory.mktemp("vocab_only")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / name, path / name)
    return path


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
