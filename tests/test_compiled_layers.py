"""`compile_layers()`: each encoder layer under torch.compile computes what the plain layer computes, on the padded
and the unpadded (packed) path; a compiler failure falls back to the plain layer with one warning."""

from __future__ import annotations

import pytest
import torch

from .parity.tiny import HFKIT_AUTO, padded_batch, tiny_reference


def load(tmp_path, model_type: str):
    tiny_reference(model_type, "base").save_pretrained(tmp_path)
    return HFKIT_AUTO["base"].from_pretrained(tmp_path)


@pytest.mark.parametrize("model_type", ["bert", "modernbert"])
@pytest.mark.parametrize("unpadded", [False, True])
def test_compiled_layers_compute_the_same(tmp_path, model_type, unpadded):
    model = load(tmp_path, model_type)
    batch = padded_batch(model.config)
    with torch.no_grad():
        plain = model(**batch, unpadded=unpadded).last_hidden_state
        model.compile_layers(backend="aot_eager")  # traced and run through AOTAutograd; inductor runs on the GPU tests
        compiled = model(**batch, unpadded=unpadded).last_hidden_state
        again = model.uncompile_layers()(**batch, unpadded=unpadded).last_hidden_state
    assert (compiled - plain).abs().max() <= 1e-6 and torch.equal(again, plain)


def test_a_failing_compiler_falls_back(tmp_path):
    def broken(graph, inputs):
        raise RuntimeError("no compiler here")

    torch._dynamo.reset()  # graphs compiled by the tests above would otherwise be reused without calling `broken`
    model = load(tmp_path, "bert")
    batch = padded_batch(model.config)
    with torch.no_grad():
        plain = model(**batch).last_hidden_state
        with pytest.warns(RuntimeWarning, match="running EncoderLayer uncompiled"):
            fallback = model.compile_layers(backend=broken)(**batch).last_hidden_state
    assert torch.equal(fallback, plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inductor_on_cuda_unpadded_bf16(tmp_path):
    model = load(tmp_path, "modernbert").to("cuda", torch.bfloat16)
    batch = {k: v.cuda() for k, v in padded_batch(model.config).items()}
    with torch.inference_mode():
        plain = model(**batch).last_hidden_state.float()
        compiled = model.compile_layers()(**batch).last_hidden_state.float()
    keep = batch["attention_mask"].bool()
    assert (compiled - plain)[keep].abs().max() <= 0.05 * plain[keep].abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_type", ["bert", "modernbert"])
def test_compiled_layers_trace_whole_on_cuda(tmp_path, model_type):
    """The varlen kernel and the rotary tables reach the layers ready: no graph break around the attention call and
    no recompilation per layer or batch shape (ModernBERT once hit the recompile limit and ran layers eagerly)."""
    from torch._dynamo.utils import counters

    model = load(tmp_path, model_type).to("cuda", torch.bfloat16)
    torch._dynamo.reset()
    counters.clear()
    model.compile_layers()
    batch = {k: v.cuda() for k, v in padded_batch(model.config).items()}
    with torch.inference_mode():
        for cut in (0, 1, 2):  # three batch shapes
            model(**{k: v[cut:] for k, v in batch.items()}, unpadded=True)
    assert not counters["graph_break"]
    kinds = {(block.spec.window, block.pre_norm and type(block.attn_norm).__name__) for block in model.blocks}
    assert counters["stats"]["unique_graphs"] <= len(kinds) + 1  # one per layer kind (+ a dynamic-shape retrace)
