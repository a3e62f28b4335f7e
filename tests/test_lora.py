"""LoRA: adapters hfkit writes load in peft with the same logits, peft's adapters load in hfkit, merging gives a
plain checkpoint transformers loads strictly, only adapters (and the head) train, and bad inputs fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfkit.errors import CheckpointError, ConfigError
from hfkit.export import ExportError
from hfkit.lora import LINEAR, LoraConfig, LoraLinear, has_lora
from hfkit.models.auto import FAMILIES, tasks_of

from .parity.tiny import (
    HFKIT_AUTO,
    TINY_CONFIGS,
    TRANSFORMERS_AUTO,
    padded_batch,
    tiny_reference,
)

peft = pytest.importorskip("peft")
TOL = 1e-5


def build(tmp_path, model_type: str, task: str):
    """A seeded tiny transformers model, saved, and hfkit's strict load of it."""
    reference = tiny_reference(model_type, task)
    reference.save_pretrained(tmp_path / "base")
    return reference, HFKIT_AUTO[task].from_pretrained(tmp_path / "base")


@torch.no_grad()
def perturb(model, seed: int = 0) -> None:
    """Random values in every trainable tensor (B starts at zero), so the adapter changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):
        if param.requires_grad:
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def max_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def peft_logits(reference, adapter_dir, batch) -> torch.Tensor:
    return logits(peft.PeftModel.from_pretrained(reference, str(adapter_dir)).eval(), batch)


CASES = {  # model_type, task, LoraConfig
    "bert-seqcls": ("bert", "sequence-classification", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                                target_modules=["query", "value"])),
    "llama-rslora": ("llama", "causal-lm", LoraConfig(r=4, lora_alpha=16, use_rslora=True,
                                                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"])),
    "gpt2-conv1d": ("gpt2", "causal-lm", LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"])),
}


@pytest.mark.parametrize("case", list(CASES))
def test_saved_adapter_gives_peft_the_same_logits(case, tmp_path):
    model_type, task, config = CASES[case]
    reference, ours = build(tmp_path, model_type, task)
    batch = padded_batch(reference.config)
    base = logits(ours, batch)
    ours.add_lora(config)
    assert max_diff(logits(ours, batch), base) == 0  # B = 0: the adapted model starts as the base
    perturb(ours)
    expected = logits(ours, batch)
    assert max_diff(expected, base) > 1e-2
    ours.save_adapter(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] == {"causal-lm": "CAUSAL_LM", "sequence-classification": "SEQ_CLS"}[task]
    assert saved["fan_in_fan_out"] == (model_type == "gpt2")
    assert saved["base_model_name_or_path"] == str(tmp_path / "base")
    # the keys and shapes are exactly what peft writes for the same config
    theirs = peft.get_peft_model(tiny_reference(model_type, task), peft.LoraConfig(
        r=config.r, lora_alpha=config.lora_alpha, target_modules=config.target_modules, task_type=saved["task_type"]))
    theirs.save_pretrained(tmp_path / "peft")
    shapes = lambda d: {k: tuple(v.shape) for k, v in load_file(d / "adapter_model.safetensors").items()}
    assert shapes(tmp_path / "adapter") == shapes(tmp_path / "peft")
    if task == "sequence-classification":
        assert saved["modules_to_save"] == ["classifier"] and "base_model.model.classifier.weight" in shapes(tmp_path / "adapter")
    assert max_diff(peft_logits(reference, tmp_path / "adapter", batch), expected) <= TOL
    again = HFKIT_AUTO[task].from_pretrained(tmp_path / "base").load_adapter(tmp_path / "adapter")
    assert max_diff(logits(again, batch), expected) <= TOL


MATRIX = [(f, t) for f in FAMILIES if f in TINY_CONFIGS for t in tasks_of(FAMILIES[f]) if t != "pretraining"]


@pytest.mark.parametrize("model_type,task", MATRIX, ids=[f"{f}-{t}" for f, t in MATRIX])
def test_every_family_and_head_matches_peft(model_type, task, tmp_path):
    """LoRA on every Linear of the backbone, the head's fresh parts saved whole: peft computes the same outputs."""
    reference, ours = build(tmp_path, model_type, task)
    prefix = "" if task == "base" else ours.family.base_prefix + "."
    names = sorted({n.rsplit(".", 1)[-1] for n, m in ours.named_modules() if isinstance(m, LINEAR) and n.startswith(prefix)})
    ours.add_lora(r=4, lora_alpha=8, target_modules=names)
    perturb(ours)
    ours.save_adapter(tmp_path / "adapter")
    batch = padded_batch(reference.config)
    if task == "question-answering":
        batch.pop("token_type_ids", None)  # PeftModelForQuestionAnswering does not pass them on
    with torch.no_grad():
        theirs = peft.PeftModel.from_pretrained(reference, str(tmp_path / "adapter")).eval()(**batch)
        mine = ours(**batch)
    field = next(f for f in ("logits", "start_logits", "last_hidden_state") if getattr(theirs, f, None) is not None)
    assert max_diff(getattr(mine, field), getattr(theirs, field)) <= TOL


PEFT_WRITTEN = {  # roberta: a nested head (classifier.dense/out_proj) saved whole; "dense" also names it, PEFT skips it
    "roberta-seqcls": ("roberta", "sequence-classification", ["query", "value", "dense"], "SEQ_CLS"),
    "gpt2-causal": ("gpt2", "causal-lm", ["c_attn", "c_fc"], "CAUSAL_LM"),
}


