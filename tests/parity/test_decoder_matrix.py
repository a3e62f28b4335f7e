"""Decoder families × heads against transformers: float32 logits <= 1e-5 (padded and not), KV-cache decode
equal to a full forward, greedy (and seeded sampled) generation token-identical to `generate`."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from hfkit.generation import generate_tokens, position_ids_from_mask
from hfkit.generation.decode import decode_one_token, prefill
from hfkit.models.auto import FAMILIES, is_decoder, tasks_of
from hfkit.models.decoder import KVCache
from hfkit.nn.attention import causal_mask, grouped_attention, softcapped_attention

from .tiny import DECODER_SHAPES, HFKIT_AUTO, TINY_CONFIGS, TRANSFORMERS_AUTO

TOL = 1e-5
VOCAB = 211
PAD = DECODER_SHAPES["pad_token_id"]
DECODERS = [name for name, family in FAMILIES.items() if is_decoder(family)]
REFERENCE_AUTO = {task: TRANSFORMERS_AUTO[task] for task in ("base", "sequence-classification", "causal-lm")}
CELLS = [(f, t) for f in DECODERS for t in tasks_of(FAMILIES[f])]


def build(tmp_path, model_type: str, task: str = "causal-lm", seed: int = 0, **config_kw):
    """A seeded tiny transformers model, saved, and hfkit's strict load of it."""
    config = TINY_CONFIGS[model_type](num_labels=3, **config_kw)
    torch.manual_seed(seed)
    reference = REFERENCE_AUTO[task].from_config(config).eval()
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path)  # strict: any key problem raises
    assert type(ours).__name__ == type(reference).__name__
    return reference, ours


def left_padded(lengths=(11, 7, 3), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.randint(3, VOCAB, (len(lengths), T), generator=gen)
    mask = torch.ones_like(ids)
    for row, length in enumerate(lengths):
        mask[row, : T - length] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def test_decoder_families_are_registered():
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2"} <= set(DECODERS)
    assert all(tasks_of(FAMILIES[f]) == ["base", "sequence-classification", "causal-lm"] for f in DECODERS)


@pytest.mark.parametrize("padding", ["none", "left", "left+positions"])
@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_parity(family, task, padding, tmp_path):
    reference, ours = build(tmp_path, family, task)
    ids, mask = left_padded()
    if padding == "none":
        mask = torch.ones_like(mask)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if padding == "left+positions":  # the positions generate uses
        kwargs["position_ids"] = position_ids_from_mask(mask)
    if task == "causal-lm":
        kwargs["labels"] = ids.masked_fill(mask == 0, -100)
    if task == "sequence-classification":
        kwargs["labels"] = torch.tensor([0, 2, 1])
    with torch.no_grad():
        ref_out = reference(**kwargs, output_hidden_states=True)
        our_out = ours(**kwargs, output_hidden_states=True)
    diffs = {name: max_diff(getattr(our_out, name), getattr(ref_out, name))
             for name in ("last_hidden_state", "logits", "loss") if getattr(ref_out, name, None) is not None}
    assert len(ref_out.hidden_states) == len(our_out.hidden_states)
    for i, (ref, mine) in enumerate(zip(ref_out.hidden_states, our_out.hidden_states)):
        diffs[f"hidden_states[{i}]"] = max_diff(mine, ref)
    assert max(diffs.values()) <= TOL, diffs


def test_causality_alone_is_left_to_sdpa():
    """No padding on an empty cache: no mask tensor (SDPA's is_causal, a fused kernel on CUDA); padding, a window
    shorter than the sequence, or cached keys keep the explicit mask, which then equals the unmasked path."""
    ones, padded = torch.ones(2, 6, dtype=torch.long), torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    assert causal_mask(None, 6, 0) is None and causal_mask(ones, 6, 0) is None
    assert causal_mask(None, 6, 0, sliding_window=6) is None
    for mask in (causal_mask(padded, 6, 0), causal_mask(None, 6, 0, sliding_window=5), causal_mask(None, 3, 3)):
        assert mask is not None and mask.dtype == torch.bool
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, 6, 8, generator=gen) for heads in (4, 2, 2))  # two query heads per key head
    explicit = torch.ones(6, 6, dtype=torch.bool).tril()[None, None]
    assert max_diff(grouped_attention(q, k, v, None), grouped_attention(q, k, v, explicit)) <= 1e-6
    capped = [softcapped_attention(q, k, v, mask, 5.0, 0.3) for mask in (None, explicit)]
    assert max_diff(*capped) == 0


