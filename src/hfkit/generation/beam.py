"""Beam search as transformers' vectorized `_beam_search`: fixed-shape tensors per batch row, no Python lists.

Each step scores `num_beams × V` continuations per row, keeps the top K = max(2, 1 + #eos) × num_beams, sends the
ones that hit a stopping criterion to the finished pool (scored sum-logprob / new_length ** length_penalty) and the
best `num_beams` others on as running beams; the KV cache rows follow their source beams (`KVCache.reorder`).
"""

from __future__ import annotations

import torch

from ..models.decoder import KVCache
from .config import GenerationConfig
from .processors import mark_seen, process, seen_tokens
from .steps import decode_one_token, position_ids_from_mask, prefill

MASKED = -1.0e9  # transformers' score for impossible beams


def gather_beams(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # x (B, N, ...), index (B, M) → (B, M, ...)
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


def early_stop_unsatisfied(unsatisfied, running_scores, finished_scores, is_finished, new_tokens: int,
                           max_new: int, gc: GenerationConfig) -> torch.Tensor:  # (B, 1)
    """Rows where a running beam could still beat the worst finished hypothesis."""
    best_length = max_new if gc.early_stopping == "never" and gc.length_penalty > 0.0 else new_tokens
    best_running = running_scores[:, :1] / (best_length ** gc.length_penalty)
    worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], MASKED)  # (B, nb)
    return unsatisfied & (best_running > worst_finished).any(-1, keepdim=True)


def beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, gc: GenerationConfig,
                max_length: int, min_length: int, eos: torch.Tensor, pad: int | None,
                stop=None, generator: torch.Generator | None = None) -> torch.Tensor:  # (B·num_return_sequences, T + new)
    """The best `num_return_sequences` finished hypotheses per row, best first, cut to the longest returned."""
    if gc.num_return_sequences > gc.num_beams:
        raise ValueError(f"num_return_sequences ({gc.num_return_sequences}) cannot exceed num_beams ({gc.num_beams}).")
    B, T = input_ids.shape
    nb, device = gc.num_beams, input_ids.device
    K = max(2, 1 + len(eos)) * nb
    top_nb = torch.arange(K, device=device) < nb  # (K,): only the best nb candidates may finish
    fill = (pad if pad else int(eos[0])) if len(eos) else -1  # transformers' `pad_token_id or eos_token_id[0]`

    running = torch.full((B, nb, max_length), fill, dtype=torch.long, device=device)
    running[:, :, :T] = input_ids[:, None]
    finished = running.clone()
    running_scores = torch.zeros(B, nb, device=device)
    running_scores[:, 1:] = MASKED  # all beams start equal: only the first may expand at step one
    finished_scores = torch.full((B, nb), MASKED, device=device)
    finished_lengths = torch.zeros(B, nb, dtype=torch.long, device=device)  # new tokens per finished hypothesis
    is_finished = torch.zeros(B, nb, dtype=torch.bool, device=device)
    unsatisfied = torch.ones(B, 1, dtype=torch.bool, device=device)
    row_offset = torch.arange(B, device=device)[:, None] * nb  # (B, 1)

    ids = input_ids.repeat_interleave(nb, 0)  # (B·nb, T)
    mask = attention_mask.repeat_interleave(nb, 0)
    cache = KVCache()
    logits = prefill(model, ids, mask, cache)  # (B·nb, V)
    V = logits.shape[-1]
    seen = seen_tokens(ids, mask, V) if gc.repetition_penalty != 1.0 else None
    position = position_ids_from_mask(mask)[:, -1:]  # (B·nb, 1)
    for length in range(T, max_length):  # `length` tokens so far; this step writes column `length`
        log_probs = process(logits.log_softmax(-1), gc, seen, eos, length, min_length, keep=max(len(eos), 1) + 1)
        scores = (log_probs.view(B, nb, V) + running_scores[:, :, None]).view(B, nb * V)
        if gc.do_sample:  # beam sampling: K draws without replacement, ranked by score (transformers 5.25; 5.23 did not)
            top_index = torch.multinomial(scores.softmax(-1), K, generator=generator)
            top_scores, order = scores.gather(1, top_index).sort(dim=-1, descending=True)  # (B, K), best first
            top_index = top_index.gather(1, order)
        else:
            top_scores, top_index = torch.topk(scores, K)  # (B, K)
        source = top_index // V  # (B, K): the running beam each candidate extends
        candidates = gather_beams(running, source)  # (B, K, max_length)
        candidates[:, :, length] = top_index % V
        hits = torch.isin(candidates[:, :, length], eos) | (length + 1 >= max_length)  # (B, K)
        if stop is not None:
            hits |= stop(candidates[:, :, :length + 1].flatten(0, 1)).view(B, K)

        next_scores = top_scores + hits.float() * MASKED
        keep = torch.topk(next_scores, nb)[1]  # (B, nb)
        running, running_scores, kept_source = (gather_beams(t, keep) for t in (candidates, next_scores, source))

        just_finished = hits & top_nb
        new_scores = top_scores / ((length + 1 - T) ** gc.length_penalty)
        new_scores += (is_finished.all(-1, keepdim=True) & (gc.early_stopping is True)).float() * MASKED
        new_scores += (~unsatisfied).float() * MASKED
        new_scores += (~just_finished) * MASKED
        merged_lengths = torch.full_like(top_scores, length + 1 - T, dtype=torch.long)
        best = torch.topk(torch.cat((finished_scores, new_scores), 1), nb)[1]  # (B, nb)
        finished = gather_beams(torch.cat((finished, candidates), 1), best)
        finished_scores = gather_beams(torch.cat((finished_scores, new_scores), 1), best)
        finished_lengths = gather_beams(torch.cat((finished_lengths, merged_lengths), 1), best)
        is_finished = gather_beams(torch.cat((is_finished, just_finished), 1), best)

        beam_index = (kept_source + row_offset).flatten()  # (B·nb,): each new beam's source row
        cache.reorder(beam_index)
        unsatisfied = early_stop_unsatisfied(unsatisfied, running_scores, finished_scores, is_finished,
                                             length + 1 - T, max_length - T, gc)
        go_on = unsatisfied.any() & ~(is_finished.all() & (gc.early_stopping is True)) & ~hits.all()
        if not bool(go_on):
            break
        token = running[:, :, length].flatten()  # (B·nb,)
        if seen is not None:
            seen = mark_seen(seen.index_select(0, beam_index), token)
        mask = torch.cat((mask, mask.new_ones(B * nb, 1)), dim=1)
        position = position + 1
        logits = decode_one_token(model, token[:, None], mask, position, cache)

    R = gc.num_return_sequences
    out_length = T + int(finished_lengths[:, :R].max())
    return finished[:, :R].flatten(0, 1)[:, :out_length]
