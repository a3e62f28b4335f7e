"""The one attention entry point: every model calls `attention()`, which picks the kernel path."""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from ..cpu_support import has_amx
from . import decode_attention, window_attention
from .rope import apply_rope


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) 1/0 keep-mask → (B, 1, 1, T) additive mask for SDPA; None when nothing is masked."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


def pairwise_padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, T) keep-mask → (B, 1, T, T) additive mask of `keep_i · keep_j`: pad keys masked, and pad *queries*
    masked on every key (their rows attend uniformly over all positions, as DeBERTa computes); None if no pad.

    Half of finfo.min: CUDA's efficient/cuDNN kernels scale scores by log2(e), which takes a fully masked
    row at finfo.min to -inf (and that row to zeros instead of uniform). In float16 the scores are not
    absorbed by the mask, so pad rows (only they) are not uniform there."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    keep = attention_mask.to(torch.bool)
    pair = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, T, T)
    return torch.zeros(pair.shape, dtype=dtype, device=pair.device).masked_fill(~pair, torch.finfo(dtype).min / 2)


def window_mask(attention_mask: torch.Tensor | None, length: int, window: int, device: torch.device) -> torch.Tensor | None:
    """Bidirectional sliding window: query i sees key j when |i - j| <= window (and j is a token).

    (B | 1, 1, T, T) boolean; None when nothing is masked (no pad, T < window, transformers' rule).
    Boolean on purpose: a pad query whose window holds only pads is a fully masked row, for which
    SDPA returns zeros, as transformers' boolean masks give."""
    if (attention_mask is None or bool(attention_mask.all())) and length < window:
        return None
    pos = torch.arange(length, device=device)
    keep = ((pos[:, None] - pos[None, :]).abs() <= window)[None, None]  # (1, 1, T, T)
    if attention_mask is not None:
        keep = keep & attention_mask[:, None, None, :].to(device=device, dtype=torch.bool)  # (B, 1, T, T)
    return keep


def attention(
    q: torch.Tensor,  # (B, H, T, D)
    k: torch.Tensor,  # (B, H, S, D)
    v: torch.Tensor,  # (B, H, S, D)
    mask: torch.Tensor | None = None,  # additive, broadcastable to (B, H, T, S): padding and/or position bias
    dropout_p: float = 0.0,
    scale: float | None = None,
    divisor: torch.Tensor | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin (B|1, T, D), or (N, D) packed
) -> torch.Tensor:  # (B, H, T, D)
    """Padded scaled-dot-product attention with an optional additive mask (padding + relative-position bias terms).
    With `rope`, q and k are rotated first (apply_rope, float32): inside the sliding-window kernel where it runs.

    `scale` multiplies q·kᵀ (None: 1/sqrt(D)). A `divisor` s (0-d tensor) is for references that compute
    softmax(q·kᵀ / s + mask) unfused (DeBERTa has no fused path in transformers): on CPU it is computed
    so, op for op, bit-identical to them and as fast; elsewhere the fused kernel with scale 1/s.

    Given a `PackedBatch` instead of a mask, q/k/v are packed (N, H, D) and so is the result: see packed_attention."""
    if isinstance(mask, PackedBatch):
        return packed_attention(q, k, v, mask, dropout_p=dropout_p, scale=scale, rope=rope)
    if rope is not None:
        q, k = apply_rope(q, k, *rope)
    if divisor is not None:
        if q.device.type == "cpu":
            return unfused_attention(q, k, v, mask, dropout_p, divisor)
        scale = 1.0 / divisor.item()
    if takes_blocked(q, k, mask, dropout_p):
        return blocked_attention(q, k, v, mask, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


# --- CPU, bfloat16: blocked attention -------------------------------------------------------------------------------
# On CPUs with AVX512-BF16 but no AMX (AMD Zen 4), torch's CPU flash-attention kernel runs bfloat16 no faster than
# float32 (~100 GFLOP/s on 2 cores, head size 32): for a bfloat16 MiniLM it is 37 % of the forward. Computed unfused,
# a few sequences at a time so the scores stay in cache, the two products run on the bfloat16 GEMMs: attention ~1.7x,
# MiniLM embeddings 120.7 → 148.2 sent/s. With AMX tiles (Intel Sapphire Rapids and later) the flash kernel runs its
# products on them and is the faster one: 1.4-3.5x the blocked path at MiniLM's shapes on 2 Xeon cores
# (benchmarks/RESULTS.md), so there it keeps the work. The same function: q·kᵀ in bfloat16 (float32 accumulation),
# scale, mask and softmax in float32, probabilities·v in bfloat16. Only where one sequence's scores are small
# (≤ 4 blocks, T ≲ 590 at 12 heads): long sequences keep the flash kernel's O(T) memory. Compiled code keeps SDPA
# (inductor fuses it its own way).

SCORE_BLOCK = 1 << 20  # float32 scores per block (4 MiB): about the L2 caches of two cores
CPU_BLOCKED_ATTENTION: bool | None = None  # None: where the CPU has no AMX tiles; True / False: always / never


def takes_blocked(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, dropout_p: float) -> bool:
    if torch.compiler.is_compiling() or CPU_BLOCKED_ATTENTION is False:
        return False
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.dim() == 4
            and not dropout_p and k.shape[1] == q.shape[1] and q.shape[1] * q.shape[2] * k.shape[2] <= 4 * SCORE_BLOCK
            and (mask is None or (mask.dtype == q.dtype and mask.dim() == 4))
            and (CPU_BLOCKED_ATTENTION or not has_amx()))


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                      scale: float | None = None) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v for (B, H, T, D) q and (B, H, S, D) k, v; `mask` additive, broadcastable
    to (B, H, T, S). Returns (B, H, T, D) laid out as (B, T, H, D), so merging the heads needs no copy."""
    B, H, T, D = q.shape
    S = k.shape[2]
    scale = D ** -0.5 if scale is None else scale
    step = max(1, SCORE_BLOCK // (H * T * S))  # sequences per block
    out = q.new_empty(B, T, H, D)
    for lo in range(0, B, step):
        hi = min(lo + step, B)
        scores = torch.matmul(q[lo:hi], k[lo:hi].transpose(-1, -2)).float().mul_(scale)  # (b, H, T, S)
        if mask is not None:
            scores.add_(mask[lo:hi] if mask.shape[0] > 1 else mask)
        probs = scores.softmax(-1).to(q.dtype)
        out[lo:hi] = torch.matmul(probs, v[lo:hi]).transpose(1, 2)  # (b, T, H, D)
    return out.transpose(1, 2)


def unfused_attention(q, k, v, mask, dropout_p: float, divisor: torch.Tensor) -> torch.Tensor:  # (B, H, T, D)
    """bmm(q, kᵀ / s) [+ mask] → softmax → dropout → bmm(·, v) on (B·H, T, D) copies, the eager reference's layout."""
    B, H, T, D = q.shape
    q3, k3, v3 = (t.reshape(B * H, -1, D) for t in (q, k, v))  # (B·H, T|S, D) contiguous
    scores = torch.bmm(q3, k3.transpose(-1, -2) / divisor.to(q.dtype)).view(B, H, T, -1)  # (B, H, T, S)
    if mask is not None:
        scores = scores + mask
    probs = F.dropout(scores.softmax(-1), dropout_p) if dropout_p > 0 else scores.softmax(-1)
    return torch.bmm(probs.view(B * H, T, -1), v3).view(B, H, T, D)