@pytest.mark.parametrize("family", DECODERS)
def test_cached_decode_equals_full_forward(family, tmp_path):
    """Prefill 4 columns, then one token at a time through the cache: the logits of a full forward."""
    reference, ours = build(tmp_path, family)
    ids, mask = left_padded()
    positions = position_ids_from_mask(mask)
    with torch.no_grad():
        full = ours(ids, mask, positions).logits  # (B, T, V)
        ref_full = reference(ids, attention_mask=mask, position_ids=positions).logits
        cache = KVCache()
        steps = [prefill(ours, ids[:, :4], mask[:, :4], cache)]
        for t in range(4, ids.shape[1]):
            steps.append(decode_one_token(ours, ids[:, t:t + 1], mask[:, :t + 1], positions[:, t:t + 1], cache))
    assert cache.seq_length() == ids.shape[1]
    stepped = torch.stack(steps, dim=1)  # (B, T-3, V): positions 3 … T-1
    keep = mask[:, 3:].bool()  # left-pad query rows attend nowhere: compare real tokens
    assert max_diff(stepped[keep], full[:, 3:][keep]) <= TOL
    assert max_diff(full, ref_full) <= TOL


@pytest.mark.parametrize("family", DECODERS)
def test_greedy_generation_identical(family, tmp_path):
    reference, ours = build(tmp_path, family)
    ids, mask = left_padded()
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    got = generate_tokens(ours, ids, mask, max_new_tokens=32)
    assert got.shape == (3, ids.shape[1] + 32)
    assert torch.equal(got, expected)


def test_generation_stops_at_eos_and_pads_like_transformers(tmp_path):
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    with torch.no_grad():
        first = reference.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    eos = int(first[1, -2])  # row 1 "ends" at its second new token; the others go on
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0)
    got = generate_tokens(ours, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_sampling_with_the_same_seed_is_identical(family, tmp_path):
    reference, ours = build(tmp_path, family)
    ids, mask = left_padded()
    settings = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9)
    torch.manual_seed(123)
    with torch.no_grad():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=16, **settings)
    torch.manual_seed(123)
    got = generate_tokens(ours, ids, mask, max_new_tokens=16, **settings)
    assert torch.equal(got, expected)
    seeded = lambda: generate_tokens(ours, ids, mask, max_new_tokens=16, generator=torch.Generator().manual_seed(7), **settings)
    assert torch.equal(seeded(), seeded())


def test_generation_config_json_defaults(tmp_path):
    reference, ours = build(tmp_path, "llama")
    ids, mask = left_padded()
    with torch.no_grad():  # transformers' defaults: 20 new tokens, special tokens from generation_config.json
        assert torch.equal(generate_tokens(ours, ids, mask), reference.generate(ids, attention_mask=mask))
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_new_tokens": 5, "eos_token_id": 1, "pad_token_id": 0}))
    assert generate_tokens(ours, ids, mask).shape == (3, ids.shape[1] + 5)


ROPE_VARIANTS = {
    "linear": {"rope_type": "linear", "factor": 2.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
}


@pytest.mark.parametrize("rope", list(ROPE_VARIANTS))
def test_rope_types(rope, tmp_path):
    """Each rope type's logits, and greedy generation past max_position_embeddings (dynamic NTK grows there)."""
    params = {"rope_theta": 10000.0, **ROPE_VARIANTS[rope]}
    reference, ours = build(tmp_path, "llama", rope_parameters=params, max_position_embeddings=16)
    ids, mask = left_padded()
    with torch.no_grad():
        diff = max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits)
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)
    assert diff <= TOL
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=16), expected)


