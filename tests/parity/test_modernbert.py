"""ModernBERT beyond the matrix: config spellings, pooling, biases, local windows, positions. float32, <= 1e-5."""

from __future__ import annotations

import json

import pytest
import torch

from hfkit.models.auto import FAMILIES

if "modernbert" not in FAMILIES:  # the family file lands before its registration in the shared encoder
    pytest.skip("modernbert is not registered in hfkit.models.auto yet", allow_module_level=True)

from hfkit.models.modernbert import ModernBertConfig  # noqa: E402

from .test_encoder_matrix import TOL, max_diffs  # noqa: E402
from .tiny import HFKIT_AUTO, VOCAB, labels_for, padded_batch, tiny_reference  # noqa: E402

THETAS = {"global_rope_theta": 1000.0, "local_rope_theta": 50.0}  # not the defaults: a swapped base shows
V5 = {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}},
      "layer_types": ["full_attention", "sliding_attention", "full_attention"]}
LEGACY = {**THETAS, "global_attn_every_n_layers": 2}
BIASES_ON = {"attention_bias": True, "mlp_bias": True, "norm_bias": True, "classifier_bias": True}


def long_batch(lengths=(40, 23, 9, 1), seed: int = 3) -> dict[str, torch.Tensor]:
    """Right-padded rows far longer than the tiny local window (every pad row sees pads only at the end)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (len(lengths), max(lengths)), generator=gen)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def compare(reference, ours, batch, task) -> dict[str, float]:
    B, T = batch["input_ids"].shape
    if task == "question-answering":  # one end past the sequence: ignored, as in transformers
        labels = {"start_positions": torch.arange(B) + 1, "end_positions": torch.arange(B) * (T // 2) + 4}
    else:
        labels = labels_for(task, batch, reference.config.num_labels)
    with torch.no_grad():
        return max_diffs(reference(**batch, **labels, output_hidden_states=True),
                         ours(**batch, **labels, output_hidden_states=True))


def check(task, tmp_path, batch=None, **config_kw) -> dict[str, float]:
    reference = tiny_reference("modernbert", task, **config_kw)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO[task].from_pretrained(tmp_path)
    diffs = compare(reference, ours, padded_batch(reference.config) if batch is None else batch, task)
    assert max(diffs.values()) <= TOL, diffs
    return diffs


def test_legacy_and_v5_spellings_read_alike():
    legacy = ModernBertConfig.from_dict({**LEGACY, "num_hidden_layers": 3})
    v5 = ModernBertConfig.from_dict({**V5, "num_hidden_layers": 3})
    assert legacy.layer_types == v5.layer_types == V5["layer_types"]
    assert legacy.rope_parameters == v5.rope_parameters == V5["rope_parameters"]
    assert ModernBertConfig.from_dict({"num_hidden_layers": 4}).layer_types == [
        "full_attention", "sliding_attention", "sliding_attention", "full_attention"]  # every 3rd global by default
    # v5 fields win over legacy ones, as in transformers; the legacy theta fills what rope_parameters leaves out
    mixed = ModernBertConfig.from_dict({**LEGACY, "global_rope_theta": 7.0, "local_rope_theta": 9.0, "num_hidden_layers": 3,
                                        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1000.0}}})
    assert mixed.rope_parameters["full_attention"]["rope_theta"] == 1000.0
    assert mixed.rope_parameters["sliding_attention"]["rope_theta"] == 9.0


@pytest.mark.parametrize("task", ["base", "masked-lm"])
def test_legacy_config_json_loads_the_same_model(task, tmp_path):
    """The reference saved in the v5 form, then its config.json rewritten in the legacy spelling: same outputs."""
    reference = tiny_reference("modernbert", task, **V5)
    v5_dir, legacy_dir = tmp_path / "v5", tmp_path / "legacy"
    reference.save_pretrained(v5_dir)
    reference.save_pretrained(legacy_dir)
    raw = json.loads((legacy_dir / "config.json").read_text())
    for key in ("rope_parameters", "layer_types", "global_attn_every_n_layers"):
        raw.pop(key, None)
    (legacy_dir / "config.json").write_text(json.dumps({**raw, **LEGACY}))
    from_v5, from_legacy = HFKIT_AUTO[task].from_pretrained(v5_dir), HFKIT_AUTO[task].from_pretrained(legacy_dir)
    assert from_v5.config.rope_parameters == from_legacy.config.rope_parameters
    assert from_v5.config.layer_types == from_legacy.config.layer_types
    batch = long_batch()
    for ours in (from_v5, from_legacy):
        diffs = compare(reference, ours, batch, task)
        assert max(diffs.values()) <= TOL, diffs


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("batch", ["padded", "long", "unmasked"])
def test_classifier_pooling(pooling, batch, tmp_path):
    inputs = {"padded": None, "long": long_batch(), "unmasked": {"input_ids": long_batch()["input_ids"]}}[batch]
    check("sequence-classification", tmp_path, inputs, classifier_pooling=pooling)


@pytest.mark.parametrize("task", ["base", "sequence-classification", "token-classification", "question-answering", "masked-lm"])
@pytest.mark.parametrize("biases", ["off", "on"])
def test_biases(task, biases, tmp_path):
    kw = {"off": {"attention_bias": False, "mlp_bias": False, "norm_bias": False, "classifier_bias": False,
                  "decoder_bias": False}, "on": BIASES_ON}[biases]
    check(task, tmp_path, long_batch(), **kw)


@pytest.mark.parametrize("task", ["base", "sequence-classification", "token-classification", "question-answering", "masked-lm"])
@pytest.mark.parametrize("local_attention", [2, 4, 8])
def test_longer_than_the_local_window(task, local_attention, tmp_path):
    """Windows of ±1, ±2, ±4 tokens over rows of 40, 23, 9 and 1 tokens, every layer type mixed in."""
    layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    check(task, tmp_path, long_batch(), local_attention=local_attention, layer_types=layer_types, **THETAS)


def test_positions_and_variants(tmp_path):
    """Explicit position_ids, other activations, untied decoder, a deeper every-3rd-global stack."""
    kw = {"num_hidden_layers": 4, "global_attn_every_n_layers": 3, "hidden_activation": "gelu_pytorch_tanh",
          "classifier_activation": "silu", "tie_word_embeddings": False, **BIASES_ON}
    reference = tiny_reference("modernbert", "masked-lm", **kw)
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO["masked-lm"].from_pretrained(tmp_path)
    assert not torch.equal(ours.decoder.weight, ours.model.embeddings.tok_embeddings.weight)
    batch = long_batch()
    batch["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None, :] + 5
    diffs = compare(reference, ours, batch, "masked-lm")
    assert max(diffs.values()) <= TOL, diffs


def test_hidden_states_end_with_the_final_norm(tmp_path):
    reference = tiny_reference("modernbert", "base")
    reference.save_pretrained(tmp_path)
    ours = HFKIT_AUTO["base"].from_pretrained(tmp_path)
    with torch.no_grad():
        out = ours(**padded_batch(reference.config), output_hidden_states=True)
    assert len(out.hidden_states) == 1 + reference.config.num_hidden_layers
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)


def test_config_round_trip_writes_the_v5_form():
    config = ModernBertConfig.from_dict({**THETAS, "num_hidden_layers": 3, "norm_eps": 1e-6, "hidden_activation": "silu"})
    raw = config.to_dict()
    assert "global_rope_theta" in raw and "global_attn_every_n_layers" not in raw  # only legacy fields the source had
    assert raw["norm_eps"] == 1e-6 and raw["hidden_activation"] == "silu" and "layer_norm_eps" not in raw
    again = ModernBertConfig.from_dict(raw)
    assert again.rope_parameters == config.rope_parameters and again.layer_types == config.layer_types


@pytest.mark.parametrize("bad", [
    {"classifier_pooling": "max"},
    {"layer_types": ["full_attention"]},
    {"layer_types": ["full_attention", "chunked_attention", "full_attention"]},
    {"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 10.0, "factor": 2.0}}},
    {"num_attention_heads": 3},  # 40 is no multiple of 3
    {"num_attention_heads": 8},  # heads of 5: rotary needs an even size
    {"global_attn_every_n_layers": 0},
])
def test_bad_configs_fail_clearly(bad):
    from hfkit.errors import ConfigError

    with pytest.raises(ConfigError):
        ModernBertConfig.from_dict({"num_hidden_layers": 3, "hidden_size": 40, "num_attention_heads": 4, **bad})
