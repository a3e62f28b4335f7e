"""Matrix–vector products for decoding: Triton kernels for a few rows of activations against the weights of a step.

A batch-1 decode step is a chain of matrix–vector products that each stream one weight from memory. A layer's
products that share an input run as one kernel over up to three weights side by side (q | k | v), and the gated
MLP's activation runs on its two products before anything is written:

    linears(x, [w0, w1, w2])      y = x · w0ᵀ | x · w1ᵀ | x · w2ᵀ (+ biases)        weights of x's dtype (nn.Linear)
    linear(layer, x)              layer(x), through the kernel where `linears` takes the layer
    glu_linear(x, gate, up, act)  y = act(x · gateᵀ + b_g) · (x · upᵀ + b_u)
    … norm=(g, eps)               x first becomes x / rms(x) · g, as a decoder's RMSNorm rounds it (FUSED_NORMS)
    … residual=r                  y = r + y, rounded as the separate addition (linear, linears)
    matvec(x, w, s, b)            y = (x · wᵀ) · s + b                             w (N, K) int8, s (N,): per-row scales
    glu_matvec(x, w, s, b, act)   the GLU form of an int8 gate | up weight (2N, K)

The norm and the residual take the launches of a decoder layer's add + norm kernels (two a layer): each program
computes its row's rms itself (one more read of the row). Each program multiplies BLOCK_N weight rows (for the GLU
form: BLOCK_N gate rows and the matching up rows) with one row of x, accumulating per-lane float32 sums that are
reduced once after the K loop, and writes the result once in x's dtype. Programs run rows of x fastest, so the rows
that share a weight block read it together (the second read comes from L2).

The kernels run where Triton runs them — CUDA tensors, or any tensor under TRITON_INTERPRET=1 — for at most
MAX_ROWS rows of x with no autograd; `applies(x)` says so, `linears` / `glu_linear` return None for layers they do
not take, and callers keep their own path for the rest. torch.compile traces the kernel launch into its graph (CUDA
graphs included).

Each program loads its first weight tile before it reads anything else. With PDL, inside compiled code, the kernels
launch as programmatic dependent launches (sm_90+; nn.decode_attention too): a kernel's programs start while the
kernel before it finishes, load their first weight tiles (nothing in a decode step writes weights), then wait for
it (`griddepcontrol.wait`) before reading x. The launch goes through a custom op, since inductor launches traced
kernels itself, without the attribute.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_linear
from .activations import gelu_new, gelu_tanh

MAX_ROWS = 4  # more rows of x: a matrix product, which the GEMM libraries do better
ENABLED = True  # False: always the torch path (A/B measurements)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter: the kernels on CPU tensors (tests)
# PDL: programmatic dependent launch inside compiled code (module docstring). FUSED_NORMS: decoders pass their
# RMSNorms to the kernels, on CUDA only where these launch dependently (`norms_inside`). Apart, each was
# slower or within noise: the norms inside 956 vs 989 tok/s (H200), 800 vs 822 (H100); PDL 858 vs 844 and 845 vs 859
# (H100). Together every kernel of a layer is one of these, and each starts on its weights while the one before it
# finishes: the compiled Llama-3.2-1B step 1046 vs 989 tok/s in one process on an H200, 868 vs 833 on an H100
# (RESULTS.md, twenty-first and twenty-second sessions). False: plain launches, the norms apart (A/B measurements).
PDL = True
FUSED_NORMS = True

# A CPU build of torch runs the kernels only under the interpreter: elsewhere Triton is not imported (where it is
# installed, its import was ~0.2 s of a 0.45 s CPU model load).
triton = None
if torch.backends.cuda.is_built() or INTERPRETED:
    with contextlib.suppress(ImportError):  # not installed (the CPU wheels of torch come without it)
        import triton
        import triton.language as tl

# the activations the GLU kernel computes, by the function the model holds
SILU, GELU_TANH = 1, 2
KERNEL_ACTIVATIONS: dict[Callable, int] = {F.silu: SILU, gelu_tanh: GELU_TANH, gelu_new: GELU_TANH}


def wants_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd would record an op on these tensors: the inference-only paths (these kernels, nn.fused_linear,
    the loss without a backward graph) step aside when it would."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def applies(x: torch.Tensor) -> bool:
    """Whether the kernels run for activations `x` (..., K)."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    return (ENABLED and triton is not None and (x.is_cuda or INTERPRETED) and 0 < rows <= MAX_ROWS
            and not wants_grad(x))


