"""Tiny seeded transformers models for every registered family: the references of the parity suite."""

from __future__ import annotations

import torch
import transformers

import hfkit
from hfkit.models.auto import CLASS_SUFFIX

VOCAB = 211
SHAPES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
DECODER_SHAPES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=2)

# model_type → a small transformers config; a family registered without an entry here fails the suite.
TINY_CONFIGS = {
    "bert": lambda **kw: transformers.BertConfig(vocab_size=VOCAB, **SHAPES, **kw),
    "roberta": lambda **kw: transformers.RobertaConfig(vocab_size=VOCAB, type_vocab_size=1, **SHAPES, **kw),
    "xlm-roberta": lambda **kw: transformers.XLMRobertaConfig(vocab_size=VOCAB, type_vocab_size=1, **SHAPES, **kw),
    "distilbert": lambda **kw: transformers.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=37, **kw),
    "albert": lambda **kw: transformers.AlbertConfig(
        **{"vocab_size": VOCAB, "embedding_size": 16, **SHAPES, "num_hidden_layers": 4, "num_hidden_groups": 2, **kw}),
    "electra": lambda **kw: transformers.ElectraConfig(**{"vocab_size": VOCAB, "embedding_size": 16, **SHAPES, **kw}),
    # deberta-v3's shape: relative attention (both terms) with shared keys, 256 log buckets, LayerNorm'd
    # relative embeddings, no absolute positions, no token types. Weights ~N(0, 0.1): with 0.02 the attention
    # is near uniform and a wrong relative-position term moved outputs by only ~1e-4; now by ~1e-1.
    "deberta-v2": lambda **kw: transformers.DebertaV2Config(**{
        "vocab_size": VOCAB, **SHAPES, "relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": 256,
        "max_relative_positions": -1, "norm_rel_ebd": "layer_norm", "share_att_key": True, "position_biased_input": False,
        "type_vocab_size": 0, "initializer_range": 0.1, **kw}),
    "modernbert": lambda **kw: transformers.ModernBertConfig(**{
        "vocab_size": VOCAB, **SHAPES, "num_hidden_layers": 3, "local_attention": 4, "global_attn_every_n_layers": 2,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2, **kw}),
    # decoders: GQA (4 query heads on 2 KV heads), pad 0 / eos 1; Mistral slides over 5 tokens, Qwen3's head_dim is
    # not hidden / heads
    **{model_type: (lambda config_class, extra: lambda **kw: config_class(**{**DECODER_SHAPES, **extra, **kw}))(cls, extra)
       for model_type, (cls, extra) in {
           "llama": (transformers.LlamaConfig, {}),
           "mistral": (transformers.MistralConfig, {"sliding_window": 5}),
           "qwen2": (transformers.Qwen2Config, {}),
           "qwen3": (transformers.Qwen3Config, {"head_dim": 24}),
           # Gemma 2: sliding (4) / full layers, query_pre_attn_scalar != head_dim, soft-caps low enough to bite
           "gemma": (transformers.GemmaConfig, {"head_dim": 24}),
           "gemma2": (transformers.Gemma2Config, {"head_dim": 24, "query_pre_attn_scalar": 20, "sliding_window": 4,
                                                  "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
           "phi3": (transformers.Phi3Config, {"sliding_window": 5}),
       }.items()},
    # GPT-2 under its own field names (MHA, learned positions; n_inner not 4 · n_embd), pad 0 / eos 1 as the others
    "gpt2": lambda **kw: transformers.GPT2Config(**{
        "vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 64,
        **{k: DECODER_SHAPES[k] for k in ("pad_token_id", "eos_token_id", "bos_token_id")}, **kw}),
}

TRANSFORMERS_AUTO = {
    "base": transformers.AutoModel,
    "sequence-classification": transformers.AutoModelForSequenceClassification,
    "token-classification": transformers.AutoModelForTokenClassification,
    "question-answering": transformers.AutoModelForQuestionAnswering,
    "masked-lm": transformers.AutoModelForMaskedLM,
    "pretraining": transformers.AutoModelForPreTraining,
    "causal-lm": transformers.AutoModelForCausalLM,
}
HFKIT_AUTO = {
    "base": hfkit.AutoModel,
    "sequence-classification": hfkit.AutoModelForSequenceClassification,
    "token-classification": hfkit.AutoModelForTokenClassification,
    "question-answering": hfkit.AutoModelForQuestionAnswering,
    "masked-lm": hfkit.AutoModelForMaskedLM,
    "pretraining": hfkit.AutoModelForPreTraining,
    "causal-lm": hfkit.AutoModelForCausalLM,
}
assert set(TRANSFORMERS_AUTO) == set(CLASS_SUFFIX) == set(HFKIT_AUTO)


def tiny_reference(model_type: str, task: str, seed: int = 0, **config_kw) -> torch.nn.Module:
    """A seeded random transformers model of `model_type` with the `task` head, in eval mode."""
    labels = {"sequence-classification": 3, "token-classification": 5}.get(task, 2)
    config = TINY_CONFIGS[model_type](num_labels=labels, **config_kw)
    torch.manual_seed(seed)
    return TRANSFORMERS_AUTO[task].from_config(config).eval()


def padded_batch(config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three sequences of lengths 13, 9 and 4, right-padded, with token types where the family has them."""
    gen = torch.Generator().manual_seed(seed)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = torch.randint(3, VOCAB, (3, 13), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate((13, 9, 4)):
        mask[row, length:] = 0
    ids = ids.masked_fill(mask == 0, pad)
    batch = {"input_ids": ids, "attention_mask": mask}
    if getattr(config, "type_vocab_size", 0) > 1:
        batch["token_type_ids"] = (torch.arange(13)[None, :] >= 6).long().expand(3, -1) * mask
    return batch


def labels_for(task: str, batch: dict[str, torch.Tensor], num_labels: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    B, T = batch["input_ids"].shape
    if task == "sequence-classification":
        return {"labels": torch.randint(0, num_labels, (B,), generator=gen)}
    if task == "pretraining":
        return {"labels": torch.randint(0, 2, (B, T), generator=gen)}
    if task in ("token-classification", "masked-lm"):
        high = num_labels if task == "token-classification" else VOCAB
        labels = torch.randint(0, high, (B, T), generator=gen)
        return {"labels": labels.masked_fill(batch["attention_mask"] == 0, -100)}
    if task == "question-answering":
        return {"start_positions": torch.tensor([1, 3, 2]), "end_positions": torch.tensor([4, 5, 20])}
    return {}
