"""The decode kernels (nn.matvec, nn.decode_attention) run by Triton's interpreter on the CPU
(TRITON_INTERPRET=1, set by test_matvec.py, which runs this module in a subprocess: the variable must be set before
Triton is imported).

    TRITON_INTERPRET=1 python -m tests.interpreted_kernels
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch._dynamo.testing import CompileCounterWithBackend

from hfkit.generation.static_cache import StaticCache, decode_static, prefill_static
from hfkit.nn import decode_attention, matvec
from hfkit.nn.activations import gelu_tanh
from hfkit.nn.norms import RMSNorm
from hfkit.nn.quantize import quantize_weights_int8
from hfkit.nn.rope import apply_rope

from .parity.test_decoder_matrix import build

ACTS = {matvec.SILU: F.silu, matvec.GELU_TANH: gelu_tanh}


def check_kernels() -> None:
    """Every form against float64 on the dequantized weights: relative error at the output dtype's rounding."""
    gen = torch.Generator().manual_seed(0)
    cases = [(40, 96, 0, True, 1, torch.float32), (37, 200, matvec.SILU, False, 3, torch.bfloat16),
             (24, 64, matvec.GELU_TANH, True, 2, torch.float32), (5, 1100, 0, False, 4, torch.bfloat16),
             (300, 48, matvec.SILU, True, 1, torch.float32)]
    for n, k, act, biased, rows, dtype in cases:
        w = torch.randint(-127, 128, (2 * n if act else n, k), dtype=torch.int8, generator=gen)
        scale = torch.rand(w.shape[0], generator=gen) / 50
        bias = torch.randn(w.shape[0], generator=gen) if biased else None
        x = torch.randn(rows, 1, k, generator=gen).to(dtype)
        assert matvec.applies(x)
        ref = x.double() @ (w.double() * scale.double()[:, None]).T + (bias.double() if biased else 0)
        if act:
            gate, up = ref.chunk(2, dim=-1)
            ref, out = ACTS[act](gate) * up, matvec.glu_matvec(x, w, scale, bias, act)
        else:
            out = matvec.matvec(x, w, scale, bias)
        error = ((out.double() - ref).norm() / ref.norm()).item()
        assert out.shape == (rows, 1, n) and out.dtype == dtype, (out.shape, out.dtype)
        assert error < (1e-6 if dtype == torch.float32 else 4e-3), (n, k, act, dtype, error)
    assert not matvec.applies(torch.randn(matvec.MAX_ROWS + 1, 8))  # a matrix product: not this kernel's


def check_float_kernels() -> None:
    """`linears` (1–3 layers side by side) and `glu_linear` on float layers against float64; a launch shape whose
    blocks would straddle two weights falls back to one row per block."""
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)  # the layers' initialisation
    for sizes, k, biased, rows, dtype in [((40,), 96, True, 1, torch.float32), ((24, 8, 8), 200, False, 3,
                                          torch.bfloat16), ((6, 5, 7), 64, True, 4, torch.float32)]:
        layers = [nn.Linear(k, n, bias=biased).to(dtype) for n in sizes]
        x = torch.randn(rows, 1, k, generator=gen).to(dtype)
        with torch.no_grad():
            ref = torch.cat([F.linear(x.double(), layer.weight.double(), None if layer.bias is None
                                      else layer.bias.double()) for layer in layers], dim=-1)
            out = matvec.linears(x, layers)
            blocked = matvec._launch(x, [layer.weight for layer in layers], None,
                                     [layer.bias for layer in layers] if biased else None, 0,
                                     {"BLOCK_N": 4, "BLOCK_K": 32, "num_warps": 1})
        for y in (out, blocked):
            error = ((y.double() - ref).norm() / ref.norm()).item()
            assert y.shape == (rows, 1, sum(sizes)) and y.dtype == dtype, (y.shape, y.dtype)
            # float32 sums rounded once to bf16: under a unit roundoff on a GPU, under one ulp (finfo.eps) here,
            # where the interpreter truncates float32 to bf16 (4e-3 failed at 4.1e-3 for unseeded layers)
            assert error < (1e-6 if dtype == torch.float32 else torch.finfo(dtype).eps), (sizes, dtype, error)
    for act, fn in ACTS.items():
        gate, up = nn.Linear(48, 30), nn.Linear(48, 30)
        x = torch.randn(2, 48, generator=gen)
        with torch.no_grad():
            ref = fn(gate(x)) * up(x)
            out = matvec.glu_linear(x, gate, up, fn)
        assert (out - ref).abs().max() <= 1e-5, (act, (out - ref).abs().max())
    linear = nn.Linear(8, 4)
    assert matvec.linears(torch.randn(1, 8), [linear]) is None  # a weight that wants gradients: autograd's path
    with torch.no_grad():
        assert matvec.linears(torch.randn(1, 8, dtype=torch.float64), [linear]) is None  # another dtype
        assert matvec.glu_linear(torch.randn(1, 8), linear, linear, torch.relu) is None  # no kernel activation