def test_v4_rope_spelling_reads_the_same(tmp_path):
    """config.json with `rope_theta` + `rope_scaling` (transformers v4) gives the v5 `rope_parameters`."""
    reference, _ = build(tmp_path, "llama", rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0})
    raw = json.loads((tmp_path / "config.json").read_text())
    raw.pop("rope_parameters")
    raw.update(rope_theta=5000.0, rope_scaling={"type": "linear", "factor": 2.0})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    ours = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path)
    assert ours.config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}
    ids, mask = left_padded()
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits) <= TOL


def test_tied_embeddings_and_qwen2_sliding_layers(tmp_path):
    reference, ours = build(tmp_path, "qwen2", tie_word_embeddings=True, use_sliding_window=True, sliding_window=4,
                            max_window_layers=1)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert ours.model.windows == [None, 4]
    ids, mask = left_padded()
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits) <= TOL
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=32), expected)


def test_base_checkpoint_loads_into_causal_lm_with_a_fresh_head(tmp_path):
    build(tmp_path, "llama", task="base")
    model = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path)
    assert not model.lm_head.weight.is_meta


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma", "gemma2", "phi3", "gpt2"])
def test_bfloat16_loads_and_generates_bit_identically(family, tmp_path):
    """Loaded in bfloat16 on both sides: RoPE runs in the activations' dtype, as transformers' decoders."""
    build(tmp_path, family)
    reference = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path, dtype=torch.bfloat16)
    ids, mask = left_padded()
    with torch.no_grad():
        keep = mask.bool()
        assert torch.equal(ours(ids, mask).logits[keep], reference(ids, attention_mask=mask).logits[keep])
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=32), expected)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("family,task", CELLS, ids=[f"{f}-{t}" for f, t in CELLS])
def test_round_trip_is_byte_identical(family, task, tied, tmp_path):
    """transformers save → hfkit load → hfkit save: same keys and bytes, same config.json (tied lm_head dropped)."""
    from safetensors.torch import load_file

    _, ours = build(tmp_path / "source", family, task, tie_word_embeddings=tied)
    ours.save_pretrained(tmp_path / "out")
    source, saved = load_file(tmp_path / "source/model.safetensors"), load_file(tmp_path / "out/model.safetensors")
    assert set(saved) == set(source)
    assert all(torch.equal(saved[k], source[k]) for k in source)
    assert json.loads((tmp_path / "out/config.json").read_text()) == json.loads((tmp_path / "source/config.json").read_text())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", DECODERS)
def test_cuda_left_padded_logits_and_generation(family, tmp_path):
    """On the GPU: left-padded logits as the CPU reference, no NaN from fully masked pad rows, and greedy
    generation token-identical to transformers' own generate on the GPU."""
    reference, _ = build(tmp_path, family)
    ours = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path, device="cuda")
    ids, mask = left_padded()
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).logits
        got = ours(ids.cuda(), mask.cuda()).logits.cpu()
        assert not got.isnan().any()
        keep = mask.bool()
        assert max_diff(got[keep], expected[keep]) <= 1e-4
        on_gpu = reference.cuda().generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids.cuda(), mask.cuda(), max_new_tokens=32).cpu(), on_gpu.cpu())


def test_gemma2_soft_caps_sandwich_norms_and_alternating_windows(tmp_path):
    """Weights ~N(0, 0.5) so the attention soft-cap (2.0) and the final one (3.0) bend the numbers; layer 0 slides."""
    reference, ours = build(tmp_path, "gemma2", initializer_range=0.5)
    assert ours.model.windows == [4, None]
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # Gemma ties by default
    ids, mask = left_padded()
    with torch.no_grad():
        logits = reference(ids, attention_mask=mask).logits
        assert max_diff(ours(ids, mask).logits, logits) <= TOL
        assert logits.abs().max() <= 3.0
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=32), expected)


