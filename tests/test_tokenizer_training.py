"""hfkit.train.tokenizer_training: a byte-level BPE trained on a small corpus, checked against transformers."""

import builtins
import json
import random

import pytest

from hfkit.errors import ConfigError
from hfkit.train import tokenizer_training
from hfkit.train.tokenizer_training import (
    expand_files,
    tokenizer_special_ids,
    train_bpe_tokenizer,
)

TEXTS = ["def alpha(beta):\n    return beta + 1\n", "café naïve Zürich — 😀 🚀 日本語", "  two  spaces\tand tab",
         "<|endoftext|>after the end<|pad|>", "x = {'key': [1, 2, 3]}  # comment"]


def write_corpus(root, lines: int = 300):
    """Python-like files under root/pkg (nested), plus a text file of one made-up word."""
    rng = random.Random(0)
    names = ["alpha", "beta", "gamma", "delta", "value", "result", "items", "count", "naïve"]
    (root / "pkg" / "sub").mkdir(parents=True)
    for i, path in enumerate([root / "pkg" / "a.py", root / "pkg" / "sub" / "b.py"]):
        path.write_text("".join(f"def {rng.choice(names)}_{j}({rng.choice(names)}, {rng.choice(names)}):\n"
                                f"    return {rng.choice(names)} + {j * i}\n" for j in range(lines)), encoding="utf-8")
    (root / "pkg" / "words.txt").write_text("zqxv " * 500, encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root)
    out = root / "tokenizer"
    return train_bpe_tokenizer([str(root / "pkg" / "**" / "*")], 400, out), out


def test_round_trip(trained):
    tokenizer, _ = trained
    for text in TEXTS:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert len(tokenizer.encode("def alpha(beta):")) < len("def alpha(beta):")  # merges were learned


def test_vocab_size_and_special_ids(trained):
    tokenizer, _ = trained
    assert 256 + 2 < len(tokenizer) <= 400
    assert tokenizer_special_ids(tokenizer) == {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1,
                                                "vocab_size": len(tokenizer)}
    assert tokenizer.encode("a<|endoftext|>b")[1] == 0
    assert tokenizer.unk_token is None


def test_matches_transformers(trained):
    transformers = pytest.importorskip("transformers")
    tokenizer, out = trained
    reference = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        assert tokenizer.encode(text) == reference(text)["input_ids"]
    ours, theirs = tokenizer(TEXTS, return_offsets_mapping=True), reference(TEXTS, padding=True,
                                                                            return_offsets_mapping=True,
                                                                            return_tensors="pt")
    for key in ("input_ids", "attention_mask", "offset_mapping"):
        assert ours[key].tolist() == theirs[key].tolist()
    assert (reference.eos_token_id, reference.bos_token_id, reference.pad_token_id) == (0, 0, 1)
    assert len(reference) == len(tokenizer)


def test_saved_files(trained):
    _, out = trained
    assert sorted(p.name for p in out.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                     "tokenizer_config.json"]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["add_bos_token"] is False
    assert (config["bos_token"], config["eos_token"], config["pad_token"]) == ("<|endoftext|>",) * 2 + ("<|pad|>",)
    backend = json.loads((out / "tokenizer.json").read_text())
    assert backend["pre_tokenizer"]["type"] == "ByteLevel" and backend["pre_tokenizer"]["add_prefix_space"] is False
    assert backend["decoder"]["type"] == "ByteLevel" and backend["post_processor"]["trim_offsets"] is True


def test_glob_selects_files(tmp_path):
    write_corpus(tmp_path)
    python_only = train_bpe_tokenizer([tmp_path / "pkg" / "**" / "*.py"], 400, tmp_path / "py")
    everything = train_bpe_tokenizer([str(tmp_path / "pkg" / "**" / "*")], 400, tmp_path / "all")
    assert len(everything.tokenize(" zqxv")) == 1  # words.txt was read
    assert len(python_only.tokenize(" zqxv")) > 1  # words.txt was not
    bracketed = tmp_path / "pkg" / "data[1].txt"  # an existing path is taken as is, never as a pattern
    bracketed.write_text("x", encoding="utf-8")
    assert expand_files([tmp_path / "pkg" / "*.txt", bracketed]) == [bracketed, tmp_path / "pkg" / "words.txt"]
    nested = train_bpe_tokenizer([tmp_path / "pkg" / "sub" / "b.py"], 400, tmp_path / "one")  # a plain path
    assert len(nested.tokenize(" return")) == 1


def test_custom_special_tokens_and_length(tmp_path):
    transformers = pytest.importorskip("transformers")
    write_corpus(tmp_path, lines=50)
    specials = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
                "additional_special_tokens": ["<|im_start|>"]}
    tokenizer = train_bpe_tokenizer([str(tmp_path / "pkg/**/*.py")], 300, tmp_path / "out", special_tokens=specials,
                                    model_max_length=128)
    assert tokenizer_special_ids(tokenizer) | {"vocab_size": 0} == {"bos_token_id": 0, "eos_token_id": 1,
                                                                    "pad_token_id": 2, "vocab_size": 0}
    assert tokenizer.encode("<|im_start|>hi")[0] == 3 and tokenizer.model_max_length == 128
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    assert reference("<|im_start|>hi <s>")["input_ids"] == tokenizer.encode("<|im_start|>hi <s>")
    assert reference.model_max_length == 128


def test_unreadable_files_are_skipped(tmp_path, monkeypatch):
    write_corpus(tmp_path, lines=50)
    bad = tmp_path / "pkg" / "a.py"

    def fake_open(path, *args, **kwargs):
        if str(path) == str(bad):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(tokenizer_training, "open", fake_open, raising=False)
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        train_bpe_tokenizer([str(tmp_path / "pkg/**/*.py")], 300, tmp_path / "out")
    with pytest.raises(ConfigError, match="None of the 1 training files"):
        train_bpe_tokenizer([bad], 300, tmp_path / "out2")


def test_errors_name_the_fix(tmp_path):
    write_corpus(tmp_path, lines=5)
    with pytest.raises(ConfigError, match=r"matches no file.*'\*\*'"):
        train_bpe_tokenizer([str(tmp_path / "nowhere" / "**" / "*.py")], 300, tmp_path / "out")
    with pytest.raises(ConfigError, match="does not exist"):
        train_bpe_tokenizer([tmp_path / "missing.txt"], 300, tmp_path / "out")
    with pytest.raises(ConfigError, match="is a folder"):
        train_bpe_tokenizer([tmp_path / "pkg"], 300, tmp_path / "out")
    with pytest.raises(ConfigError, match="No training files"):
        train_bpe_tokenizer([], 300, tmp_path / "out")
    with pytest.raises(ConfigError, match="at least 258"):
        train_bpe_tokenizer([tmp_path / "pkg" / "a.py"], 200, tmp_path / "out")
    with pytest.raises(ConfigError, match="Unknown special token names"):
        train_bpe_tokenizer([tmp_path / "pkg" / "a.py"], 300, tmp_path / "out", special_tokens={"end": "</s>"})
    assert not (tmp_path / "out").exists()  # nothing written on failure