def check_norm_and_residual() -> None:
    """The RMSNorm prologue and the residual epilogue: `linears` (q | k | v, biases) and `glu_linear` of
    x / rms(x) · g, plus r, against float64 (float32 layers) or against the torch path's own roundings (bf16);
    rows of 96 (one K tile) and, float32, of 1100 (two K tiles for gate | up: the rms and the gain over both)."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    for width, dtype in [(96, torch.float32), (1100, torch.float32), (96, torch.bfloat16)]:
        norm = RMSNorm(width, 1e-5).to(dtype)
        layers = [nn.Linear(width, n).to(dtype) for n in (16, 8, 8)]
        gate, up = nn.Linear(width, 40).to(dtype), nn.Linear(width, 40).to(dtype)
        with torch.no_grad():
            norm.weight.copy_(torch.rand(width, generator=gen) + 0.5)
            x = (3 * torch.randn(3, 1, width, generator=gen)).to(dtype)
            r = torch.randn(3, 1, 32, generator=gen).to(dtype)
            out = matvec.linears(x, layers, (norm.weight, norm.eps), residual=r)
            glu = matvec.glu_linear(x, gate, up, F.silu, (norm.weight, norm.eps))
            exact = dtype == torch.float32
            h = norm.double()(x.double()) if exact else norm(x)  # bf16: the torch path, rounding as it does
            ref = r.double() + torch.cat([F.linear(h.double(), layer.weight.double(), layer.bias.double())
                                          for layer in layers], dim=-1)
            ref_glu = F.silu(gate.double()(h.double())) * up.double()(h.double())
        # bf16: each of the norm's two roundings and the sum's truncates under the interpreter (float32 → bf16),
        # where torch rounds to nearest; with truncation emulated in torch the kernel agreed bit for bit (2026-12-07)
        bound = 1e-6 if exact else 3 * torch.finfo(dtype).eps
        for y, truth in ((out, ref), (glu, ref_glu)):
            error = ((y.double() - truth).norm() / truth.norm()).item()
            assert y.dtype == dtype and y.shape == truth.shape and error < bound, (width, dtype, error)
    with torch.no_grad():
        assert matvec.linears(x, layers, (norm.weight.float(), norm.eps)) is None  # a gain of another dtype


def check_dependent_launch() -> None:
    """With matvec.PDL, compiled code launches the products through the custom op that adds the launch attribute
    (which itself needs an sm_90 GPU: the CUDA tests), with the outputs of the traced launch; eager code keeps it."""
    torch.manual_seed(3)
    layers, x, residual = [nn.Linear(64, 48), nn.Linear(64, 16)], torch.randn(2, 64), torch.randn(2, 64)
    norm = (torch.rand(64) + 0.5, 1e-5)  # (g, eps): the fused norm's arguments reach the kernel through the op too
    products = lambda x: (matvec.linears(x, layers), matvec.linears(x, layers, norm=norm, residual=residual),
                          matvec.glu_linear(x, *layers[:1] * 2, F.silu, norm=norm))
    targets = []
    backend = lambda graph, inputs: targets.extend(str(node.target) for node in graph.graph.nodes) or graph
    with torch.no_grad():
        with mock.patch.object(matvec, "PDL", False):
            plain = products(x)
        with mock.patch.object(matvec, "PDL", True):
            eager = products(x)
            compiled = torch.compile(products, backend=backend, fullgraph=True)(x)
    for got in (eager, compiled):
        assert all(torch.equal(a, b) for a, b in zip(got, plain, strict=True))
    assert targets.count("hfkit.dependent_products.default") == 3, targets


def check_decode_attention() -> None:
    """One query position against a cache: grouped, multi-head, masked and not, head sizes 32–96, against float64
    SDPA on the repeated keys and values; a query that sees no key gets zeros."""
    gen = torch.Generator().manual_seed(3)
    for B, nh, nkv, S, D, masked, dtype in [(2, 8, 2, 150, 64, True, torch.float32), (1, 4, 4, 70, 96, False,
                                            torch.bfloat16), (3, 6, 1, 33, 32, True, torch.float16)]:
        q = torch.randn(B, nh, 1, D, generator=gen).to(dtype)
        k, v = (torch.randn(B, nkv, S, D, generator=gen).to(dtype) for _ in range(2))
        mask = torch.rand(B, 1, 1, S, generator=gen) > 0.3 if masked else None
        assert decode_attention.applies(q, k, mask, 0.0)
        G = nh // nkv
        ref = F.scaled_dot_product_attention(q.double(), k.double().repeat_interleave(G, 1),
                                             v.double().repeat_interleave(G, 1), attn_mask=mask, scale=0.3)
        for splits in (1, 2, None, 7):  # whole cache, halves, the default, more splits than blocks (empty ones)
            out = decode_attention.decode_attention(q, k, v, mask, scale=0.3, splits=splits)
            error = (out.double() - ref).abs().max().item()
            assert out.shape == q.shape and out.dtype == dtype
            # float32: the interpreter's numpy exp differs by CPU (1.5e-6 on an AMD EPYC, 2.3× torch's own float32
            # SDPA there; < 1e-6 on Intel Xeons): the project's float32 bound
            assert error < (1e-5 if dtype == torch.float32 else 1e-2), (B, nh, nkv, S, D, dtype, splits, error)
    traced = torch.compile(decode_attention.decode_attention, backend="aot_eager", fullgraph=True)  # no graph break
    assert torch.equal(traced(q, k, v, mask, scale=0.3), decode_attention.decode_attention(q, k, v, mask, scale=0.3))
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 2, 5, 16)
    for splits in (1, 3):
        nothing = torch.zeros(1, 1, 1, 5, dtype=torch.bool)
        assert decode_attention.decode_attention(q, k, k, nothing, splits=splits).abs().max() == 0
    assert not decode_attention.applies(torch.randn(1, 2, 2, 16), k, None, 0.0)  # two query positions
    assert not decode_attention.applies(q, k, None, 0.1)  # dropout
    assert not decode_attention.applies(q, k, torch.zeros(1, 2, 1, 5, dtype=torch.bool), 0.0)  # a mask per head


def decode_step_case(B: int, nh: int, nkv: int, S: int, D: int, slot: int, dtype: torch.dtype, scale: float,
                     gen: torch.Generator, device: str = "cpu") -> tuple[tuple, tuple]:
    """A decode step's random inputs (q, k, v, cos, sin, keys, values, slot, counts, mask) for decode_step, and what
    the torch path makes of them: (keys, values) with q and k rotated by apply_rope as the decoders round it and
    written at the slot, and float64 SDPA of the rotated q over them."""
    make = lambda *shape: torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
    q, k, v = make(B, nh, 1, D), make(B, nkv, 1, D), make(B, nkv, 1, D)
    keys, values = make(B, nkv, S, D), make(B, nkv, S, D)
    angles = (torch.rand(B, 1, D // 2, generator=gen) * 6).repeat(1, 1, 2).to(device)  # (B, 1, D) as rope tables
    cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
    mask = (torch.rand(B, 1, 1, S, generator=gen) > 0.3).to(device)
    mask[..., slot] = True
    at = torch.tensor([slot], device=device)
    q_rot, k_rot = apply_rope(q, k, cos, sin, upcast=False)
    expect_keys, expect_values = keys.clone().index_copy_(2, at, k_rot), values.clone().index_copy_(2, at, v)
    G = nh // nkv
    ref = F.scaled_dot_product_attention(q_rot.double(), expect_keys.double().repeat_interleave(G, 1),
                                         expect_values.double().repeat_interleave(G, 1), attn_mask=mask, scale=scale)
    counts = torch.zeros(B * nkv, dtype=torch.int32, device=device)
    return (q, k, v, cos, sin, keys, values, at, counts, mask), (expect_keys, expect_values, ref)


def check_decode_step() -> None:
    """decode_step (RoPE, the cache write, attention and the splits' merge in one kernel) against the torch path
    (decode_step_case); the cache's other slots untouched, the split counts back at zero (more splits than blocks
    too); the merge unrolled (MERGE_UNROLLED) bit for bit as its loops, and so the first block loaded early
    (EARLY_LOADS)."""
    gen = torch.Generator().manual_seed(5)
    for B, nh, nkv, S, D, slot, dtype, splits in [(2, 8, 2, 40, 64, 17, torch.float32, 3),
                                                  (1, 4, 4, 33, 24, 32, torch.bfloat16, None),
                                                  (3, 6, 1, 20, 32, 0, torch.float32, 4)]:
        inputs, (expect_keys, expect_values, ref) = decode_step_case(B, nh, nkv, S, D, slot, dtype, 0.3, gen)
        q, _, _, _, _, keys, values, _, counts, mask = inputs
        assert decode_attention.applies(q, keys, mask, 0.0)
        before = [t.clone() for t in (keys, values)]
        out = decode_attention.decode_step(*inputs, scale=0.3, splits=splits)
        assert not counts.any()
        with mock.patch.object(decode_attention, "MERGE_UNROLLED", True):  # the same sums in the same order
            assert decode_attention.merge_unroll(splits or decode_attention.default_splits(q, keys)) > 0
            assert torch.equal(decode_attention.decode_step(*inputs, scale=0.3, splits=splits), out)
        with mock.patch.object(decode_attention, "EARLY_LOADS", True):  # the same blocks in the same order
            assert torch.equal(decode_attention.decode_step(*inputs, scale=0.3, splits=splits), out)
        assert not counts.any()
        error = (out.double() - ref).abs().max().item()
        assert out.shape == q.shape and out.dtype == dtype
        # bf16: the interpreter truncates the rotation's three roundings where torch rounds to nearest (a GPU
        # rounds: the CUDA test holds it to decode_attention's bound)
        assert error < (1e-5 if dtype == torch.float32 else 2e-2), (B, nh, nkv, S, D, dtype, error)
        bound = 1e-6 if dtype == torch.float32 else 3 * torch.finfo(dtype).eps
        assert ((keys - expect_keys).abs() / expect_keys.abs().clamp_min(1)).max() <= bound, (dtype, "keys")
        assert torch.equal(values, expect_values)
    counter = CompileCounterWithBackend("aot_eager")
    traced = torch.compile(decode_attention.decode_step, backend=counter, fullgraph=True)  # no graph break
    again = (*inputs[:5], *before, *inputs[7:])  # the cache as it was before the step
    assert torch.equal(traced(*again, scale=0.3, splits=splits), out)
    assert torch.equal(before[0], keys) and torch.equal(before[1], values)  # the cache written in place
    for flag, frames in [("MERGE_UNROLLED", 2), ("EARLY_LOADS", 3)]:  # read while tracing: a compiled step's guards
        with mock.patch.object(decode_attention, flag, True):
            assert torch.equal(traced(*inputs, scale=0.3, splits=splits), out) and counter.frame_count == frames


def step_matches_torch_path(model, label: str, left_padded: bool) -> None:
    """A decoder's one-token step (two rows) through the kernels equals its step with them switched off (≤ 1e-5)."""
    ids = torch.randint(3, 90, (2, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 7, dtype=torch.long)
    if left_padded:
        mask[1, :2] = 0  # the attention kernel's mask
    with torch.no_grad():
        cache = model(ids, mask[:, :6], use_cache=True).past_key_values  # 12 rows: the torch path
        step = ids[:, -1:]  # (2, 1): two rows, the kernels
        fused = model(step, mask, past_key_values=copy.deepcopy(cache), use_cache=True).logits
        matvec.ENABLED = decode_attention.ENABLED = False
        plain = model(step, mask, past_key_values=cache, use_cache=True).logits
        matvec.ENABLED = decode_attention.ENABLED = True
    assert (fused - plain).abs().max() <= 1e-5, (label, (fused - plain).abs().max())


def check_decoders(tmp: Path) -> None:
    """Quantized float32 decoders (int8 kernels): Llama (SiLU), Gemma (tanh-GELU), Qwen2 (q | k | v biases). Float32
    decoders (float kernels for q | k | v, attention, o, gate | up with its activation, down, LM head; one row
    left-padded): the same and Phi-3 (fused projections). The interpreter runs a launch's programs one by one in
    Python (~40 ms each on a 2-core EPYC), so these run 32 weight rows a program; the GPU's 1–2 rows a program are
    checked above (check_kernels, check_float_kernels) and by the CUDA tests."""
    gpu_config, launch = matvec.config_for, matvec._launch
    matvec.config_for = lambda n, k, glu=False: {**gpu_config(n, k, glu), "BLOCK_N": 32}
    try:
        with mock.patch.object(matvec, "FUSED_NORMS", False):  # the norms apart, as on GPUs before sm_90
            for family in ("llama", "gemma", "qwen2"):
                _, model = build(tmp / family, family)
                step_matches_torch_path(quantize_weights_int8(model), f"int8 {family}", left_padded=False)
            for family in ("llama", "gemma", "qwen2", "phi3"):
                _, model = build(tmp / f"float-{family}", family)
                step_matches_torch_path(model, family, left_padded=True)
        launches, layers = [], 0  # (norm, residual) of each launch; the layers stepped
        matvec._launch = lambda *args: launches.append((*args[6:], None, None)[:2]) or launch(*args)
        for family in ("llama", "qwen2"):  # the layers' RMSNorms inside the kernels (FUSED_NORMS, on)
            _, model = build(tmp / f"float-{family}", family)
            step_matches_torch_path(model, f"{family}, fused norms", left_padded=True)
            layers += model.config.num_hidden_layers
        norms, residuals = (sum(part is not None for part in parts) for parts in zip(*launches, strict=True))
        assert norms == residuals == 2 * layers, (norms, residuals, layers)  # q | k | v and gate | up; o and down
    finally:
        matvec.config_for, matvec._launch = gpu_config, launch


def check_static_decode_steps(tmp: Path) -> None:
    """Float32 Llama and Qwen3 (per-head q/k norms, head size 24) decoding two tokens through a static cache, two
    rows (one left-padded): with decode_attention.STEP_ON the steps' RoPE and cache writes run in the attention
    kernel (each layer's launch counted), and the logits and caches equal those of the steps without it."""
    ids = torch.randint(3, 90, (2, 9), generator=torch.Generator().manual_seed(6))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    gpu_config, launch, steps, default = matvec.config_for, decode_attention._launch, [], decode_attention.STEP_ON
    matvec.config_for = lambda n, k, glu=False: {**gpu_config(n, k, glu), "BLOCK_N": 32}  # as check_decoders
    decode_attention._launch = lambda *args: steps.append(len(args) > 6 and args[6] is not None) or launch(*args)
    try:
        for family in ("llama", "qwen3"):
            _, model = build(tmp / f"static-{family}", family)
            runs = []
            for on in (False, True):
                decode_attention.STEP_ON = on
                kv = StaticCache(model.config, 2, 16, torch.float32, "cpu")
                with torch.no_grad():
                    logits = [prefill_static(model, ids, mask, kv)]
                    for t in range(2):
                        token = logits[-1].argmax(-1, keepdim=True)  # (B, 1)
                        logits.append(decode_static(model, token, mask.sum(1, keepdim=True) + t, kv))
                runs.append((torch.stack(logits), torch.stack(kv.keys), torch.stack(kv.values)))
            for plain, stepped, what in zip(*runs, ("logits", "keys", "values"), strict=True):
                assert (plain - stepped).abs().max() <= 1e-5, (family, what, (plain - stepped).abs().max())
            layers = model.config.num_hidden_layers
            assert steps == [False] * 2 * layers + [True] * 2 * layers, (family, steps)  # off, then on
            steps.clear()
    finally:
        matvec.config_for, decode_attention._launch = gpu_config, launch
        decode_attention.STEP_ON = default


if __name__ == "__main__":
    assert matvec.INTERPRETED, "run with TRITON_INTERPRET=1"
    assert decode_attention.ENABLED  # on by default (measured on an H100)
    assert decode_attention.STEP_ON  # on by default (measured on an H100)
    assert matvec.PDL and matvec.FUSED_NORMS  # on by default, together (measured on an H200)
    check_kernels()
    check_float_kernels()
    check_norm_and_residual()
    check_dependent_launch()
    check_decode_attention()
    check_decode_step()
    with tempfile.TemporaryDirectory() as tmp:
        check_decoders(Path(tmp))
        check_static_decode_steps(Path(tmp))
    print("interpreted kernels: ok")
