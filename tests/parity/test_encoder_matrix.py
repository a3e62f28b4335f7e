"""Every registered family × head against transformers: float32, strict keys, max_abs_diff <= 1e-5."""

from __future__ import annotations

import pytest
import torch

from hfkit.models.auto import FAMILIES, is_decoder, tasks_of

from .tiny import HFKIT_AUTO, TINY_CONFIGS, labels_for, padded_batch, tiny_reference

TOL = 1e-5
OUTPUT_FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits", "loss")
# encoder families only: decoders have their own matrix (left padding, KV cache, generation) in test_decoder_matrix.py
CELLS = [(name, task) for name, family in FAMILIES.items() if not is_decoder(family) for task in tasks_of(family)]


def max_diffs(ref_out, our_out) -> dict[str, float]:
    diffs = {}
    for name in OUTPUT_FIELDS:
        ref = getattr(ref_out, name, None)
        if ref is not None:
            ours = getattr(our_out, name)
            assert ours is not None and ours.shape == ref.shape, f"{name}: {None if ours is None else ours.shape} vs {ref.shape}"
            diffs[name] = (ours - ref).abs().max().item()
    assert len(ref_out.hidden_states) == len(our_out.hidden_states)
    for i, (ref, ours) in enumerate(zip(ref_out.hidden_states, our_out.hidden_states)):
        diffs[f"hidden_states[{i}]"] = (ours - ref).abs().max().item()
    return diffs


def test_every_family_has_a_tiny_reference():
    assert set(FAMILIES) <= set(TINY_CONFIGS), "add a tiny config for the new family in tests/parity/tiny.py"


@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_parity(family, task, tmp_path):
    reference = tiny_reference(family, task)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path)  # strict: any key problem raises
    assert type(ours).__name__ == type(reference).__name__
    batch = padded_batch(reference.config)
    labels = labels_for(task, batch, reference.config.num_labels)
    with torch.no_grad():
        ref_out = reference(**batch, **labels, output_hidden_states=True)
        our_out = ours(**batch, **labels, output_hidden_states=True)
    diffs = max_diffs(ref_out, our_out)
    assert max(diffs.values()) <= TOL, diffs