def test_phi3_partial_rotary_factor(tmp_path):
    """RoPE on the first half of each head (partial_rotary_factor 0.5), the rest passed through."""
    reference, ours = build(tmp_path, "phi3", partial_rotary_factor=0.5)
    assert ours.model.rope_dim == 8
    ids, mask = left_padded()
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits) <= TOL
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=32), expected)


def test_phi3_longrope_short_and_long_factors(tmp_path):
    """LongRoPE: short factors up to original_max_position_embeddings, long factors (and the attention factor) past it."""
    params = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
              "long_factor": [2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0], "original_max_position_embeddings": 8}
    reference, ours = build(tmp_path, "phi3", rope_parameters=params, max_position_embeddings=32,
                            original_max_position_embeddings=8)
    ids, mask = left_padded()  # 11 positions: past the original 8, so the long factors
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits) <= TOL
        short = ids[:, -6:], mask[:, -6:]
        assert max_diff(ours(*short).logits, reference(short[0], attention_mask=short[1]).logits) <= TOL
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=16), expected)


@pytest.mark.parametrize("config_kw", [{"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}],
                         ids=["unscaled", "inverse-layer-idx"])
def test_gpt2_attention_scaling(config_kw, tmp_path):
    reference, ours = build(tmp_path, "gpt2", initializer_range=0.2, **config_kw)
    ids, mask = left_padded()
    with torch.no_grad():
        assert max_diff(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits) <= TOL
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=32, do_sample=False)
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=32), expected)


def test_gpt2_conv1d_layout_and_legacy_mask_buffers(tmp_path):
    """Conv1D weights stay (in, out) as stored; old checkpoints' `attn.bias` / `attn.masked_bias` buffers are ignored."""
    from safetensors.torch import load_file, save_file

    reference, ours = build(tmp_path, "gpt2")
    c_attn = ours.transformer.h[0].attn.c_attn
    assert ours.lm_head.weight is ours.transformer.wte.weight and ours.model is ours.transformer
    assert c_attn.weight.shape == (64, 3 * 64) and torch.equal(c_attn.weight, reference.transformer.h[0].attn.c_attn.weight)
    state = load_file(tmp_path / "model.safetensors")
    for i in range(2):  # what GPT-2 checkpoints saved before transformers 4.x dropped the buffers
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool))[None, None]
        state[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    legacy = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path)
    ids, mask = left_padded()
    with torch.no_grad():
        assert torch.equal(legacy(ids, mask).logits, ours(ids, mask).logits)


def test_gpt2_unsupported_options_are_clear_errors(tmp_path):
    from hfkit.errors import ConfigError

    build(tmp_path, "gpt2", task="base")
    raw = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "reorder_and_upcast_attn": True}))
    with pytest.raises(ConfigError, match="reorder_and_upcast_attn"):
        HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path)


def test_gpt2_hub_layout_loads_as_causal_lm(tmp_path):
    """openai-community/gpt2's layout: GPT2Model keys (no `transformer.` prefix, no lm_head) with `attn.bias` buffers,
    `architectures: GPT2LMHeadModel`: the LM loads with lm_head tied to wte, logits as transformers'."""
    from safetensors.torch import load_file, save_file

    reference, _ = build(tmp_path, "gpt2")
    state = {k.removeprefix("transformer."): v for k, v in load_file(tmp_path / "model.safetensors").items()}
    state.update({f"h.{i}.attn.bias": torch.tril(torch.ones(64, 64))[None, None] for i in range(2)})
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = HFKIT_AUTO["causal-lm"].from_pretrained(tmp_path)
    assert ours.lm_head.weight is ours.transformer.wte.weight
    ids, mask = left_padded()
    with torch.no_grad():
        assert torch.equal(ours(ids, mask).logits, reference(ids, attention_mask=mask).logits)
