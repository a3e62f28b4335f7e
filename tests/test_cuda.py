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
    """Every position, pads included, against hfkit on the CPU (which the parity suite holds equal to the pinned
    transformers); at real tokens also against the transformers installed here. Pad positions are not compared with
    transformers: their values there changed between versions (Gemma 2's fully masked sliding-window rows differ
    between transformers 5.17 and 5.23 by ~3 while every real token agrees)."""
    reference = tiny_reference(family, task)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path, device="cuda")
    on_cpu = HFKIT_AUTO[task].from_pretrained(tmp_path)
    assert all(p.device.type == "cuda" for p in ours.parameters())
    batch = padded_batch(reference.config)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected, cpu = reference(**batch), on_cpu(**batch)
        got = ours(**{k: v.cuda() for k, v in batch.items()})
    for name in FIELDS:
        if getattr(expected, name, None) is not None:
            mine, theirs = getattr(got, name).cpu(), getattr(expected, name)
            assert (mine - getattr(cpu, name)).abs().max() <= 1e-4, name
            per_token = mine.shape[:2] == real.shape
            assert ((mine[real] - theirs[real]) if per_token else (mine - theirs)).abs().max() <= 1e-4, name


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_causal_attention_matches_an_explicit_mask_on_cuda(dtype):
    """Unmasked decoder attention (SDPA's is_causal; bf16 shares key/value heads in place, float32 repeats them)
    against an explicit causal mask over repeated heads: outputs and gradients."""
    from hfkit.nn.attention import grouped_attention

    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, heads, 64, 32, generator=gen, device="cuda", dtype=dtype, requires_grad=True)
               for heads in (8, 2, 2))
    explicit = torch.ones(64, 64, dtype=torch.bool, device="cuda").tril()[None, None]
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    results = []
    for mask in (None, explicit):
        out = grouped_attention(q, k, v, mask)
        grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
        results.append((out, *grads))
    for mine, theirs in zip(*results):
        assert (mine.float() - theirs.float()).abs().max() <= tol * max(1.0, theirs.float().abs().max().item())
