"""The chunked linear + cross-entropy against the plain path it replaces."""

import pytest
import torch
import torch.nn.functional as F

from hfkit.nn import linear_cross_entropy as module
from hfkit.nn.linear_cross_entropy import default_chunk_size, linear_cross_entropy

N, H, V = 37, 32, 257


def plain(hidden, weight, labels, softcap=None):
    """hfkit's path today: lm_head, Gemma 2's softcap, float32 cross-entropy."""
    logits = F.linear(hidden, weight)  # (N, V)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), labels)


def loss_and_grads(fn, hidden, weight, labels, **kwargs):
    hidden, weight = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = fn(hidden, weight, labels, **kwargs)
    loss.backward()
    return loss.detach(), hidden.grad, weight.grad


def rel(a, b):
    """max |a - b| relative to max |b|."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def batch():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, H, generator=g)  # (N, H)
    weight = torch.randn(V, H, generator=g) * 3 / H**0.5  # (V, H), logits std ~3
    labels = torch.randint(0, V, (N,), generator=g)
    labels[::4] = -100
    return hidden, weight, labels


@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("chunk_size", [1, 5, 16, 36, 37, 64, None])
def test_float32_matches_plain(chunk_size, softcap):
    hidden, weight, labels = batch()
    ref = loss_and_grads(plain, hidden, weight, labels, softcap=softcap)
    out = loss_and_grads(
        linear_cross_entropy,
        hidden,
        weight,
        labels,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    for ours, theirs in zip(out, ref):
        assert ours.dtype == theirs.dtype
        assert rel(ours, theirs) <= 1e-5


def test_softcap_and_ignore_index_matter():
    """The cases above would not notice a dropped softcap or a counted ignored row."""
    hidden, weight, labels = batch()
    capped = linear_cross_entropy(hidden, weight, labels, softcap=2.0)
    assert rel(capped, linear_cross_entropy(hidden, weight, labels)) > 1e-2
    counted = labels.masked_fill(labels == -100, 0)
    ignored = plain(hidden, weight, labels)
    assert rel(linear_cross_entropy(hidden, weight, counted), ignored) > 1e-2
    zero = linear_cross_entropy(hidden, weight, counted, ignore_index=0, chunk_size=8)
    assert rel(zero, F.cross_entropy(hidden @ weight.T, counted, ignore_index=0)) < 1e-6


def test_all_ignored_is_nan_with_zero_grads_like_plain():
    hidden, weight, labels = batch()
    labels = torch.full_like(labels, -100)
    ref = loss_and_grads(plain, hidden, weight, labels)
    out = loss_and_grads(linear_cross_entropy, hidden, weight, labels, chunk_size=8)
    assert ref[0].isnan() and out[0].isnan()
    for ours, theirs in zip(out[1:], ref[1:]):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def rel_norm(a, b):
    """||a - b|| / ||b||: steadier than `rel` for bfloat16 rounding noise."""
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# Measured over 20 seeds of `batch` (seed 0 here), chunk_size 8, softcap None and 2,
# bf16 inputs and autocast: loss within 2.9e-7 of the plain path; grads within 1.22e-2
# (rel) and 5.4e-3 (rel_norm) of it, and at most 1.19x as far (rel_norm) from the
# float64 result as it.
@pytest.mark.parametrize("softcap", [None, 2.0])
@pytest.mark.parametrize("mode", ["bf16", "autocast"])
def test_bfloat16_matches_plain_and_is_as_close_to_float64(mode, softcap):
    hidden, weight, labels = batch()
    if mode == "bf16":
        hidden, weight = hidden.bfloat16(), weight.bfloat16()
    with torch.autocast("cpu", torch.bfloat16, enabled=mode == "autocast"):
        ref = loss_and_grads(plain, hidden, weight, labels, softcap=softcap)
        out = loss_and_grads(
            linear_cross_entropy, hidden, weight, labels, softcap=softcap, chunk_size=8
        )
    exact = loss_and_grads(
        plain, hidden.double(), weight.double(), labels, softcap=softcap
    )
    assert out[0].dtype == torch.float32
    assert rel(out[0], ref[0]) <= 1e-5
    dtypes = (hidden.dtype, weight.dtype)  # float32 master weight under autocast
    for ours, theirs, truth, dtype in zip(out[1:], ref[1:], exact[1:], dtypes):
        assert ours.dtype == dtype
        assert rel(ours, theirs) <= 2e-2 and rel_norm(ours, theirs) <= 1e-2
        assert rel_norm(ours, truth) <= 1.3 * rel_norm(theirs, truth)
    if mode == "autocast":  # summed over the chunks in float32, not rounded to bf16
        assert not torch.equal(out[2], out[2].bfloat16().float())


def test_tied_weight_used_elsewhere_accumulates_and_grad_output_scales():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (N,), generator=g)
    labels = torch.roll(ids, -1)
    labels[-1] = -100
    proj = torch.randn(H, H, generator=g) / H**0.5

    def grads(loss_fn):
        embed = torch.nn.Embedding(V, H)
        torch.nn.init.normal_(embed.weight, generator=torch.Generator().manual_seed(2))
        hidden = torch.tanh(embed(ids) @ proj)  # (N, H)
        loss = (
            loss_fn(hidden, embed.weight, labels) / 4
            + embed.weight.square().sum() * 1e-3
        )
        loss.backward()
        return loss.detach(), embed.weight.grad

    ours, theirs = grads(linear_cross_entropy), grads(plain)
    for a, b in zip(ours, theirs):
        assert rel(a, b) <= 1e-5


def test_frozen_weight_gets_no_grad():
    hidden, weight, labels = batch()
    hidden.requires_grad_()
    linear_cross_entropy(hidden, weight, labels, chunk_size=8).backward()
    reference = hidden.detach().requires_grad_()
    plain(reference, weight, labels).backward()
    assert weight.grad is None and rel(hidden.grad, reference.grad) <= 1e-5


def test_no_grad_gives_the_same_loss_and_computes_no_grads(monkeypatch):
    asked = []

    def spy(*args):
        asked.append(args[-2:])  # (want_h, want_w)
        return chunked(*args)

    chunked = module._chunked
    monkeypatch.setattr(module, "_chunked", spy)
    hidden, weight, labels = batch()
    weight.requires_grad_()
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, softcap=2.0, chunk_size=8)
    assert loss.grad_fn is None and asked == [(False, False)]
    assert rel(loss, plain(hidden, weight, labels, softcap=2.0)) <= 1e-6
    assert linear_cross_entropy(hidden, weight, labels).grad_fn is not None
    assert asked[-1] == (False, True)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, generator=g, requires_grad=True)
    labels = torch.tensor([3, -100, 0, 8, 8, 1])

    def fn(h, w):
        return linear_cross_entropy(h, w, labels, softcap=1.5, chunk_size=4)

    assert torch.autograd.gradcheck(fn, (hidden, weight))


def test_default_chunk_size():
    rows = {v: default_chunk_size(v) for v in (128256, 256000, 32000, 2**30)}
    assert rows == {128256: 2048, 256000: 1024, 32000: 8192, 2**30: 1}


def test_bad_inputs_are_named():
    hidden, weight, labels = batch()
    with pytest.raises(ValueError, match=r"hidden \(37, 32\), weight \(257, 16\)"):
        linear_cross_entropy(hidden, weight[:, :16], labels)
    with pytest.raises(ValueError, match=r"hidden \(2, 37, 32\), weight"):
        linear_cross_entropy(hidden.expand(2, N, H), weight, labels)
    with pytest.raises(
        ValueError, match=r"labels must be \(N,\) = \(37,\).*got \(36,\)"
    ):
        linear_cross_entropy(hidden, weight, labels[1:])
    with pytest.raises(TypeError, match="integer class indices"):
        linear_cross_entropy(hidden, weight, labels.float())
    with pytest.raises(TypeError, match="torch.bfloat16 and torch.float32"):
        linear_cross_entropy(hidden.bfloat16(), weight, labels)
    with pytest.raises(ValueError, match="chunk_size must be"):
        linear_cross_entropy(hidden, weight, labels, chunk_size=0)


# --- wired into the causal-LM head: DecoderForCausalLM.chunked_loss, TrainingConfig(chunked_loss=True) ------------


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: final-logit soft-capping
def test_causal_lm_chunked_loss_equals_the_plain_loss(family, tmp_path):
    from .parity.test_decoder_matrix import build, left_padded

    _, model = build(tmp_path, family)
    ids, mask = left_padded()
    labels = ids.masked_fill(mask == 0, -100)

    def loss_and_grads(chunked: bool):
        model.zero_grad()
        model.chunked_loss = chunked
        out = model(ids, mask, labels=labels)
        out.loss.backward()
        return out, [p.grad.clone() for p in model.parameters()]

    plain, plain_grads = loss_and_grads(False)
    chunked, chunked_grads = loss_and_grads(True)
    assert chunked.logits is None and plain.logits is not None
    assert abs(chunked.loss.item() - plain.loss.item()) <= 1e-5 * abs(plain.loss.item())
    for a, b in zip(chunked_grads, plain_grads):
        assert (a - b).abs().max() <= 1e-5 * max(b.abs().max().item(), 1e-3)


def test_training_config_switches_it_on_for_causal_lms_only(tmp_path):
    from hfkit.errors import ConfigError
    from hfkit.train import Trainer, TrainingConfig

    from .parity.test_decoder_matrix import build

    _, classifier = build(tmp_path / "cls", "llama", task="sequence-classification")
    with pytest.raises(ConfigError, match="chunked_loss is for causal-LM models"):
        Trainer(classifier, TrainingConfig(chunked_loss=True), tokenizer=object())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_causal_lm_chunked_loss_under_cuda_autocast(tmp_path):
    from .parity.test_decoder_matrix import build, left_padded

    _, model = build(tmp_path, "llama")
    model = model.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    losses, grads = [], []
    for chunked in (False, True):
        model.zero_grad()
        model.chunked_loss = chunked
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, mask, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(model.lm_head.weight.grad.clone())
        assert model.lm_head.weight.grad.dtype == torch.float32
    assert abs(losses[1] - losses[0]) <= 1e-3 * abs(losses[0])
    assert (grads[1] - grads[0]).norm() <= 2e-2 * grads[0].norm()


def test_trainer_with_chunked_loss_trains_as_the_plain_loss(tmp_path):
    from hfkit.train import Trainer, TrainingConfig
    from hfkit.train.pretrain import model_from_config
    from hfkit.train.tokenizer_training import train_bpe_tokenizer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog", "fox"] * 20)))
    tokenizer = train_bpe_tokenizer([corpus], 300, tmp_path / "tok")
    shape = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}
    torch.manual_seed(0)
    model = model_from_config(shape, tokenizer)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    rows = [{"text": line} for line in corpus.read_text().splitlines()]
    losses = []
    for chunked in (False, True):
        model.load_state_dict(start)
        config = TrainingConfig(max_steps=4, batch_size=4, block_size=16, chunked_loss=chunked, progress=False)
        trainer = Trainer(model, config, rows, tokenizer=tokenizer, task="causal-lm")
        trainer.fit()
        losses.append([record["loss"] for record in trainer.history])
        assert model.chunked_loss is False  # for the run only: afterwards the model returns its logits again
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-5)
