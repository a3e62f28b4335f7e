"""CUDA: loading straight to the GPU and the same outputs as the CPU reference (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from hfkit.models.auto import FAMILIES, tasks_of

from .parity.tiny import HFKIT_AUTO, padded_batch, tiny_reference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CELLS = [(name, task) for name, family in FAMILIES.items() for task in tasks_of(family)]
FIELDS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


@pytest.fixture(autouse=True)
def exact_matmuls(exact_cuda_matmuls):
    """Every test here compares float32 CUDA outputs with a CPU reference."""


@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_cuda_matches_cpu_reference(family, task, tmp_path):
    reference = tiny_reference(family, task)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path, device="cuda")
    assert all(p.device.type == "cuda" for p in ours.parameters())
    batch = padded_batch(reference.config)
    with torch.no_grad():
        expected = reference(**batch)
        got = ours(**{k: v.cuda() for k, v in batch.items()})
    for name in FIELDS:
        if getattr(expected, name, None) is not None:
            assert (getattr(got, name).cpu() - getattr(expected, name)).abs().max() <= 1e-4, name


def test_bfloat16_on_cuda(tmp_path):
    """bf16 on CUDA (the unpadded varlen path, chosen automatically) stays close at every real token;
    pad positions are not part of the contract (unpadded outputs hold zeros there, as transformers' flash path)."""
    reference = tiny_reference("bert", "token-classification")
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO["token-classification"].from_pretrained(tmp_path, device="cuda", dtype="bfloat16")
    assert ours.dtype == torch.bfloat16 and ours.device.type == "cuda"
    batch = padded_batch(reference.config)
    with torch.no_grad():
        got = ours(**{k: v.cuda() for k, v in batch.items()}).logits.float().cpu()
        expected = reference(**batch).logits
    keep = batch["attention_mask"].bool()
    assert (got - expected)[keep].abs().max() <= 5e-2
