"""Int8 inference, two opt-in, lossy schemes that share the per-output-channel weight quantization.

`quantize_int8` (CPU, `Int8Linear`): the Linear layers as int8 × int8 → int32 matrix products (`torch._int_mm`, the
CPU's VNNI dot-product instructions through oneDNN).

    W ≈ q_w · s_w    q_w int8 (out, in), s_w (out,)  one scale per output channel, fixed at quantize time
    x ≈ q_x · s_x    q_x int8 (M, in),   s_x (M, 1)   one scale per row (token), computed at every call
    x·Wᵀ + b ≈ (q_x · q_wᵀ) · s_x · s_wᵀ + b          the int32 product, rescaled in float32

Per-token activation scales keep all-MiniLM-L6-v2's embeddings at cosine ≥ 0.998 to float32 for texts of a few
words, ≥ 0.99 down to the empty string (one scale per tensor, as `torch.ao.quantization.quantize_dynamic` uses,
gives 0.83 there: a few hidden channels are outliers). Row scaling and rescaling are elementwise passes over the activations; they are compiled with
`torch.compile` (one fused kernel each) when it works here, which is what makes int8 beat bfloat16 GEMMs.

    model = hfkit.AutoModel.from_pretrained(name, dtype="bfloat16")
    quantize_int8(model)          # in place: the feed-forward nn.Linear layers become Int8Linear
    model.embed(texts)

`quantize_weights_int8` (any device, `Int8WeightLinear`): int8 weights only, activations stay in the model's dtype,
y = (x · q_wᵀ) · s_w + b. For memory-bound decoding: a batch-1 decode step streams every weight once per token, so
int8 reads half the bytes (gpt-fast's int8 scheme). A decode step's few rows go through `nn.matvec`'s Triton kernels,
with the decoder's q | k | v and gate | up stacked into one layer each (the GLU's activation inside the kernel);
more rows, compiled, fuse the int8 → bfloat16 cast into the matrix product. Eager, those materialise the cast
weight: slower than bfloat16 outside compiled steps.

    model = hfkit.AutoModelForCausalLM.from_pretrained(name, dtype="bfloat16", device="cuda")
    quantize_weights_int8(model)  # every Linear (and GPT-2 Conv1D), the LM head included; embeddings stay
    model.generate(prompt, cache="static")   # the compiled CUDA-graph decode step
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_support import warn_if_emulated
from ..errors import HfkitError
from . import matvec
from .mlp import MLPKind
from .replace import replace_modules

QMAX = 127  # symmetric int8: -127..127, so that -q is representable


class QuantizationError(HfkitError, ValueError):
    """A model or option int8 quantization cannot take."""


def quantize_channels(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight → (out, in) int8 and (out,) float32 scales, W ≈ q · s, one scale per output channel."""
    weight = weight.detach().float()
    scale = weight.abs().amax(1).clamp(min=1e-12) / QMAX  # (out,)
    return (weight / scale[:, None]).round().clamp(-QMAX, QMAX).to(torch.int8), scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) float → (M, K) int8 and (M, 1) float32 scales with x ≈ q · s, one symmetric scale per row."""
    x = x.float()
    scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-12) / QMAX  # (M, 1)
    return (x / scale).round().clamp(-QMAX, QMAX).to(torch.int8), scale


def rescale(product: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor, bias: torch.Tensor | None,
            dtype: torch.dtype) -> torch.Tensor:
    """(M, N) int32 product · (M, 1) row scales · (N,) column scales [+ (N,) bias] → (M, N) `dtype`."""
    out = product.float() * row_scale * col_scale
    return (out if bias is None else out + bias).to(dtype)


class _Kernels:
    """quantize_rows / rescale, compiled on first use (dynamic shapes: one compilation for every batch shape);
    the eager functions if torch.compile cannot run here (no C++ compiler, say), with one warning."""

    def __init__(self) -> None:
        self.compiled: dict[str, Callable] = {}
        self.failed = False

    def __call__(self, name: str, eager: Callable, *args):
        if self.failed:
            return eager(*args)
        if name not in self.compiled:
            self.compiled[name] = torch.compile(eager, dynamic=True)
        try:
            return self.compiled[name](*args)
        except Exception as err:  # noqa: BLE001 (inductor raises many kinds; the eager path is the same function)
            self.failed = True
            warnings.warn(f"torch.compile could not build the int8 helper kernels ({type(err).__name__}: {err}); "
                          f"running them eagerly, which is slower than bfloat16. Fix: install a C++ compiler.",
                          RuntimeWarning, stacklevel=3)
            return eager(*args)


KERNELS = _Kernels()


class _QuantizedLinear(nn.Module):
    in_features: int
    out_features: int

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(_QuantizedLinear):
    """nn.Linear with int8 weights (per output channel) and int8 activations (per row, dynamic).

    Buffers: `weight_int8` (in, out) — transposed, as `torch._int_mm` takes it —, `weight_scale` (out,) and
    `bias` (out,) in float32. The output has the input's dtype. Inference only (no gradients)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, compile: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.compile = in_features, out_features, compile
        self.register_buffer("weight_int8", torch.zeros(in_features, out_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, compile: bool = True) -> Int8Linear:
        q, scale = quantize_channels(linear.weight)  # (out, in), (out,)
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, compile)
        module.to(q.device)
        module.weight_int8.copy_(q.T)
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach().float())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: the weight this layer multiplies by."""
        return self.weight_int8.T.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)  # (M, in)
        run = KERNELS if self.compile else (lambda name, eager, *args: eager(*args))
        q, row_scale = run("quantize_rows", quantize_rows, rows)  # (M, in) int8, (M, 1)
        product = torch._int_mm(q, self.weight_int8)  # (M, out) int32
        out = run("rescale", rescale, product, row_scale, self.weight_scale, self.bias, x.dtype)
        return out.view(*lead, self.out_features)


class Int8WeightLinear(_QuantizedLinear):
    """A Linear (or GPT-2 Conv1D) with int8 weights per output channel; activations stay in their dtype.

    Buffers: `weight_int8` (out, in), `weight_scale` (out,) and `bias` (out,) in the layer's dtype. Inference only."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=dtype, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_layer(cls, layer: nn.Module) -> Int8WeightLinear:
        """From an nn.Linear (weight (out, in)) or a Conv1D (weight (in, out))."""
        weight = layer.weight if isinstance(layer, nn.Linear) else layer.weight.T  # (out, in)
        module = cls(layer.in_features, layer.out_features, layer.bias is not None, weight.dtype, weight.device)
        q, scale = quantize_channels(weight)
        module.weight_int8.copy_(q)
        module.weight_scale.copy_(scale)
        if layer.bias is not None:
            module.bias.copy_(layer.bias.detach())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) float32: the weight this layer multiplies by."""
        return self.weight_int8.float() * self.weight_scale.float()[:, None]

    @classmethod
    def stack(cls, layers: list[Int8WeightLinear]) -> Int8WeightLinear:
        """One layer whose output is the layers' outputs side by side (their rows stacked: the same numbers, one
        scale per row); a missing bias is zeros."""
        first = layers[0]
        biased = any(layer.bias is not None for layer in layers)
        module = cls(first.in_features, sum(layer.out_features for layer in layers), biased,
                     first.weight_scale.dtype, first.weight_int8.device)
        module.weight_int8.copy_(torch.cat([layer.weight_int8 for layer in layers]))
        module.weight_scale.copy_(torch.cat([layer.weight_scale for layer in layers]))
        if biased:
            module.bias.copy_(torch.cat([layer.bias if layer.bias is not None else torch.zeros_like(layer.weight_scale)
                                         for layer in layers]))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        if matvec.applies(x):  # a decode step's few rows: the Triton kernel, reading the int8 weight once
            return matvec.matvec(x, self.weight_int8, self.weight_scale, self.bias)
        y = F.linear(x, self.weight_int8.to(x.dtype)) * self.weight_scale.to(x.dtype)  # the cast fuses when compiled
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def forward_glu(self, x: torch.Tensor, act: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """A stacked gate | up layer: act(gate) · up, (..., in) → (..., out / 2); one kernel where matvec applies."""
        code = matvec.KERNEL_ACTIVATIONS.get(act)
        if code is not None and matvec.applies(x):
            return matvec.glu_matvec(x, self.weight_int8, self.weight_scale, self.bias, code)
        return MLPKind.GLU.inner(self(x), act)


def _check_quantizable(model: nn.Module) -> None:
    if is_quantized(model):
        raise QuantizationError("This model is already int8-quantized.")
    from ..lora import has_lora

    if has_lora(model):
        raise QuantizationError("Merge the LoRA adapters first (hfkit.lora.merge_lora), then quantize.")


FEED_FORWARD = ("ffn_in", "ffn_out")  # the shared encoder's references to its feed-forward projections
LAYER_CHOICES = ("feed-forward", "all")


def _feed_forward_linears(model: nn.Module) -> set[int]:
    return {id(value) for module in model.modules() for name, value in module.__dict__.items()
            if name in FEED_FORWARD and type(value) is nn.Linear}


def quantize_int8(model: nn.Module, layers: str = "feed-forward", compile: bool = True) -> nn.Module:
    """Replace `nn.Linear` layers of `model` (in place) by `Int8Linear`s; returns `model`, in eval mode.

    layers: "feed-forward" (default) — the encoder layers' two feed-forward projections, two thirds of the
    FLOPs; on 2 Zen cores the hidden×hidden attention projections run no faster in int8 than in bfloat16
    (the row rescaling costs what the GEMM saves) and cost accuracy (all-MiniLM-L6-v2, min cosine to float32
    over 512 texts of 3–200 words: 0.998 feed-forward only, 0.995 all). "all": every nn.Linear.
    compile=False runs the row scaling eagerly (slower than bfloat16; for debugging).
    CPU only. A quantized model is for inference: it cannot be trained or saved as a checkpoint."""
    if layers not in LAYER_CHOICES:
        raise QuantizationError(f"layers must be one of {LAYER_CHOICES}, got {layers!r}.")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise QuantizationError("int8 quantization runs on CPU only: load the model with device='cpu'.")
    _check_quantizable(model)
    warn_if_emulated("int8", "Leave the model unquantized on this CPU: float32 is faster here, and exact.")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    if layers == "feed-forward":
        wanted = _feed_forward_linears(model)
        linears = [m for m in linears if id(m) in wanted]
        if not linears:
            raise QuantizationError(f"{type(model).__name__} has no encoder feed-forward layers to quantize; "
                                    f"pass layers='all' to quantize every nn.Linear.")
    replace_modules(model, {linear: Int8Linear.from_linear(linear, compile=compile) for linear in linears})
    return model.eval()


def quantize_weights_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear and GPT-2 Conv1D of `model` (in place) by an `Int8WeightLinear`, a decoder's q, k, v
    and gate, up projections stacked into one each; returns `model`, in eval mode. Embeddings stay as they are: a
    head tied to them gets its own int8 copy. Any device and float dtype.
    Meant for compiled decoding (module doc); inference only: it cannot be trained or saved as a checkpoint."""
    from .conv1d import Conv1D

    _check_quantizable(model)
    layers = [m for m in model.modules() if type(m) in (nn.Linear, Conv1D)]
    if not layers:
        raise QuantizationError(f"{type(model).__name__} has no Linear layers to quantize.")
    replace_modules(model, {layer: Int8WeightLinear.from_layer(layer) for layer in layers})
    for module in list(model.modules()):  # the decoder's q | k | v and gate | up, one layer (one kernel) each
        if hasattr(module, "stack_projections"):
            module.stack_projections(Int8WeightLinear.stack)
    return model.eval()


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, (Int8Linear, Int8WeightLinear)) for m in model.modules())
