"""Logits processors as pure tensor functions, in the order transformers' `_get_logits_processor` applies them:
repetition penalty → min length (EOS suppressed) → [sampling only] temperature → top-k → top-p → min-p.

Nothing here reads a tensor back to the host, so one decode step stays capturable (static cache + CUDA graphs):
the repetition penalty keeps a (B, V) `seen` mask updated by scatter instead of re-reading the sequence, and the
min-length check compares host integers (the step count is known on the host).
"""

from __future__ import annotations

import torch

from .config import GenerationConfig

NEG_INF = -float("inf")


def seen_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:  # (B, V)
    """Which tokens each row holds, left padding excluded (transformers' `prompt_ignore_length`)."""
    real = attention_mask.long().cumsum(-1) > 0  # (B, T): from the first real token on
    ids = input_ids.masked_fill(~real, vocab_size)  # pads → a dummy column, dropped below
    seen = torch.zeros(input_ids.shape[0], vocab_size + 1, dtype=torch.bool, device=input_ids.device)
    return seen.scatter_(1, ids.clamp(max=vocab_size), True)[:, :vocab_size]


def mark_seen(seen: torch.Tensor, token: torch.Tensor) -> torch.Tensor:  # (B, V), token (B,)
    return seen.scatter(1, token[:, None], True)


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:  # (B, V)
    """Seen tokens' logits: negative ones × penalty, others ÷ penalty."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def suppress(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:  # (B, V), token_ids (E,)
    blocked = torch.isin(torch.arange(logits.shape[-1], device=logits.device), token_ids)  # (V,)
    return logits.masked_fill(blocked, NEG_INF)


def top_k_filter(logits: torch.Tensor, top_k: int, keep: int = 1) -> torch.Tensor:
    k = min(max(top_k, keep), logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, top_p: float, keep: int = 1) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, descending=False)
    drop = sorted_logits.softmax(-1).cumsum(-1) <= (1 - top_p)  # (B, V) in ascending order
    drop[..., -keep:] = False  # always keep the `keep` most likely tokens
    return logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float, keep: int = 1) -> torch.Tensor:
    """Drop tokens whose probability is below min_p × the top token's probability."""
    probs = logits.softmax(-1)
    drop = probs < min_p * probs.amax(-1, keepdim=True)
    drop.scatter_(-1, torch.topk(probs, min(keep, probs.shape[-1])).indices, False)
    return logits.masked_fill(drop, NEG_INF)


def warp(logits: torch.Tensor, gc: GenerationConfig, keep: int = 1) -> torch.Tensor:  # (B, V)
    """The sampling warpers: temperature → top-k → top-p → min-p."""
    if gc.temperature is not None and gc.temperature != 1.0:
        logits = logits / gc.temperature
    if gc.top_k:
        logits = top_k_filter(logits, gc.top_k, keep)
    if gc.top_p is not None and gc.top_p < 1.0:
        logits = top_p_filter(logits, gc.top_p, keep)
    if gc.min_p is not None:
        logits = min_p_filter(logits, gc.min_p, keep)
    return logits


def process(logits: torch.Tensor, gc: GenerationConfig, seen: torch.Tensor | None, eos: torch.Tensor,
            length: int, min_length: int, keep: int = 1) -> torch.Tensor:  # (B, V)
    """Every processor the config asks for; `length` is the current total length (prompt + generated), `keep` the
    fewest tokens a sampling warper leaves (beam sampling keeps #eos + 1 so a beam can always go on)."""
    if seen is not None:
        logits = penalize_repeats(logits, seen, gc.repetition_penalty)
    if length < min_length and len(eos):
        logits = suppress(logits, eos)
    if gc.do_sample:
        logits = warp(logits, gc, keep)
    return logits


def next_token(logits: torch.Tensor, do_sample: bool, generator: torch.Generator | None) -> torch.Tensor:  # (B,)
    """Argmax, or one draw from softmax(processed logits)."""
    if not do_sample:
        return logits.argmax(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)
