"""Tiny tokenizers trained in the tests (no hub): the byte-level BPE backend several test files wrap."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def byte_level_bpe(corpus: list[str], special_tokens: list[str], vocab_size: int = 300,
                   unk_token: str | None = None) -> Tokenizer:
    """A GPT-2/RoBERTa-style byte-level BPE trained on `corpus`; special tokens take the first ids in order."""
    backend = Tokenizer(models.BPE(unk_token=unk_token))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus, trainer)
    return backend
