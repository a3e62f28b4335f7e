"""Config variants the default tiny models do not reach: weight-sharing shapes, no projection."""

from __future__ import annotations

import pytest
import torch

from .test_encoder_matrix import TOL, max_diffs
from .tiny import HFKIT_AUTO, TINY_CONFIGS, TRANSFORMERS_AUTO, labels_for, padded_batch, tiny_reference

VARIANTS = [
    ("albert", "masked-lm", {"num_hidden_groups": 2, "inner_group_num": 2}),
    ("albert", "sequence-classification", {"num_hidden_groups": 1, "inner_group_num": 1}),
    ("albert", "base", {"num_hidden_layers": 3, "num_hidden_groups": 2}),
    ("electra", "pretraining", {"embedding_size": 32}),  # no embeddings_project
    ("electra", "masked-lm", {"tie_word_embeddings": False}),
    ("bert", "sequence-classification", {"classifier_dropout": 0.3, "problem_type": "multi_label_classification"}),
    # DeBERTa-v2/v3 (the tiny default is v3's shape): the 13-token batch reaches relative distances of ±12
    ("deberta-v2", "base", {"conv_kernel_size": 3}),  # ConvLayer after layer 0, tanh
    ("deberta-v2", "masked-lm", {"conv_kernel_size": 5, "conv_act": "gelu", "conv_groups": 4}),
    ("deberta-v2", "base", {"share_att_key": False}),  # pos_key_proj + pos_query_proj
    ("deberta-v2", "token-classification", {"share_att_key": False, "pos_att_type": "c2p"}),  # v1 string, one term
    ("deberta-v2", "base", {"share_att_key": False, "pos_att_type": "P2C"}),
    ("deberta-v2", "base", {"position_buckets": -1}),  # distances up to max_position_embeddings
    ("deberta-v2", "question-answering", {"position_buckets": 0, "max_relative_positions": 8}),  # clamped at ±8
    ("deberta-v2", "base", {"position_buckets": 6, "max_relative_positions": 32}),  # log buckets beyond ±3
    ("deberta-v2", "sequence-classification", {"position_buckets": 4, "max_relative_positions": -1, "share_att_key": False}),
    ("deberta-v2", "base", {"position_biased_input": True}),  # absolute positions too
    ("deberta-v2", "base", {"norm_rel_ebd": "none"}),
    ("deberta-v2", "masked-lm", {"embedding_size": 16}),  # embed_proj; LM head on the embedding size
    ("deberta-v2", "sequence-classification", {"type_vocab_size": 2, "pooler_hidden_act": "tanh"}),  # token_type_ids
    ("deberta-v2", "masked-lm", {"legacy": False}),  # lm_predictions.lm_head, logits on the word embeddings
    ("deberta-v2", "masked-lm", {"tie_word_embeddings": False}),
    ("deberta-v2", "base", {"relative_attention": False}),  # the terms still scale q·k by 1/sqrt(3·hd)
    ("deberta-v2", "base", {"relative_attention": False, "pos_att_type": None, "position_biased_input": True}),
    # deberta-v2-xlarge's shape: conv (gelu), shared keys, buckets, no absolute positions
    ("deberta-v2", "sequence-classification", {"conv_kernel_size": 3, "conv_act": "gelu", "position_buckets": 4}),
]


@pytest.mark.parametrize("family,task,overrides", VARIANTS, ids=[f"{f}-{t}-{'-'.join(o)}" for f, t, o in VARIANTS])
def test_variant_parity(family, task, overrides, tmp_path):
    reference = tiny_reference(family, task, **overrides)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path)
    batch = padded_batch(reference.config)
    labels = labels_for(task, batch, reference.config.num_labels)
    if overrides.get("problem_type") == "multi_label_classification":
        labels = {"labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])}
    with torch.no_grad():
        diffs = max_diffs(reference(**batch, **labels, output_hidden_states=True), ours(**batch, **labels, output_hidden_states=True))
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("num_labels,labels", [
    (3, torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])),  # soft targets: soft-target CE, not BCE
    (3, torch.tensor([2, -1, 0])),  # a negative class id is left out of the loss
    (3, torch.tensor([-1, -1, -1])),  # nothing labelled: zero loss
    (1, torch.tensor([0.5, -1.0, 2.0])),  # one label: regression
], ids=["soft", "negative-id", "all-negative", "regression"])
def test_deberta_untyped_classification_loss(num_labels, labels, tmp_path):
    """DeBERTa's own loss rule when problem_type is unset (transformers' DebertaV2ForSequenceClassification)."""
    torch.manual_seed(0)
    reference = TRANSFORMERS_AUTO["sequence-classification"].from_config(TINY_CONFIGS["deberta-v2"](num_labels=num_labels)).eval()
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO["sequence-classification"].from_pretrained(tmp_path)
    batch = padded_batch(reference.config)
    with torch.no_grad():
        ref_loss, our_loss = reference(**batch, labels=labels).loss, ours(**batch, labels=labels).loss
    assert our_loss.shape == ref_loss.shape and abs(our_loss.item() - ref_loss.item()) <= TOL, (our_loss, ref_loss)


def test_deberta_checkpoint_keys_transformers_ignores(tmp_path):
    """v3 checkpoints carry weights the architecture never uses (absolute positions with
    position_biased_input=False, the RTD `mask_predictions` head): skipped, as transformers does;
    the `lm_predictions` head loads with legacy=False."""
    from safetensors.torch import load_file, save_file

    reference = tiny_reference("deberta-v2", "masked-lm", legacy=False)
    reference.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["deberta.embeddings.position_embeddings.weight"] = torch.randn(512, 32)
    tensors["mask_predictions.classifier.weight"] = torch.randn(1, 32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = HFKIT_AUTO["masked-lm"].from_pretrained(tmp_path)
    assert ours.backbone.embeddings.position_embeddings is None
    batch = padded_batch(reference.config)
    with torch.no_grad():
        diffs = max_diffs(reference(**batch, output_hidden_states=True), ours(**batch, output_hidden_states=True))
    assert max(diffs.values()) <= TOL, diffs
    base = HFKIT_AUTO["base"].from_pretrained(tmp_path)  # the head weights dropped with the prefix
    assert base.stack_hooks.rel is base.encoder.rel_embeddings
