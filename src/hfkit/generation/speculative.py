"""Speculative decoding of one row, greedy or sampling (transformers' assisted generation).

Candidate tokens come from an n-gram lookup in the text so far (`prompt_lookup_num_tokens`: prompt lookup decoding)
or from a smaller draft model with the same vocabulary (`assistant_model`, its greedy tokens). The model scores its
newest token and all candidates in one forward pass and chooses the token at each position in turn, as decoding one
token at a time would: the argmax, or one draw from its processed distribution (`do_sample`); it keeps the
candidates up to the first its choice differs from, and adds its own choice there. A position's logits are used only
while every earlier candidate was kept, so each token is chosen from exactly the distribution plain decoding would
choose it from, with the same processors, and sampling draws once per token in order: with one seeded generator
the output is plain decoding's. What changes is the number of model passes: one per run of kept candidates.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from ..models.decoder import KVCache
from .config import GenerationConfig
from .processors import mark_seen, next_token, process, seen_tokens
from .static_cache import (
    compiled_step,
    decode_static,
    prefill_static,
    static_cache_for,
    verify_static,
)
from .steps import position_ids_from_mask, prefill
from .stopping import StopStrings

SCHEDULES = ("constant", "heuristic", "heuristic_transient")
_DRAFT_LENGTHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # assistant → its "heuristic" draft length


def lookup_candidates(ids: torch.Tensor, count: int, max_ngram: int) -> torch.Tensor:  # (≤ count,)
    """The tokens that follow the earliest earlier occurrence of the text's last n-gram, the longest n ≤ max_ngram
    that occurs first; empty when none does. `ids` (T,) is the text so far."""
    T = ids.shape[0]
    for n in range(min(max_ngram, T - 1), 0, -1):
        windows = ids.unfold(0, n, 1)[: T - n]  # (T-n, n): every n-gram that has a token after it
        starts = (windows == ids[-n:]).all(1).nonzero()[:, 0] + n  # where a continuation begins
        if len(starts):
            start = int(starts[0])
            return ids[start : start + count]
    return ids[:0]


class DraftModel:
    """An assistant model that proposes candidates greedily through its own KV cache, kept in step with the text.
    cache="static": the draft's preallocated cache, its prompt prefilled once, then one-token steps (under `compile`
    greedy decoding's compiled step, a CUDA graph); else the dynamic cache, the pending text in one pass."""

    def __init__(self, model, gc: GenerationConfig, cache: str = "dynamic", max_length: int = 0,
                 compile: bool = False):
        if gc.num_assistant_tokens_schedule not in SCHEDULES:
            raise ValueError(f"num_assistant_tokens_schedule must be one of {SCHEDULES}, "
                             f"not {gc.num_assistant_tokens_schedule!r}")
        self.model, self.schedule, self.threshold = model, gc.num_assistant_tokens_schedule, gc.assistant_confidence_threshold
        persistent = self.schedule == "heuristic" and model in _DRAFT_LENGTHS
        self.length = _DRAFT_LENGTHS[model] if persistent else gc.num_assistant_tokens
        self.cached = 0  # tokens of the text in the cache
        if cache == "static":
            weight = next(model.parameters())
            self.cache = static_cache_for(model, 1, max_length, weight.dtype, weight.device, draft=True)
            self.step = compiled_step(decode_static, weight.device, compile)
        else:
            self.cache, self.step = KVCache(), None

    def propose(self, text: list[int], mask: torch.Tensor, count: int) -> list[int]:  # ≤ count tokens
        """Up to `count` greedy tokens after `text` (L tokens), `mask` (1, L) its padding; fewer when the draft's top
        probability falls below `assistant_confidence_threshold`."""
        count = min(count, self.length)
        if not count:
            return []
        positions = position_ids_from_mask(mask)  # (1, L)
        logits = self._read(torch.tensor([text[self.cached :]], device=mask.device), mask, positions)  # (1, V)
        tokens = []
        for i in range(count):
            confidence, token = logits.softmax(-1).max(-1)  # (1,)
            tokens.append(token)
            if i + 1 == count or (self.threshold and float(confidence) < self.threshold):
                break
            mask = torch.cat((mask, mask.new_ones(1, 1)), dim=1)
            positions = torch.cat((positions, positions[:, -1:] + 1), dim=1)
            logits = self._read(token[:, None], mask, positions)
        return torch.cat(tokens).tolist()

    def _read(self, chunk: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:  # (1, V)
        """Run the text's newest tokens `chunk` (1, n) into the cache; mask and positions (1, L) cover the whole
        text. The float32 logits of the token after it."""
        n, L = chunk.shape[1], mask.shape[1]
        if self.step is None:
            out = self.model(chunk, mask, positions[:, L - n :], self.cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
        elif self.cached == 0:  # the first call: the prompt and the model's first token, prefilled
            logits = prefill_static(self.model, chunk, mask, self.cache)
        else:  # one token at a time (1 or 2 pending: after a full acceptance, the last candidate and the model's)
            for j in range(n):
                at = L - n + j  # the token's index in the text
                logits = self.step(self.model, chunk[:, j : j + 1], positions[:, at : at + 1], self.cache)
        self.cached = L
        return logits

    def accepted(self, text_length: int, proposed: int, kept: int) -> None:
        """The model kept `kept` of `proposed` candidates; the text is now `text_length` tokens."""
        self.cache.crop(min(self.cached, text_length - 1))
        self.cached = min(self.cached, text_length - 1)
        if self.schedule != "constant" and proposed:
            self.length = self.length + 2 if kept == proposed else max(1, self.length - 1)
            if self.schedule == "heuristic":
                _DRAFT_LENGTHS[self.model] = self.length


def speculates(assistant_model, prompt_lookup_num_tokens: int | None) -> bool:
    """Whether decoding is speculative: an assistant model or prompt lookup gives candidates."""
    return assistant_model is not None or bool(prompt_lookup_num_tokens)


def check_speculative(model, assistant_model, gc: GenerationConfig, batch: int) -> None:
    """Speculative decoding's limits, as clear errors: no beams, one row, one candidate source, a shared vocabulary."""
    source = "assistant_model" if assistant_model is not None else "prompt_lookup_num_tokens"
    if assistant_model is not None and gc.prompt_lookup_num_tokens:
        raise ValueError("Pass assistant_model or prompt_lookup_num_tokens, not both: each is a source of candidates.")
    if gc.num_beams > 1:
        raise ValueError(f"Speculative decoding ({source}) chooses one token at a time, greedily or by sampling, "
                         f"not by beam search: pass num_beams=1, or drop {source}.")
    if batch != 1:
        raise ValueError(f"Speculative decoding ({source}) decodes one sequence at a time, got a batch of {batch}: "
                         "call once per prompt, or drop it.")
    if assistant_model is None:
        return
    here, there = next(model.parameters()).device, next(assistant_model.parameters()).device
    if here != there:
        raise ValueError(f"assistant_model is on {there}, the model on {here}: load both on one device.")
    if assistant_model.config.vocab_size > model.config.vocab_size:
        raise ValueError(f"assistant_model's vocabulary ({assistant_model.config.vocab_size} tokens) is larger than "
                         f"the model's ({model.config.vocab_size}): the assistant must share the model's tokenizer.")


def speculative_decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, gc: GenerationConfig,
                       max_length: int, min_length: int, eos: torch.Tensor, stop: StopStrings | None,
                       generator: torch.Generator | None = None, assistant_model=None, cache: str = "dynamic",
                       compile: bool = False) -> torch.Tensor:  # (1, T + new)
    """Greedy or sampled decoding of one row, checking candidates from prompt lookup or `assistant_model` in one
    pass each.
    cache="static": every pass checks the same number of candidates (padded), so under `compile` it is one CUDA
    graph, and a pass without candidates is plain decoding's one-token step (its graph); the assistant's heuristic
    schedule then stays at or below num_assistant_tokens."""
    width = gc.prompt_lookup_num_tokens or gc.num_assistant_tokens  # candidates per pass, at most
    text = input_ids[0].tolist()  # the row so far, on the host: lookup and stop strings read no device tensor
    if assistant_model is not None:
        draft = DraftModel(assistant_model, gc, cache, max_length + width, compile)
        propose: Callable = draft.propose
    else:
        draft = None
        propose = lambda text, mask, count: lookup_candidates(torch.tensor(text), count,
                                                              gc.max_matching_ngram_size).tolist()
    if cache == "static":
        kv = static_cache_for(model, 1, max_length + width, next(model.parameters()).dtype, input_ids.device)
        logits = prefill_static(model, input_ids, attention_mask, kv)[:, None]  # (1, 1, V): the next token's
        check = compiled_step(verify_static, input_ids.device, compile)
        one = compiled_step(decode_static, input_ids.device, compile)

        def forward(tokens, mask, positions):  # two fixed shapes, two graphs: 1 token (no candidates) or 1 + width
            kv.ready(tokens.shape[1])
            if tokens.shape[1] == 1:  # plain decoding's own step
                return one(model, tokens, positions, kv)[:, None]
            return check(model, tokens, positions, kv)
    else:
        kv = KVCache()
        logits = prefill(model, input_ids, attention_mask, kv)[:, None]
        forward = lambda tokens, mask, positions: model(tokens, mask, positions, kv, use_cache=True).logits.float()
    seen = seen_tokens(input_ids, attention_mask, logits.shape[-1]) if gc.repetition_penalty != 1.0 else None
    eos_ids = set(eos.tolist())
    mask, candidates = attention_mask, []
    while True:
        # (1 + K,) each position's unprocessed greedy choice: one read-back
        greedy = None if gc.do_sample else logits[0].argmax(-1).tolist()
        chosen, done = [], False
        for i in range(logits.shape[1]):  # position i chooses the token after the newest token and i candidates
            length = len(text) + len(chosen)
            if gc.do_sample or seen is not None or length < min_length:
                token = int(next_token(process(logits[:, i], gc, seen, eos, length, min_length), gc.do_sample,
                                       generator))
            else:
                token = greedy[i]
            chosen.append(token)
            if seen is not None:
                seen = mark_seen(seen, input_ids.new_tensor([token]))
            done = (length + 1 == max_length or token in eos_ids
                    or (stop is not None and bool(stop(torch.tensor([(text + chosen)[-stop.window :]])))))
            if done or i == len(candidates) or token != candidates[i]:
                break
        kept = len(chosen) - 1  # candidates accepted; the last chosen token is the model's own
        text += chosen
        mask = torch.cat((mask, mask.new_ones(1, len(chosen))), dim=1)
        if draft is not None:
            draft.accepted(len(text), len(candidates), kept)
        if done:
            return input_ids.new_tensor([text])
        kv.crop(len(text) - 1)  # the accepted candidates' keys stay, the rejected ones' go
        candidates = propose(text, mask, min(width, max(0, max_length - len(text) - 1)))
        if cache == "static" and candidates:  # a fixed-shape pass: padded with the newest token (kept only if the
            candidates += [chosen[-1]] * (width - len(candidates))  # model agrees); none: a one-token step
        step_ids = input_ids.new_tensor([chosen[-1:] + candidates])  # (1, 1 + K): the newest token, the candidates
        step_mask = torch.cat((mask, mask.new_ones(1, len(candidates))), dim=1)
        positions = position_ids_from_mask(step_mask)[:, -step_ids.shape[1] :]  # (1, 1 + K)
        logits = forward(step_ids, step_mask, positions)  # (1, 1 + K, V)
