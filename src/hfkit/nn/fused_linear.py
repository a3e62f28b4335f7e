"""Linear layers with the bias, and the GELU after them, applied inside the matrix product, for inference.

CUDA, float16/bfloat16: cuBLASLt applies GELU (in its tanh form) to the GEMM's tile before writing it, so
act(x·Wᵀ + b) costs the GEMM alone: bert-base's feed-forward input on 32768 packed tokens (H100) 0.409 ms →
0.285 ms (the GEMM alone: 0.247 ms). The tanh form differs from erf-GELU by < 5e-4, far below bfloat16's rounding: the max
error against a float32 erf-GELU was 0.0157 fused vs 0.0161 unfused (benchmarks/explore/gelu_epilogue.py).

CPU, bfloat16: torch's `addmm` first copies the bias into every output row, then accumulates the product onto it;
oneDNN's linear (`torch.ops.mkldnn._linear_pointwise`, the op inductor's CPU backend uses) adds the bias, and GELU in
its exact form, inside the product. On 2 Xeon cores (AMX) MiniLM embeddings went 206 → 234 sent/s (12 % less time:
the bias copies and the separate GELU); the feed-forward input with GELU is as close to float32 as the plain path
(max error 0.0154 vs 0.0161). float32 gains nothing there (MKL's GEMM), so it keeps F.linear and stays exact.

Both only without autograd, the CPU one also outside torch.compile (inductor fuses its own way there); everything
else takes the plain path. GELU_EPILOGUE / CPU_FUSED_LINEAR switch them off.

`linear_residual` (RESIDUAL_EPILOGUE, off until measured on a GPU): residual + x·Wᵀ as one CUDA half-precision
GEMM that adds the residual in its epilogue (addmm with the residual as C). Compiled, the encoder's residual sum then
no longer reads the product back and writes the sum beside the norm's output: on ModernBERT-base's 130k-token pass
~200 MB less traffic per residual sum (two a layer), if the GEMM reads C for less than that costs.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .activations import gelu_new, gelu_tanh
from .matvec import wants_grad

GELU_EPILOGUE = True  # False: half-precision CUDA feed-forward layers use nn.Linear + the activation
CPU_FUSED_LINEAR = True  # False: bfloat16 CPU layers use F.linear (+ the activation)
RESIDUAL_EPILOGUE = False  # True: linear_residual adds the residual inside half-precision CUDA GEMMs (measure first)
GELU_FORMS = {F.gelu: "none", gelu_new: "tanh", gelu_tanh: "tanh"}  # activation → oneDNN's GELU algorithm
HALF = (torch.float16, torch.bfloat16)


def inference_only(x: torch.Tensor, linear: nn.Module) -> bool:
    """A plain nn.Linear of x's dtype, no gradient wanted."""
    if type(linear) is not nn.Linear or linear.weight.dtype != x.dtype:
        return False
    return not wants_grad(x, linear.weight)


@functools.cache
def onednn_linear_works() -> bool:
    """Whether this torch has oneDNN's fused linear for bfloat16 (tried once on a 2 × 2 product)."""
    try:
        one = torch.ones(2, 2, dtype=torch.bfloat16)
        return bool(torch.ops.mkldnn._linear_pointwise(one, one, one[0], "none", [], "").eq(3).all())
    except (AttributeError, RuntimeError):
        return False


def on_cpu_bfloat16(x: torch.Tensor, linear: nn.Module) -> bool:
    return (CPU_FUSED_LINEAR and x.device.type == "cpu" and x.dtype == torch.bfloat16 and inference_only(x, linear)
            and not torch.compiler.is_compiling() and onednn_linear_works())


def on_cuda_half(x: torch.Tensor, linear: nn.Module) -> bool:
    """float16/bfloat16 CUDA activations and a plain nn.Linear of their dtype, no gradient wanted."""
    return x.is_cuda and x.dtype in HALF and inference_only(x, linear)


def linear(x: torch.Tensor, module: nn.Module) -> torch.Tensor:  # (..., in) → (..., out)
    """module(x); for a bfloat16 nn.Linear on the CPU, through oneDNN with the bias inside the product."""
    if on_cpu_bfloat16(x, module):
        return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, "none", [], "")
    return module(x)


def linear_gelu(x: torch.Tensor, module: nn.Module, act) -> torch.Tensor | None:  # (..., in) → (..., out), or None
    """act(module(x)) with `act` one of GELU_FORMS, in one kernel where that applies: CUDA float16/bfloat16 with a bias
    (cuBLASLt, tanh form), CPU bfloat16 (oneDNN, `act`'s own form); None elsewhere, for the caller's plain path."""
    if on_cpu_bfloat16(x, module):
        return torch.ops.mkldnn._linear_pointwise(x, module.weight, module.bias, "gelu", [], GELU_FORMS[act])
    if not (GELU_EPILOGUE and on_cuda_half(x, module) and module.bias is not None):  # (a plain Linear first)
        return None
    flat = x.reshape(-1, x.shape[-1])  # (M, in)
    out = torch._addmm_activation(module.bias, flat, module.weight.t(), use_gelu=True)  # (M, out)
    return out.view(*x.shape[:-1], out.shape[-1])


def linear_residual(x: torch.Tensor, module: nn.Module, residual: torch.Tensor, dropout: nn.Module) -> torch.Tensor:
    """residual + dropout(module(x)), (..., out). Where RESIDUAL_EPILOGUE applies (CUDA float16/bfloat16, a plain
    nn.Linear, no gradient, no active dropout), one GEMM adds the residual and the bias after it (addmm_residual);
    else the plain path's sum."""
    if (RESIDUAL_EPILOGUE and residual.dtype == x.dtype and on_cuda_half(x, module)
            and not (dropout.training and getattr(dropout, "p", 0.0))):
        return addmm_residual(x, module, residual)
    return residual + dropout(linear(x, module))


def addmm_residual(x: torch.Tensor, module: nn.Linear, residual: torch.Tensor) -> torch.Tensor:
    """residual + x · Wᵀ in one GEMM (the residual as addmm's C, in the GEMM's float32 epilogue), then + b: each
    sum rounded once."""
    flat = x.reshape(-1, x.shape[-1])  # (M, in)
    out = torch.addmm(residual.reshape(flat.shape[0], -1), flat, module.weight.t())  # (M, out)
    if module.bias is not None:
        out = out + module.bias
    return out.view(*x.shape[:-1], out.shape[-1])