def takes(x: torch.Tensor, layers: Sequence[nn.Module], norm: tuple[torch.Tensor, float] | None = None) -> bool:
    """Whether `linears` runs `layers` on `x`: 1–3 plain nn.Linear layers (no LoRA or other wrapper) over x's
    features whose weights are of x's dtype and device, untrained here (no gradient wanted), each with a bias or
    none; a `norm` gain likewise of x's features and dtype."""
    return (applies(x) and 0 < len(layers) <= 3 and all(type(layer) is nn.Linear for layer in layers)
            and all(layer.in_features == x.shape[-1] and layer.weight.dtype == x.dtype
                    and layer.weight.device == x.device and not wants_grad(layer.weight) for layer in layers)
            and len({layer.bias is None for layer in layers}) == 1
            and (norm is None or (norm[0].shape == x.shape[-1:] and norm[0].dtype == x.dtype
                                  and not wants_grad(norm[0]))))


def hopper_or_later(device: torch.device) -> bool:
    """A GPU of compute capability 9.0 or later: one that has programmatic dependent launch. (Device properties,
    not capability: torch.compile folds them into a constant.)"""
    return device.type == "cuda" and torch.cuda.get_device_properties(device).major >= 9


def dependent_launch(pdl: bool, device: torch.device) -> dict:
    """The launch options of a kernel built with PDL=`pdl`: programmatic dependent launch where the GPU has it
    (sm_90+); none elsewhere (the kernel's wait is then skipped: PDL is also its constexpr)."""
    return {"launch_pdl": True, "PDL": True} if pdl and hopper_or_later(device) else {"PDL": False}


def launches_dependently(x: torch.Tensor) -> bool:
    """Whether the decode kernels on x launch through their dependent-launch ops: PDL, inside compiled code, on CUDA
    (the launch attribute itself only on sm_90+: dependent_launch) or under the interpreter (the tests)."""
    return PDL and (x.is_cuda or INTERPRETED) and torch.compiler.is_compiling()


def norms_inside(x: torch.Tensor) -> bool:
    """Whether a decoder passes its RMSNorm with x to the kernels: FUSED_NORMS, on CUDA where the
    kernels launch dependently (PDL, sm_90+), and under the interpreter (the tests)."""
    return FUSED_NORMS and (INTERPRETED or (PDL and hopper_or_later(x.device)))


def config_for(n: int, k: int, glu: bool = False) -> dict:
    """Launch shape for an (n, k) weight (2n rows for the GLU form): 32 float32 per-lane sums per thread, few
    rows per program so that even a 2048-row weight spreads over every multiprocessor. The fastest shapes of
    `benchmarks/explore/matvec_sweep.py --weights int8` on an H100 (Llama-1B's products, 2026-12-05); bf16 weights
    take them too: the eighth session's bf16 sweep's best shapes for the LM head and q | k | v (alone, 165.3 vs
    172.8 and 6.15 vs 6.42 µs) made whole steps slower (891 and 886 vs 895 tok/s, twenty-fifth session)."""
    if glu:
        return {"BLOCK_N": 2, "BLOCK_K": min(1024, triton.next_power_of_2(k)), "num_warps": 4}
    if n >= 65536:  # LM heads: plenty of programs already
        return {"BLOCK_N": 2, "BLOCK_K": min(1024, triton.next_power_of_2(k)), "num_warps": 2}
    return {"BLOCK_N": 1, "BLOCK_K": min(2048, triton.next_power_of_2(k)), "num_warps": 2}


