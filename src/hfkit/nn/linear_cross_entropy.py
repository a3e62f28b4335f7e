"""Linear + cross-entropy in row chunks: the causal-LM loss without the (N, V) logits.

The plain path, `F.cross_entropy(softcap(F.linear(hidden, weight)).float(), labels)`,
keeps the logits of all N tokens until backward (Llama 3, N = 8192, V = 128256: 2.1 GB
in bfloat16, twice that in float32). Here each chunk of rows computes its logits, its
share of the loss and at once the gradient of its logits, folds that into grad_hidden
and grad_weight, and drops the chunk; backward only scales the stored gradients.
The matmuls run in the dtype F.linear would use (the autocast dtype under autocast),
the rest in float32; grad_weight accumulates over the chunks in float32. Inputs in
float64 stay float64 throughout (the plain `.float()` would round them), for gradcheck.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from .matvec import wants_grad


class _Options(NamedTuple):
    ignore_index: int
    softcap: float | None
    chunk_size: int
    dtype: torch.dtype  # the matmul dtype


def default_chunk_size(vocab: int) -> int:
    """Rows per chunk: 2**28 // vocab, rounded down to a power of two.

    A chunk's float32 logits then take ≤ 1 GiB: 2048 rows for Llama 3's 128256 tokens,
    1024 for Gemma's 256000, 8192 for 32000. Measured on an H100 (Llama-3 shapes, N =
    8192, bf16 autocast, benchmarks/explore/linear_ce.py): 2048 rows cost 12 % more time
    than the plain eager loss at 44 % of its memory; 512 rows, 56 % more at 20 %."""
    rows = max(1, 2**28 // vocab)
    return 1 << (rows.bit_length() - 1)


def _chunked(hidden, weight, labels, opt: _Options, want_h: bool, want_w: bool):
    """The mean loss and, if asked, its gradients for hidden and weight (own dtypes)."""
    acc = torch.promote_types(opt.dtype, torch.float32)  # float32 (float64 for float64)
    w = weight.to(opt.dtype)  # (V, H)
    valid = labels != opt.ignore_index  # (N,)
    target = labels.masked_fill(~valid, 0)  # (N,), ignored rows weighted 0 below
    n_valid = valid.sum()
    # (N,): 1 / n_valid on valid rows; zero gradients if none is valid, as plain gives
    scale = valid.to(acc) / n_valid.clamp(min=1)
    loss_sum = hidden.new_zeros((), dtype=acc)
    grad_h = torch.empty_like(hidden) if want_h else None  # (N, H)
    grad_w = torch.zeros_like(weight, dtype=acc) if want_w else None  # (V, H)
    for start in range(0, hidden.shape[0], opt.chunk_size):
        rows = slice(start, start + opt.chunk_size)
        h = hidden[rows].to(opt.dtype)  # (C, H)
        z = h @ w.T  # (C, V)
        if opt.softcap is not None:  # Gemma 2, in the logits' dtype as the plain path
            tanh = torch.tanh(z / opt.softcap)  # (C, V)
            z = tanh * opt.softcap
        logp = torch.log_softmax(z.to(acc), dim=-1)  # (C, V)
        picked = logp.gather(1, target[rows, None]).squeeze(1)  # (C,)
        loss_sum -= torch.where(valid[rows], picked, 0.0).sum()
        if not (want_h or want_w):
            continue
        grad = logp.exp_()  # (C, V) softmax
        grad[torch.arange(len(grad), device=grad.device), target[rows]] -= 1.0
        grad.mul_(scale[rows, None])  # (softmax - onehot) / n_valid
        if opt.softcap is not None:
            grad.mul_(1.0 - tanh.to(acc).square())
        grad = grad.to(opt.dtype)  # (C, V)
        if want_h:
            grad_h[rows] = grad @ w  # (C, H)
        if want_w and grad.dtype == acc:
            grad_w.addmm_(grad.T, h)  # (V, H)
        elif want_w:  # each chunk's (V, H) product rounded once to the matmul dtype
            grad_w += grad.T @ h
    loss = loss_sum / n_valid  # NaN when no token is valid, as F.cross_entropy
    return loss, grad_h, None if grad_w is None else grad_w.to(weight.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward computes the loss and its gradients; backward scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, opt: _Options):
        loss, *grads = _chunked(hidden, weight, labels, opt, *ctx.needs_input_grad[:2])
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grads = [None if g is None else g * grad_loss for g in ctx.saved_tensors]
        return *grads, None, None


def _matmul_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype F.linear computes `t` in: the autocast dtype for it under autocast."""
    device = t.device.type
    eligible = t.is_floating_point() and t.dtype != torch.float64
    if eligible and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return t.dtype


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of `softcap(hidden @ weight.T)` against `labels`, in chunks.

    hidden (N, H), weight (V, H) (an lm_head or tied embedding), labels (N,) already
    shifted; `ignore_index` rows left out. Value and gradients are those of
    `F.cross_entropy(softcap(F.linear(hidden, weight)).float(), labels)`, under autocast
    too. A float32 scalar; chunk_size rows per chunk (default: default_chunk_size)."""
    if hidden.dim() != 2 or weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(
            "hidden (N, H) and weight (V, H) must share H: got hidden "
            f"{tuple(hidden.shape)}, weight {tuple(weight.shape)}"
        )
    if labels.shape != hidden.shape[:1]:
        raise ValueError(
            f"labels must be (N,) = ({len(hidden)},) for hidden {tuple(hidden.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if hidden.device != weight.device:
        raise ValueError(f"hidden is on {hidden.device}, weight on {weight.device}")
    dtype, weight_dtype = _matmul_dtype(hidden), _matmul_dtype(weight)
    if dtype != weight_dtype:
        raise TypeError(
            f"hidden and weight multiply as {dtype} and {weight_dtype}; "
            "F.linear needs one dtype"
        )
    if chunk_size is None:
        chunk_size = default_chunk_size(weight.shape[0])
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    opt = _Options(ignore_index, softcap, chunk_size, dtype)
    labels = labels.to(hidden.device, torch.long)
    device = hidden.device.type
    autocast = torch.is_autocast_enabled(device)
    # The matmul dtype is chosen above; the body runs as written, autocast off.
    with (
        torch.autocast(device, enabled=False) if autocast else contextlib.nullcontext()
    ):
        if wants_grad(hidden, weight):
            return _LinearCrossEntropy.apply(hidden, weight, labels, opt)
        return _chunked(hidden, weight, labels, opt, False, False)[0]
