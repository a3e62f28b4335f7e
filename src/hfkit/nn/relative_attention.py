"""Disentangled relative attention (DeBERTa) as an additive bias on the padded attention path.

A layer's attention scores are content·content plus, per `pos_att_type` term, content·position:

    score(i, j) = q_i · k_j / s                      (c2c: attention() computes it)       
                + q_i · Pk[c2p(i, j)] / s            (c2p: query content against key's relative position)
                + k_j · Pq[p2c(i, j)] / s            (p2c: key content against query's relative position)

    s = sqrt(head_dim · (1 + number of terms)),   P* = the layer's projection of the relative embeddings,
    c2p(i, j) = clamp(span + δ(i − j)),  p2c(i, j) = clamp(span − δ(i − j)),  δ = identity or log buckets.

The c2p/p2c terms are computed against all 2·span relative embeddings, then gathered per (i, j):

      q (B,nh,T,hd) @ Pkᵀ (nh,hd,2S) ─► (B,nh,T,2S) ──gather[c2p]──► (B,nh,T,T)  ─┐
                                           row i, column c2p(i, j)                ├─► / s, summed: the bias
      k (B,nh,T,hd) @ Pqᵀ (nh,hd,2S) ─► (B,nh,T,2S) ──gather[p2c]──► (B,nh,T,T)ᵀ ─┘
                                           row j, column p2c(j, i), then transposed

The bias (plus the padding mask) goes to `attention()` as its additive mask, with the divisor s; nothing
here calls SDPA. Float order follows transformers: each term is divided by s, then summed (c2p first).
"""

from __future__ import annotations

import torch


def log_buckets(relative: torch.Tensor, buckets: int, max_distance: int) -> torch.Tensor:
    """Distances inside ±buckets/2 kept, farther ones compressed logarithmically up to max_distance. (T, T) long."""
    mid = buckets // 2
    sign = torch.sign(relative)
    near = (relative < mid) & (relative > -mid)
    magnitude = torch.where(near, torch.tensor(mid - 1).type_as(relative), relative.abs())
    # float32 as the reference computes it: the ceil below must land on the same integers
    ratio = torch.log(magnitude / mid) / torch.log(torch.tensor((max_distance - 1) / mid))
    far = torch.ceil(ratio * (mid - 1)) + mid
    return torch.where(magnitude <= mid, relative.type_as(far), far * sign).long()


def relative_positions(length: int, buckets: int, max_distance: int, device: torch.device | None = None) -> torch.Tensor:
    """δ(i − j) for a sequence of `length`: query position minus key position, bucketed when buckets > 0. (T, T)"""
    positions = torch.arange(length, dtype=torch.long, device=device)
    relative = positions[:, None] - positions[None, :]  # (T, T)
    return log_buckets(relative, buckets, max_distance) if buckets > 0 and max_distance > 0 else relative


def gather_indices(relative: torch.Tensor, span: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns into the 2·span relative embeddings: (c2p, p2c), each (T, T) long."""
    return (relative + span).clamp(0, 2 * span - 1), (span - relative).clamp(0, 2 * span - 1)


def score_divisor(head_dim: int, terms: int) -> torch.Tensor:
    """s = sqrt(head_dim · (1 + terms)), a float32 0-d tensor made by the reference's own ops: torch's float32
    sqrt is not always the correctly rounded one, and the scores are divided by exactly this value."""
    return torch.sqrt(torch.tensor(head_dim, dtype=torch.float32) * (1 + terms))


def disentangled_bias(
    q: torch.Tensor,  # (B, nh, T, hd)
    k: torch.Tensor,  # (B, nh, T, hd)
    pos_key: torch.Tensor | None,  # (nh, 2S, hd): relative embeddings through the key projection (c2p)
    pos_query: torch.Tensor | None,  # (nh, 2S, hd): through the query projection (p2c)
    c2p: torch.Tensor,  # (T, T) long
    p2c: torch.Tensor,  # (T, T) long
    divisor: torch.Tensor,  # 0-d CPU tensor, s (a CPU scalar divides CUDA tensors without a copy)
) -> torch.Tensor | None:  # (B, nh, T, T) additive, None without terms
    """The products run as batched (B·nh) matmuls in the reference's layout: the same bits on CPU."""
    B, nh, T, hd = q.shape
    divisor = divisor.to(dtype=q.dtype)
    flat = lambda t: t.reshape(B * nh, T, hd)  # noqa: E731  (B·nh, T, hd)
    bias = None
    if pos_key is not None:
        scores = torch.bmm(flat(q), pos_key.repeat(B, 1, 1).transpose(-1, -2))  # (B·nh, T, 2S)
        bias = torch.gather(scores, -1, c2p.expand(B * nh, T, T)) / divisor
    if pos_query is not None:
        scores = torch.bmm(flat(k), pos_query.repeat(B, 1, 1).transpose(-1, -2))  # (B·nh, T, 2S), row = key position
        term = torch.gather(scores, -1, p2c.expand(B * nh, T, T)).transpose(-1, -2) / divisor
        bias = term if bias is None else bias + term
    return None if bias is None else bias.reshape(B, nh, T, T)