def causal_mask(
    attention_mask: torch.Tensor | None,  # (B, S) 1 = token, 0 = pad, over cached + new tokens
    q_len: int,
    past_len: int,
    sliding_window: int | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:  # (B|1, 1, T, S) bool, True = attend; None: nothing masked
    """Query t (cache position past_len + t) sees key s when s <= t, s > t - window, and s is not padding.

    Rows of left-padding queries see nothing (all False), exactly as transformers' sdpa masks. None where the mask is
    causality alone on an empty cache (no padding, no window shorter than the sequence): `grouped_attention` then
    runs SDPA's `is_causal`, for which CUDA has fused kernels that skip the masked blocks (an explicit mask rules the
    flash kernel out). An `attention_mask` is read on the host for that only outside compiled code."""
    S = past_len + q_len
    no_window = sliding_window is None or sliding_window >= S
    if past_len == 0 and q_len > 1 and no_window and (
            attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask[:, -S:].all()))):
        return None
    q = torch.arange(past_len, S, device=device)[:, None]  # (T, 1)
    kv = torch.arange(S, device=device)[None, :]  # (1, S)
    keep = kv <= q
    if sliding_window is not None:
        keep = keep & (kv > q - sliding_window)
    keep = keep[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        keep = keep & attention_mask[:, None, None, -S:].to(torch.bool)  # (B, 1, T, S)
    if q_len == 1 and not torch.compiler.is_compiling() and bool(keep.all()):  # no host sync in a captured step
        return None
    return keep


def grouped_attention(
    q: torch.Tensor,  # (B, nh, T, D)
    k: torch.Tensor,  # (B, nkv, S, D)
    v: torch.Tensor,  # (B, nkv, S, D)
    mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:  # (B, nh, T, D)
    """Grouped-query attention: each group of nh / nkv query heads shares one key/value head.

    No mask over several query positions (T == S, see `causal_mask`): causal attention, `causal_attention`.
    One query position (a decode step) with a mask shared by the heads: `decode_attention`'s kernel where it applies
    (a compiled CUDA step, no gradients), else the group's query heads run as the query positions of their key/value
    head; either way the keys and values are read in place. Otherwise they are repeated per query head."""
    groups = q.shape[1] // k.shape[1]
    B, nh, T, D = q.shape
    if mask is None and T > 1:
        return causal_attention(q, k, v, dropout_p, scale)
    if decode_attention.applies(q, k, mask, dropout_p):
        return decode_attention.decode_attention(q, k, v, mask, scale)
    if groups > 1 and T == 1 and (mask is None or mask.shape[1] == 1):
        out = attention(q.reshape(B, k.shape[1], groups, D), k, v, mask, dropout_p=dropout_p, scale=scale)
        return out.reshape(B, nh, 1, D)  # (B, nkv, G, D) → (B, nh, 1, D)
    if groups > 1:
        k, v = repeat_heads(k, groups), repeat_heads(v, groups)  # (B, nh, S, D)
    return attention(q, k, v, mask, dropout_p=dropout_p, scale=scale)


SDPA_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)  # SDPA takes enable_gqa


def repeat_heads(t: torch.Tensor, groups: int) -> torch.Tensor:  # (B, nkv, S, D) → (B, nkv·groups, S, D)
    """Each key/value head repeated for the `groups` query heads that share it, for kernels that cannot share it."""
    return t.repeat_interleave(groups, dim=1)


def causal_attention(
    q: torch.Tensor,  # (B, nh, T, D)
    k: torch.Tensor,  # (B, nkv, T, D)
    v: torch.Tensor,  # (B, nkv, T, D)
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:  # (B, nh, T, D)
    """Query t sees keys 0…t: SDPA's `is_causal` (on an H100, cuDNN's fused attention, which skips the masked
    blocks). Key/value heads are shared in place (`enable_gqa`) where the fused kernels take that: CUDA float16 /
    bfloat16, and the CPU; elsewhere (CUDA float32, torch < 2.5) they are repeated per query head, since SDPA would
    fall back to its math kernel."""
    groups = q.shape[1] // k.shape[1]
    kwargs = {}
    if groups > 1 and SDPA_GQA and (q.device.type == "cpu" or q.dtype in VARLEN_DTYPES):
        kwargs["enable_gqa"] = True
    elif groups > 1:
        k, v = repeat_heads(k, groups), repeat_heads(v, groups)  # (B, nh, T, D)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale, is_causal=True, **kwargs)


# --- Unpadded (packed) attention: the encoders' varlen path --------------------------------------------------------
# A packed batch holds only the real tokens, (N, ...) with N = the number of 1s in the (B, T) attention mask, in
# row-major order; `PackedBatch` describes where they came from. `attention()` given one instead of a padded mask
# runs `torch.nn.attention.varlen.varlen_attn` (flash, CUDA, fp16/bf16), or else re-pads q/k/v and runs the padded
# path (CPU, float32, attention dropout, a torch without varlen or its window_size).

_UNSET = object()


def varlen_kernel():
    """`torch.nn.attention.varlen.varlen_attn` (torch >= 2.10; None before), imported on first use: importing it
    pulls in torch._dynamo (~1 s), which CPU-only work and `from_pretrained` should not pay."""
    kernel = globals().get("varlen_attn", _UNSET)
    if kernel is _UNSET:
        try:
            from torch.nn.attention.varlen import varlen_attn as kernel
        except ImportError:  # torch < 2.10
            kernel = None
        globals()["varlen_attn"] = kernel
    return kernel


@functools.cache
def varlen_window_supported() -> bool:
    """Whether this torch's varlen_attn takes `window_size` (sliding windows on the packed kernel)."""
    kernel = varlen_kernel()
    return kernel is not None and "window_size" in inspect.signature(kernel).parameters


def __getattr__(name: str):  # `varlen_attn` and `VARLEN_WINDOW` as module attributes, resolved on first use
    if name == "varlen_attn":
        return varlen_kernel()
    if name == "VARLEN_WINDOW":
        return varlen_window_supported()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


VARLEN_DTYPES = (torch.float16, torch.bfloat16)  # flash kernels: no float32


class PackedBatch:
    """Where the real tokens of a padded (B, T) batch sit once packed to (N, ...).

    indices: (N,) flat positions b·T + t of the real tokens; cu_seqlens: (B+1,) int32 offsets of each row's tokens
    in the packed order; max_len: the longest row; keep: the (B, T) boolean attention mask; window: the sliding
    window (|i - j| <= window) of the layer this descriptor is handed to, None: full attention.

    kernel / kernel_takes_window: varlen_attn (None on CPU or without it) and whether it takes window_size, looked
    up once here, outside the layers: compiled layers then trace no lookup (`globals()`, `inspect`), which would
    break their graph around every attention call."""

    def __init__(self, indices, cu_seqlens, max_len: int, keep, window: int | None = None):
        self.indices, self.cu_seqlens, self.max_len, self.keep, self.window = indices, cu_seqlens, max_len, keep, window
        # (N,) int32 row of each token, for the sliding-window kernel: only a windowed layer's descriptor needs it
        self.rows = (indices // keep.shape[1]).to(torch.int32) if window is not None else None
        self.kernel = varlen_kernel() if keep.is_cuda else None
        self.kernel_takes_window = self.kernel is not None and varlen_window_supported()

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> "PackedBatch":  # (B, T) 1 = token, 0 = pad
        keep = attention_mask.to(torch.bool)
        lengths = keep.sum(dim=1, dtype=torch.int32)  # (B,)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # (B+1,)
        indices = keep.flatten().nonzero().flatten()  # (N,)
        return cls(indices, cu_seqlens, int(lengths.max()) if lengths.numel() else 0, keep)

    @property
    def shape(self) -> tuple[int, int]:  # (B, T)
        return tuple(self.keep.shape)

    def windowed(self, window: int | None) -> "PackedBatch":
        return PackedBatch(self.indices, self.cu_seqlens, self.max_len, self.keep, window)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, ...) → (N, ...)
        return x.reshape(-1, *x.shape[2:]).index_select(0, self.indices)

    def repad(self, x: torch.Tensor) -> torch.Tensor:  # (N, ...) → (B, T, ...), zeros at pad positions
        B, T = self.shape
        out = x.new_zeros(B * T, *x.shape[1:])
        out.index_copy_(0, self.indices, x)
        return out.view(B, T, *x.shape[1:])


def packed_attention(
    q: torch.Tensor,  # (N, H, D)
    k: torch.Tensor,  # (N, H, D)
    v: torch.Tensor,  # (N, H, D)
    packed: PackedBatch,
    dropout_p: float = 0.0,
    scale: float | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,  # cos, sin (N, D): q and k rotated first
) -> torch.Tensor:  # (N, H, D)
    """Attention within each packed sequence (and its window): the sliding-window kernel where it applies (RoPE
    inside it where window_attention.ROTATES), varlen_attn where it runs, else the padded path."""
    window = packed.window
    kernel = window is not None and window_attention.applies(q, k, v, dropout_p)
    if rope is not None and not (kernel and window_attention.ROTATES):
        q, k = apply_rope(q, k, *rope)
        rope = None
    if kernel:
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        cos, sin = rope or (None, None)
        return window_attention.window_attention(q, k, v, packed.rows, window, scale, cos=cos, sin=sin)
    if (packed.kernel is not None and q.dtype in VARLEN_DTYPES and dropout_p == 0.0
            and (window is None or packed.kernel_takes_window)):
        kwargs = {"scale": scale}
        if window is not None:
            kwargs["window_size"] = (window, window)
        n = packed.max_len
        return packed.kernel(q, k, v, packed.cu_seqlens, packed.cu_seqlens, n, n, **kwargs)
    B, T = packed.shape
    heads_first = lambda t: packed.repad(t).transpose(1, 2)  # (B, H, T, D)
    if window is None:
        mask = padding_mask(packed.keep, q.dtype)  # the padded path's masks, so its numbers
    else:
        mask = window_mask(packed.keep, T, window, q.device)
    out = attention(heads_first(q), heads_first(k), heads_first(v), mask, dropout_p=dropout_p, scale=scale)
    return packed.unpad(out.transpose(1, 2))


def softcapped_attention(
    q: torch.Tensor,  # (B, nh, T, D)
    k: torch.Tensor,  # (B, nkv, S, D)
    v: torch.Tensor,  # (B, nkv, S, D)
    mask: torch.Tensor | None,  # bool (True = attend) or additive, broadcastable to (B, nh, T, S)
    softcap: float | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:  # (B, nh, T, D)
    """Unfused grouped attention with tanh soft-capping of the scores (Gemma 2; SDPA has no soft-cap), op for op as
    transformers' eager path: q·kᵀ · scale → softcap · tanh(· / softcap) → + additive mask (finfo.min) → float32
    softmax → · v. A fully masked query row (left padding) attends uniformly, as there. No mask over several query
    positions is causal attention (T == S), as in `grouped_attention`."""
    groups = q.shape[1] // k.shape[1]
    if mask is None and q.shape[2] > 1:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()  # (T, S)
    if groups > 1:
        k, v = repeat_heads(k, groups), repeat_heads(v, groups)  # (B, nh, S, D)
    scores = torch.matmul(q, k.transpose(2, 3)) * scale  # (B, nh, T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill(~mask, torch.finfo(scores.dtype).min)
        scores = scores + mask
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p)
    return torch.matmul(probs, v)