if triton is not None:

    @triton.jit
    def _activate(v, ACT: tl.constexpr):
        if ACT == 1:  # SiLU
            v = v * tl.sigmoid(v)
        elif ACT == 2:  # tanh-GELU; tanh(z) = 2·sigmoid(2z) − 1
            v = 0.5 * v * (1.0 + (2.0 * tl.sigmoid(1.5957691216057308 * (v + 0.044715 * v * v * v)) - 1.0))
        return v

    @triton.jit
    def _affine(acc, s_ptr, b_ptr, offs_n, n_ok, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr):
        if HAS_SCALE:
            acc *= tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        return acc

    @triton.jit
    def _weight_tiles(w, w1, local, n_ok, start, K: tl.constexpr, BLOCK_K: tl.constexpr, ACT: tl.constexpr):
        """The (BLOCK_N, BLOCK_K) tile of w from column `start` (zeros past K) and, for ACT > 0, the up rows' of w1
        (else w's tile again)."""
        offs_k = start + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
        tile = local[:, None] * K + offs_k[None, :]  # (BLOCK_N, BLOCK_K)
        ok = n_ok[:, None] & (offs_k < K)[None, :]
        weights = tl.load(w + tile, mask=ok, other=0)
        weights_up = weights
        if ACT > 0:
            weights_up = tl.load(w1 + tile, mask=ok, other=0)
        return weights, weights_up

    @triton.jit
    def _matvec_kernel(x_ptr, y_ptr, w0, w1, w2, s0, s1, s2, b0, b1, b2, g_ptr, r_ptr, eps, N, N0, N01, ROWS,
                       stride_x, stride_y, stride_r, K: tl.constexpr, SEGMENTS: tl.constexpr,
                       HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, NORM: tl.constexpr,
                       RESIDUAL: tl.constexpr, PDL: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """ACT == 0: y[row, n] = Σ_k x[row, k] · w[n, k] · s[n] + b[n], where w, s, b is the segment (0, 1 or 2)
        holding output n (segments start at 0, N0, N01, each a multiple of BLOCK_N; weights row-major (·, K)).
        ACT > 0: act(that of w0) · (that of w1), the gate and up rows n. NORM: x[row] / rms(x[row]) · g in place of
        x[row], rounded to x's dtype before and after g as RMSNorm does. RESIDUAL: r[row, n] + y[row, n]. PDL:
        launched as a programmatic dependent launch; the first weight tiles are loaded before the wait."""
        pid = tl.program_id(0)
        row, block = pid % ROWS, pid // ROWS  # rows of x fastest: they read a weight block together
        offs_n = block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) outputs
        n_ok = offs_n < N
        w, s, b, first = w0, s0, b0, block * 0
        if ACT == 0 and SEGMENTS > 1:  # noqa: SIM102 (compile-time condition, then a run-time one)
            if block * BLOCK_N >= N0:
                w, s, b, first = w1, s1, b1, block * 0 + N0  # a tensor in both branches
        if ACT == 0 and SEGMENTS > 2:  # noqa: SIM102
            if block * BLOCK_N >= N01:
                w, s, b, first = w2, s2, b2, block * 0 + N01
        local = offs_n - first  # (BLOCK_N,) rows within the segment
        weights, weights_up = _weight_tiles(w, w1, local, n_ok, 0, K, BLOCK_K, ACT)  # (BLOCK_N, BLOCK_K) each
        if PDL:
            tl.extra.cuda.gdc_wait()  # x, r and y: the kernel before this one is done with them
            tl.extra.cuda.gdc_launch_dependents()  # the next kernel's programs may start and load their weights
        inv_rms = 1.0
        if NORM:  # this row's 1 / rms, float32 as RMSNorm computes it
            squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
            for start in range(0, K, BLOCK_K):
                offs_k = start + tl.arange(0, BLOCK_K)
                features = tl.load(x_ptr + row * stride_x + offs_k, mask=offs_k < K, other=0.0).to(tl.float32)
                squares += features * features
            inv_rms = tl.rsqrt(tl.sum(squares, axis=0) / K + eps)
        partial = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)  # per-lane sums, reduced once after the loop
        partial_up = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for start in range(0, K, BLOCK_K):
            offs_k = start + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
            ok = n_ok[:, None] & (offs_k < K)[None, :]
            # x read in the weight tile's shape (rows repeat from L1): no layout exchange through shared memory
            x = tl.load(x_ptr + row * stride_x + offs_k[None, :] + 0 * local[:, None], mask=ok, other=0.0)
            x = x.to(tl.float32)  # (BLOCK_N, BLOCK_K)
            if NORM:
                dtype = x_ptr.dtype.element_ty
                g = tl.load(g_ptr + offs_k[None, :] + 0 * local[:, None], mask=ok, other=0.0).to(tl.float32)
                x = (g * (x * inv_rms).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
            partial += weights.to(tl.float32) * x
            if ACT > 0:
                partial_up += weights_up.to(tl.float32) * x
            weights, weights_up = _weight_tiles(w, w1, local, n_ok, start + BLOCK_K, K, BLOCK_K, ACT)  # the next
        acc = _affine(tl.sum(partial, axis=1), s, b, local, n_ok, HAS_SCALE, HAS_BIAS)  # (BLOCK_N,)
        if ACT > 0:
            up = _affine(tl.sum(partial_up, axis=1), s1, b1, local, n_ok, HAS_SCALE, HAS_BIAS)
            acc = _activate(acc, ACT) * up
        out = acc.to(y_ptr.dtype.element_ty)
        if RESIDUAL:
            residual = tl.load(r_ptr + row * stride_r + offs_n, mask=n_ok, other=0.0).to(tl.float32)
            out = (residual + out.to(tl.float32)).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + row * stride_y + offs_n, out, mask=n_ok)


