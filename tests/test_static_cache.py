"""Static (preallocated, fixed-shape) KV cache: greedy and seeded sampled generation token-identical to the dynamic
cache and to transformers `generate` on the tiny decoders, left-padded batch of 3; on CUDA, the compiled static
decode step token-identical to the uncompiled one."""

from __future__ import annotations

import pytest
import torch

from hfkit.generation import generate_tokens, greedy_static
from hfkit.generation.static_cache import StaticCache, static_cache_for

from .parity.test_decoder_matrix import build, left_padded

FAMILIES = ["llama", "qwen3", "mistral"]  # mistral: sliding window 5 < the 11-token prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_static_greedy_identical_to_dynamic_and_transformers(family, tmp_path):
    reference, ours = build(tmp_path, family)
    ids, mask = left_padded()
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    dynamic = generate_tokens(ours, ids, mask, max_new_tokens=24)
    static = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static")
    assert static.shape == (3, ids.shape[1] + 24)
    assert torch.equal(dynamic, expected)
    assert torch.equal(static, expected)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_static_sampling_identical_to_dynamic(family, tmp_path):
    _, ours = build(tmp_path, family)
    ids, mask = left_padded()
    settings = dict(max_new_tokens=16, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3)
    run = lambda cache: generate_tokens(ours, ids, mask, generator=torch.Generator().manual_seed(5), cache=cache, **settings)
    assert torch.equal(run("static"), run("dynamic"))


def test_static_eos_padding_and_compile_fallback_on_cpu(tmp_path):
    _, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    first = generate_tokens(ours, ids, mask, max_new_tokens=3)
    eos = int(first[1, -2])
    dynamic = generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    with pytest.warns(RuntimeWarning, match="CUDA") if not torch.cuda.is_available() else _nothing():
        static = generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0, cache="static",
                                 compile=ids.device.type == "cpu")
    assert torch.equal(static, dynamic)


@pytest.mark.parametrize("lagged", [False, True])
@pytest.mark.parametrize("check_every", [1, 2, 16])
def test_static_greedy_stops_where_the_token_loop_stops(tmp_path, monkeypatch, check_every, lagged):
    """The captured greedy step checks for EOS only every EOS_CHECK_EVERY tokens (lagged: each answer read one check
    late); the extra steps are cut off."""
    monkeypatch.setattr(greedy_static, "EOS_CHECK_EVERY", check_every)
    monkeypatch.setattr(greedy_static, "LAGGED_EOS_CHECK", lagged)
    _, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    free = generate_tokens(ours, ids, mask, max_new_tokens=12, cache="static")
    T = ids.shape[1]
    for eos in {int(free[0, T + 2]), int(free[0, T + 5])} | {int(t) for t in free[:, T + 3]}:
        dynamic = generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
        static = generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0, cache="static")
        assert torch.equal(static, dynamic), eos
        one = generate_tokens(ours, ids[:1], mask[:1], max_new_tokens=12, eos_token_id=eos, pad_token_id=0, cache="static")
        assert torch.equal(one, generate_tokens(ours, ids[:1], mask[:1], max_new_tokens=12, eos_token_id=eos, pad_token_id=0))


def test_lagged_finished_check_answers_one_call_late():
    """LAGGED_EOS_CHECK's check returns the answer as it stood at the call before (False at the first)."""
    state = greedy_static.GreedyState(2, 8, 1, torch.device("cpu"))
    now, lagged = greedy_static.FinishedCheck(state, False), greedy_static.FinishedCheck(state, True)
    assert not lagged() and not now()
    state.unfinished.fill_(False)
    assert now() and not lagged()  # the lagged one still answers with the first call's "not finished"
    assert lagged()
    state.unfinished[1] = True
    assert not now() and lagged() and not lagged()


def test_greedy_step_is_one_graph(tmp_path, monkeypatch):
    """What compile=True captures per token — forward, argmax, EOS bookkeeping, in-place input updates — traces as one
    graph (fullgraph=True) that is compiled once and reused for every token, and decodes the same tokens."""
    from torch._dynamo.testing import CompileCounterWithBackend

    counter = CompileCounterWithBackend("aot_eager")
    monkeypatch.setattr(greedy_static, "compiled_step", lambda step, device, compile: (
        torch.compile(step, backend=counter, fullgraph=True) if compile else step))
    _, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    for eos in (None, 7):
        eager = generate_tokens(ours, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, cache="static", compile=False)
        torch._dynamo.reset()
        counter.clear()
        traced = generate_tokens(ours, ids, mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=0, cache="static", compile=True)
        assert torch.equal(traced, eager)
        assert counter.frame_count == 1


