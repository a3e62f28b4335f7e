"""The CPU speed paths warn where this processor would run them emulated (slower than float32), and only there:
instruction detection from the CPU flags and torch's probes, one warning per kind naming the fix, raised by a
bfloat16 load on the CPU, a bfloat16 Trainer on the CPU and int8 quantization."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import BertConfig

import hfkit
from hfkit import cpu_support
from hfkit.nn.quantize import quantize_int8

from .conftest import _save, _tiny, packaged_minilm

PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported", "_is_vnni_supported")


@pytest.fixture
def cpu(monkeypatch):
    """A fake CPU: `cpu(machine, flags, probes=False)` sets the architecture, /proc/cpuinfo flags and torch's probes."""
    def make(machine: str = "x86_64", flags: tuple[str, ...] = ("avx2",), probes: bool = False) -> None:
        monkeypatch.setattr(cpu_support.platform, "machine", lambda: machine)
        monkeypatch.setattr(cpu_support, "cpu_flags", lambda: frozenset(flags))
        for name in PROBES:
            monkeypatch.setattr(torch.cpu, name, lambda: probes, raising=False)
        monkeypatch.setattr(cpu_support, "_WARNED", set())
    return make


def test_missing_instructions_from_flags_and_probes(cpu):
    cpu(flags=("avx2", "fma"))
    assert cpu_support.missing_instructions("bfloat16") == "AVX512-BF16 or AMX"
    assert cpu_support.missing_instructions("int8") == "VNNI or AMX"
    cpu(flags=("avx2", "avx512f", "avx512_bf16", "avx512_vnni"))
    assert cpu_support.missing_instructions("bfloat16") is None and cpu_support.missing_instructions("int8") is None
    cpu(flags=("avx2", "avx_vnni"))  # Intel client cores: int8 dot products without AVX-512
    assert cpu_support.missing_instructions("int8") is None and cpu_support.missing_instructions("bfloat16")
    cpu(flags=(), probes=True)  # no /proc/cpuinfo (not Linux): torch's probes decide
    assert cpu_support.missing_instructions("bfloat16") is None
    cpu(machine="aarch64", flags=("fp", "asimd"))
    assert cpu_support.missing_instructions("bfloat16") is None  # other architectures are not judged
    with pytest.raises(ValueError, match="bfloat16"):
        cpu_support.missing_instructions("float16")


def test_one_warning_per_kind_naming_the_fix(cpu):
    cpu()
    with pytest.warns(RuntimeWarning, match=r"no AVX512-BF16 or AMX instructions.*slower than float32\. Do this\."):
        cpu_support.warn_if_emulated("bfloat16", "Do this.")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu_support.warn_if_emulated("bfloat16", "Do this.")  # once per process
    cpu(flags=("avx512_bf16", "avx512_vnni"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu_support.warn_if_emulated("bfloat16", "Do this.")
        cpu_support.warn_if_emulated("int8", "Do this.")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("cpu-support"), "BertModel", _tiny(BertConfig), packaged_minilm())


def test_bfloat16_load_and_int8_warn_where_emulated(cpu, tiny_bert):
    cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = hfkit.AutoModel.from_pretrained(tiny_bert)  # float32: nothing to say
    with pytest.warns(RuntimeWarning, match="dtype='float32'"):
        hfkit.AutoModel.from_pretrained(tiny_bert, dtype="bfloat16")
    with pytest.warns(RuntimeWarning, match="VNNI or AMX.*unquantized"):
        quantize_int8(model, compile=False)
    cpu(flags=("avx512_bf16", "avx512_vnni"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize_int8(hfkit.AutoModel.from_pretrained(tiny_bert, dtype="bfloat16"), compile=False)


def test_bfloat16_training_on_cpu_warns_where_emulated(cpu, tiny_bert, tmp_path):
    cpu()
    model = hfkit.AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    config = hfkit.TrainingConfig(precision="bf16", output_dir=str(tmp_path), max_steps=1)
    rows = [{"text": "a b", "label": 0}, {"text": "c d", "label": 1}]
    with pytest.warns(RuntimeWarning, match="precision='fp32'"):
        hfkit.Trainer(model, config, train_data=rows)


def test_amx_from_torchs_probe_else_the_cpuinfo_flag(monkeypatch):
    monkeypatch.setattr(cpu_support, "cpu_flags", lambda: frozenset({"avx512f", "amx_tile"}))
    for probe, expected in ((lambda: False, False), (lambda: True, True), (None, True)):
        cpu_support.has_amx.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe, raising=False)
        if probe is None:
            monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
        assert cpu_support.has_amx() is expected
    cpu_support.has_amx.cache_clear()