@pytest.mark.parametrize("case", list(PEFT_WRITTEN))
def test_loads_an_adapter_written_by_peft(case, tmp_path):
    model_type, task, targets, task_type = PEFT_WRITTEN[case]
    reference, ours = build(tmp_path, model_type, task)
    batch = padded_batch(reference.config)
    theirs = peft.get_peft_model(reference, peft.LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=targets,
                                                            task_type=task_type))
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for name, param in theirs.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    theirs.save_pretrained(tmp_path / "adapter")
    theirs.eval()
    expected = logits(theirs, batch)
    assert max_diff(expected, logits(ours, batch)) > 1e-2
    ours.load_adapter(tmp_path / "adapter")
    assert max_diff(logits(ours, batch), expected) <= TOL
    if task == "sequence-classification":  # the head is loaded whole, with no LoRA inside it
        assert not any(isinstance(m, LoraLinear) for m in ours.get_submodule("classifier").modules())


@pytest.mark.parametrize("case", ["bert-seqcls", "gpt2-conv1d"])
def test_merge_gives_a_plain_checkpoint_transformers_loads(case, tmp_path):
    model_type, task, config = CASES[case]
    _, ours = build(tmp_path, model_type, task)
    batch = padded_batch(ours.config)
    keys = set(ours.state_dict())
    ours.add_lora(config)
    perturb(ours)
    expected = logits(ours, batch)
    with pytest.raises(ExportError, match=r"merge_lora\(\)"):
        ours.save_pretrained(tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    ours.merge_lora()
    assert not has_lora(ours) and set(ours.state_dict()) == keys
    assert max_diff(logits(ours, batch), expected) <= TOL
    ours.save_pretrained(tmp_path / "merged")
    loaded, info = TRANSFORMERS_AUTO[task].from_pretrained(tmp_path / "merged", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert max_diff(logits(loaded.eval(), batch), expected) <= TOL


def test_only_adapters_and_the_head_train(tmp_path):
    _, ours = build(tmp_path, "bert", "sequence-classification")
    ours.add_lora(r=4, lora_alpha=8, target_modules=["query", "value"])
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in ours.named_parameters() if ".lora_" in n or n.startswith("classifier.")}
    assert len(trainable) == 2 * 2 * 2 + 2  # 2 layers × (query, value) × (A, B) + classifier weight/bias
    perturb(ours)
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    batch = padded_batch(ours.config)
    loss = ours(**batch, labels=torch.tensor([0, 2, 1])).loss
    loss.backward()
    torch.optim.SGD([p for p in ours.parameters() if p.requires_grad], lr=0.1).step()
    changed = {n for n, p in ours.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable


def test_bad_inputs_fail_clearly(tmp_path):
    _, ours = build(tmp_path, "bert", "sequence-classification")
    with pytest.raises(ConfigError, match=r"No module .* matches target_modules.*'query'"):
        ours.add_lora(target_modules=["q_proj"])
    with pytest.raises(ConfigError, match="not Linear layers"):
        ours.add_lora(target_modules=["attention"])
    with pytest.raises(ConfigError, match="positive integer"):
        LoraConfig(r=0, target_modules=["query"])
    with pytest.raises(ConfigError, match="'none'"):
        LoraConfig(bias="all", target_modules=["query"])
    with pytest.raises(ConfigError, match="lora_dropout"):
        LoraConfig(lora_dropout=1.0, target_modules=["query"])
    assert not has_lora(ours) and all(p.requires_grad for p in ours.parameters())  # failures leave the model as it was
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="adapter_config.json"):
        ours.load_adapter(tmp_path / "empty")
    with pytest.raises(Exception, match="no LoRA layers"):
        ours.save_adapter(tmp_path / "none")


def test_adapter_with_a_missing_tensor_is_refused_by_name(tmp_path):
    _, ours = build(tmp_path, "bert", "sequence-classification")
    ours.add_lora(r=4, target_modules=["query"]).save_adapter(tmp_path / "adapter")
    path = tmp_path / "adapter" / "adapter_model.safetensors"
    tensors = load_file(path)
    key = "base_model.model.bert.encoder.layer.1.attention.self.query.lora_B.weight"
    tensors["base_model.model.stray.weight"] = tensors.pop(key)
    save_file(tensors, path)
    fresh = HFKIT_AUTO["sequence-classification"].from_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match=rf"(?s)missing \(1\): {key}.*unexpected \(1\): base_model.model.stray.weight"):
        fresh.load_adapter(tmp_path / "adapter")
    assert not has_lora(fresh)
    ours.save_adapter(tmp_path / "adapter")  # an adapter folder is replaced whole
    assert key in load_file(path)


@pytest.mark.parametrize("model_type", sorted(f for f in FAMILIES if f in TINY_CONFIGS))
def test_default_targets_exist_in_every_family(model_type, tmp_path):
    """No target_modules: the family's query/value (or fused qkv) projections, PEFT's defaults where it has them."""
    _, ours = build(tmp_path, model_type, "base")
    ours.add_lora(r=2)
    wrapped = [n for n, m in ours.named_modules() if type(m).__name__ == "LoraLinear"]
    assert len(wrapped) >= ours.config.num_hidden_layers
    assert {n.rsplit(".", 1)[-1] for n in wrapped} == set(ours.lora_config.target_modules)