def test_greedy_state_keeps_its_addresses_across_calls(tmp_path):
    """A second call of the same shape, or a shorter one, refills the same cache and device buffers (CUDA graphs
    replay instead of re-recording)."""
    _, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    run = lambda: generate_tokens(ours, ids, mask, max_new_tokens=6, eos_token_id=7, pad_token_id=0, cache="static")
    first = run()
    kv = static_cache_for(ours, 3, ids.shape[1] + 6, torch.float32, torch.device("cpu"))
    state = greedy_static._STATES[kv]
    buffers = lambda s: [t.data_ptr() for t in (s.token, s.position, s.unfinished, s.eos, s.out, s.count)]
    before = buffers(state)
    assert torch.equal(run(), first)
    assert greedy_static._STATES[kv] is state and buffers(state) == before
    shorter = generate_tokens(ours, ids, mask, max_new_tokens=3, eos_token_id=7, pad_token_id=0, cache="static")
    assert torch.equal(shorter, generate_tokens(ours, ids, mask, max_new_tokens=3, eos_token_id=7, pad_token_id=0))
    assert greedy_static._STATES[kv] is state and buffers(state) == before  # the longer cache, reused


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_static_cache_shapes_are_fixed(tmp_path):
    _, ours = build(tmp_path, "mistral")
    ids, mask = left_padded()
    cache = StaticCache(ours.config, 3, 20, torch.float32, "cpu")
    cache.start(mask)
    assert cache.seq_length() == 20 - ids.shape[1] and cache.key_mask().shape == (3, 20)
    with torch.no_grad():
        ours(ids, cache.key_mask(), None, cache, use_cache=True)
    for _ in range(3):
        cache.advance()
        assert cache.seq_length() == 19 and cache.key_mask().shape == (3, 20)
    assert int(cache.filled) == ids.shape[1] + 3
    assert cache.key_mask()[:, -4:].eq(1).all()  # newest last: the last prompt token and three steps


def test_unknown_cache_kind_raises(tmp_path):
    _, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    with pytest.raises(ValueError, match="cache"):
        generate_tokens(ours, ids, mask, max_new_tokens=2, cache="paged")


def test_split_argmax_is_torch_argmax():
    """The first maximal index, as torch.argmax: ties within and across chunks, vocabularies that are not a multiple
    of the chunk, rows of -inf, NaN (maximal, the first one wins)."""
    gen = torch.Generator().manual_seed(0)
    for V, chunk in ((1000, 64), (1000, 1000), (1000, 1024), (999, 10), (7, 3), (7, 1)):
        logits = torch.randint(-3, 4, (5, V), generator=gen).float()  # (5, V) many ties
        assert torch.equal(greedy_static.split_argmax(logits, chunk), logits.argmax(-1)), (V, chunk)
    special = torch.full((4, 50), float("-inf"))  # row 0: all -inf
    special[1, [17, 40]] = float("nan")
    special[2, [3, 33]] = 5.0
    special[3, [45, 46]] = float("nan")
    special[3, 2] = 9.0
    assert torch.equal(special.argmax(-1), torch.tensor([0, 17, 3, 45]))
    for chunk in (4, 7, 16, 50):
        assert torch.equal(greedy_static.split_argmax(special, chunk), torch.tensor([0, 17, 3, 45])), chunk


@pytest.mark.parametrize("split", [True, False])
def test_split_argmax_decodes_as_argmax(tmp_path, monkeypatch, split):
    """The greedy step with SPLIT_ARGMAX (on by default) and without gives the tokens of transformers' greedy
    generate."""
    assert greedy_static.SPLIT_ARGMAX  # measured faster on an H100
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    monkeypatch.setattr(greedy_static, "SPLIT_ARGMAX", split)
    monkeypatch.setattr(greedy_static, "ARGMAX_CHUNK", 16)  # several chunks of the tiny vocabulary
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=12, cache="static"), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need CUDA")
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("split_argmax", [False, True])
def test_compiled_static_identical_to_uncompiled_on_cuda(family, split_argmax, tmp_path, monkeypatch):
    monkeypatch.setattr(greedy_static, "SPLIT_ARGMAX", split_argmax)
    monkeypatch.setattr(greedy_static, "ARGMAX_CHUNK", 16)  # several chunks of the tiny vocabulary
    _, ours = build(tmp_path, family)
    ours = ours.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    plain = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static")
    dynamic = generate_tokens(ours, ids, mask, max_new_tokens=24)
    compiled = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static", compile=True)
    again = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static", compile=True)
    assert torch.equal(plain, dynamic)
    assert torch.equal(compiled, plain)
    assert torch.equal(again, plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_static_cache_compiles_by_default_on_cuda(tmp_path):
    """cache="static" alone compiles the decode step on CUDA (transformers' default) and changes no token."""
    reference, ours = build(tmp_path, "llama")
    ours, reference = ours.cuda(), reference.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    default = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static")
    eager = generate_tokens(ours, ids, mask, max_new_tokens=24, cache="static", compile=False)
    assert torch.equal(default, eager)


def test_a_compile_failure_leaves_other_models_compiled(monkeypatch):
    """compiled_step falls back to the uncompiled step for the model whose compilation failed, and only for it."""
    from hfkit.generation.static_cache import compiled_step

    class Model:
        def __init__(self, broken: bool):
            self.broken = broken

    compiled = []

    def fake_compile(fn, options=None, fullgraph=True):
        def run(model, *args):
            if model.broken:
                raise RuntimeError("this model does not compile")
            compiled.append(model)
            return fn(model, *args)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    step = compiled_step(lambda model, x: x + 1, torch.device("cuda"))
    broken, working = Model(True), Model(False)
    with pytest.warns(RuntimeWarning, match="does not compile"):
        assert step(broken, 1) == 2  # both compiled forms failed: uncompiled
    assert step(working, 1) == 2 and compiled == [working]
    assert step(broken, 1) == 2 and step(working, 2) == 3 and compiled == [working, working]
