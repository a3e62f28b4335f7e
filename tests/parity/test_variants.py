"""Config variants the default tiny models do not reach: weight-sharing shapes, no projection."""

from __future__ import annotations

import pytest
import torch

from .test_encoder_matrix import TOL, max_diffs
from .tiny import HFKIT_AUTO, labels_for, padded_batch, tiny_reference

VARIANTS = [
    ("albert", "masked-lm", {"num_hidden_groups": 2, "inner_group_num": 2}),
    ("albert", "sequence-classification", {"num_hidden_groups": 1, "inner_group_num": 1}),
    ("albert", "base", {"num_hidden_layers": 3, "num_hidden_groups": 2}),
    ("electra", "pretraining", {"embedding_size": 32}),  # no embeddings_project
    ("electra", "masked-lm", {"tie_word_embeddings": False}),
    ("bert", "sequence-classification", {"classifier_dropout": 0.3, "problem_type": "multi_label_classification"}),
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