def _launch(x: torch.Tensor, weights: Sequence[torch.Tensor], scales: Sequence[torch.Tensor] | None,
            biases: Sequence[torch.Tensor] | None, act: int, config: dict | None,
            norm: tuple[torch.Tensor, float] | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """weights: 1–3 row-major (n_i, K) tensors side by side, or (act > 0) the gate and up weights; `norm` (g, eps)
    and `residual` (..., N) as the kernel's NORM and RESIDUAL."""
    k, n = x.shape[-1], _outputs(weights, act)
    config = dict(config or config_for(n, k, glu=bool(act)))
    boundaries = itertools.accumulate(w.shape[0] for w in weights[:-1])  # where the second and third weights start
    if not act and any(boundary % config["BLOCK_N"] for boundary in boundaries):
        config["BLOCK_N"] = 1  # a block never straddles two weights
    gain, eps = norm if norm is not None else (None, 0.0)
    args = (x.reshape(-1, k), list(weights), list(scales or []), list(biases or []), gain, eps,
            None if residual is None else residual.reshape(-1, n), act, config["BLOCK_N"], config["BLOCK_K"],
            config["num_warps"])
    y = dependent_products(*args) if launches_dependently(x) else _products(*args)  # (M, N)
    return y.view(*x.shape[:-1], n)


def _products(rows: torch.Tensor, weights: list[torch.Tensor], scales: list[torch.Tensor],
              biases: list[torch.Tensor], gain: torch.Tensor | None, eps: float, residual: torch.Tensor | None,
              act: int, block_n: int, block_k: int, num_warps: int, pdl: bool = False) -> torch.Tensor:
    """The kernel on (M, K) rows → (M, N); `scales`, `biases` one per weight or none, `residual` (M, N) or None,
    `gain` (K,) or None (no NORM)."""
    n, sizes = _outputs(weights, act), [t.shape[0] for t in weights]
    rows = rows.contiguous()
    y = torch.empty(rows.shape[0], n, dtype=rows.dtype, device=rows.device)  # (M, N)
    pad = lambda ts: [*ts, *[ts[0]] * (3 - len(ts))]  # unused pointer slots
    w = pad([t.contiguous() for t in weights])
    s = pad(scales) if scales else w
    b = pad(biases) if biases else w
    added = residual.contiguous() if residual is not None else y  # (M, N)
    grid = (triton.cdiv(n, block_n) * rows.shape[0],)
    _matvec_kernel[grid](rows, y, *w, *s, *b, w[0] if gain is None else gain, added, eps, n, sizes[0], sum(sizes[:2]),
                         rows.shape[0], rows.stride(0), y.stride(0), added.stride(0), K=rows.shape[1],
                         SEGMENTS=len(weights), HAS_SCALE=bool(scales), HAS_BIAS=bool(biases), ACT=act,
                         NORM=gain is not None, RESIDUAL=residual is not None, BLOCK_N=block_n, BLOCK_K=block_k,
                         num_warps=num_warps, **dependent_launch(pdl, rows.device))
    return y


@torch.library.custom_op("hfkit::dependent_products", mutates_args=())
def dependent_products(rows: torch.Tensor, weights: list[torch.Tensor], scales: list[torch.Tensor],
                       biases: list[torch.Tensor], gain: torch.Tensor | None, eps: float,
                       residual: torch.Tensor | None, act: int, block_n: int, block_k: int,
                       num_warps: int) -> torch.Tensor:
    """`_products` launched with PDL, as a custom op: a compiled step calls it as it is (inductor would launch the
    traced kernel itself, without the launch attribute)."""
    return _products(rows, weights, scales, biases, gain, eps, residual, act, block_n, block_k, num_warps, pdl=True)


@dependent_products.register_fake
def _(rows, weights, scales, biases, gain, eps, residual, act, block_n, block_k, num_warps):
    return rows.new_empty(rows.shape[0], _outputs(weights, act))


def _outputs(weights: Sequence[torch.Tensor], act: int) -> int:
    """Outputs per row of x: the gate's rows for the GLU form (act > 0), else every weight's."""
    return weights[0].shape[0] if act else sum(w.shape[0] for w in weights)


def linears(x: torch.Tensor, layers: Sequence[nn.Linear], norm: tuple[torch.Tensor, float] | None = None,
            residual: torch.Tensor | None = None) -> torch.Tensor | None:
    """(..., K) x through 1–3 nn.Linear `layers` side by side → (..., Σ out) in one kernel, of x / rms(x) · g for
    `norm` (g, eps), plus `residual`; None where the kernel does not take them (`takes`), for the caller's own
    path."""
    if not takes(x, layers, norm):
        return None
    biases = [layer.bias for layer in layers] if layers[0].bias is not None else None
    return _launch(x, [layer.weight for layer in layers], None, biases, 0, None, norm, residual)


def linear(layer: nn.Module, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """layer(x) (+ residual): through the kernel where `linears` takes the layer, else the layer's own forward."""
    y = linears(x, [layer], residual=residual)
    if y is not None:
        return y
    y = cpu_linear.linear(layer, x)
    return y if residual is None else residual + y


def glu_linear(x: torch.Tensor, gate: nn.Linear, up: nn.Linear, act: Callable,
               norm: tuple[torch.Tensor, float] | None = None) -> torch.Tensor | None:
    """(..., K) x → act(gate(x)) · up(x), (..., N), in one kernel (of x / rms(x) · g for `norm`); None where the
    kernel does not take the layers or the activation."""
    code = KERNEL_ACTIVATIONS.get(act)
    if code is None or not takes(x, [gate, up], norm) or gate.out_features != up.out_features:
        return None
    biases = [gate.bias, up.bias] if gate.bias is not None else None
    return _launch(x, [gate.weight, up.weight], None, biases, code, None, norm)


def matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
           config: dict | None = None) -> torch.Tensor:
    """(..., K) x, (N, K) int8 weight, (N,) scales, (N,) bias → (..., N) in x's dtype: (x · wᵀ) · s + b.
    Only where `applies(x)`."""
    return _launch(x, [weight], [scale], None if bias is None else [bias], 0, config)


def glu_matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, act: int,
               config: dict | None = None) -> torch.Tensor:
    """(..., K) x, (2N, K) gate | up int8 weight, (2N,) scales and bias → (..., N): act(gate) · up, where gate and
    up are the two halves of (x · wᵀ) · s + b; `act` one of SILU, GELU_TANH. Only where `applies(x)`."""
    halves = lambda t: None if t is None else list(t.chunk(2))
    return _launch(x, halves(weight), halves(scale), halves(bias), act, config)
