"""Greedy decoding through the static cache with the whole token step on the device.

One step runs the forward pass, the argmax, the EOS bookkeeping, stores the token and moves the inputs on to the
next position, all in place on device tensors (`GreedyState`). Under `compile=True` that is one CUDA graph per
token and the host only replays it: no argmax, copies or position updates between graphs, and no read-back. With an
EOS the host asks whether every row has finished only every `EOS_CHECK_EVERY` tokens (a read-back drains the GPU's
queue; `LAGGED_EOS_CHECK`: the answer one check late, without draining it); the steps run past the last row's EOS
are cut off, so the output is the token-by-token loop's exactly.

Used by `generate_tokens(cache="static")` for greedy decoding without logits processors or stop strings; sampling
and processors keep the loop in `decode.py`.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from .static_cache import StaticCache, compiled_step, decode_static

EOS_CHECK_EVERY = 16  # tokens between the host's "all rows finished?" checks; at most this many wasted steps
# LAGGED_EOS_CHECK: each check's answer is queued behind the steps (a copy to pinned memory and an event) and read at
# the next check, which waits at most for the steps before the last one: the queue never drains (a read-back at once
# waits for every queued step, then the GPU idles while the host issues the next replays). Up to 2 · EOS_CHECK_EVERY
# steps then run past the last EOS, cut off as before. With an EOS set, 892 against 882 tok/s in one process on an
# H100 (895 without an EOS; RESULTS.md, twenty-fifth session). False: read back at once (A/B runs).
LAGGED_EOS_CHECK = True
# SPLIT_ARGMAX: the step's argmax over the vocabulary as two reductions (`split_argmax`). A compiled batch-1 step
# reduces 128256 logits in one GPU program: 24 µs of a 1.15 ms step on an H100 (RESULTS.md, twenty-second session).
# Split: 893 against 873 tok/s in one process on an H100 (twenty-third session). False: one reduction (A/B runs).
SPLIT_ARGMAX = True
ARGMAX_CHUNK = 1024  # logits per chunk of the first reduction


def finish_rows(token: torch.Tensor, unfinished: torch.Tensor, eos: torch.Tensor, pad: int) -> torch.Tensor:  # (B,)
    """Finished rows get `pad`; rows whose token is an EOS are finished from now on (`unfinished` in place)."""
    token = torch.where(unfinished, token, torch.full_like(token, pad))
    unfinished &= ~torch.isin(token, eos)
    return token


def last_finish(new: torch.Tensor, eos: torch.Tensor) -> int:
    """new (B, N) tokens in which every row holds an EOS → the step at which the last row finished: where the
    token-by-token loop stops, so steps run past it (checks every few tokens) are cut off."""
    return int(torch.isin(new, eos).long().argmax(1).max())  # the first EOS of each row, the latest of them


def split_argmax(logits: torch.Tensor, chunk: int) -> torch.Tensor:  # (B,)
    """logits (B, V) → argmax (B,), the first maximal index as torch.argmax (NaN counting as maximal), through the
    maxima of chunks of `chunk` logits: the first reduction runs over B · ⌈V / chunk⌉ rows, side by side."""
    B, V = logits.shape
    chunks = -(-V // chunk)
    padded = F.pad(logits, (0, chunks * chunk - V), value=float("-inf")).view(B, chunks, chunk)
    best, within = padded.max(-1)  # (B, C) each chunk's maximum and its first index
    which = best.argmax(-1, keepdim=True)  # (B, 1) the first chunk holding the overall maximum
    return (which * chunk + within.gather(-1, which)).squeeze(-1)


class GreedyState:
    """The device tensors a greedy step reads and updates in place. Kept with their static cache and refilled for
    each generate call, so their addresses stay fixed and the captured CUDA graph replays across calls (new
    addresses would make CUDA graphs re-record)."""

    def __init__(self, batch: int, capacity: int, eos_count: int, device: torch.device):
        long = {"dtype": torch.long, "device": device}
        self.token = torch.zeros(batch, 1, **long)  # (B, 1) the newest token, the next step's input
        self.position = torch.zeros(batch, 1, **long)  # (B, 1) its position
        self.unfinished = torch.ones(batch, dtype=torch.bool, device=device)  # (B,)
        self.eos = torch.zeros(eos_count, **long)  # (E,)
        self.pad: int | None = None
        self.out = torch.zeros(batch, capacity, **long)  # (B, capacity) the generated tokens
        self.count = torch.zeros(1, **long)  # tokens in `out`
        self.all_finished = torch.zeros((), dtype=torch.bool, pin_memory=device.type == "cuda")  # a lagged answer
        if hasattr(torch, "_dynamo"):
            for t in (self.token, self.position, self.unfinished, self.eos, self.out, self.count):
                torch._dynamo.mark_static_address(t)

    @classmethod
    def for_cache(cls, kv: StaticCache, batch: int, eos: torch.Tensor) -> GreedyState:
        """The state kept with `kv` when it fits this call (its batch, the cache's length, as many EOS ids)."""
        state = _STATES.get(kv)
        if state is None or state.out.shape[0] != batch or state.eos.numel() != eos.numel():
            state = _STATES[kv] = cls(batch, kv.max_len, eos.numel(), eos.device)
        return state

    def start(self, logits: torch.Tensor, position: torch.Tensor, eos: torch.Tensor, pad: int | None) -> None:
        """Refill for a call: the first new token from the prefill's `logits` (B, V) at `position` (B, 1)."""
        self.eos.copy_(eos)
        self.pad = pad
        self.unfinished.fill_(True)
        first = logits.argmax(-1)  # (B,)
        if len(eos):
            first = finish_rows(first, self.unfinished, self.eos, pad)
        self.out[:, 0] = first
        self.token.copy_(first[:, None])
        self.position.copy_(position)
        self.count.fill_(1)


class FinishedCheck:
    """"Has every row finished?", answered at once (a read-back) or, `lagged`, as it stood at the call before
    (False at the first call): each call then queues its own answer behind the steps and reads the last one's."""

    def __init__(self, state: GreedyState, lagged: bool):
        self.state, self.lagged, self.asked = state, lagged, False
        self.answered: torch.cuda.Event | None = None  # recorded after the last call's answer (CUDA)

    def __call__(self) -> bool:
        unfinished, flag = self.state.unfinished, self.state.all_finished
        if not self.lagged:
            return not bool(unfinished.any())
        answer = False
        if self.asked:
            if self.answered is not None:
                self.answered.synchronize()  # the steps up to the last call; those after it stay queued
            answer = bool(flag)
        flag.copy_(~unfinished.any(), non_blocking=True)
        if unfinished.is_cuda:
            self.answered = torch.cuda.Event()
            self.answered.record()
        self.asked = True
        return answer


_STATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # StaticCache → its GreedyState


def greedy_step(model, state: GreedyState, kv: StaticCache) -> None:
    """Decode `state.token` at the next position, append the argmax to `state.out` and make it the next input."""
    state.position.add_(1)
    logits = decode_static(model, state.token, state.position, kv)  # (B, V) float32
    token = split_argmax(logits, ARGMAX_CHUNK) if SPLIT_ARGMAX else logits.argmax(-1)  # (B,)
    if len(state.eos):
        token = finish_rows(token, state.unfinished, state.eos, state.pad)
    state.out.index_copy_(1, state.count, token[:, None])
    state.count.add_(1)
    state.token.copy_(token[:, None])


def greedy_static(model, logits: torch.Tensor, kv: StaticCache, position: torch.Tensor, eos: torch.Tensor,
                  pad: int | None, new_tokens: int, compile: bool) -> torch.Tensor:  # (B, ≤ new_tokens)
    """The new tokens after a static prefill: `logits` (B, V) its last position's, `position` (B, 1) that
    position; stops after `new_tokens` or once every row has produced an EOS, finished rows padded with `pad`."""
    state = GreedyState.for_cache(kv, logits.shape[0], eos)
    state.start(logits, position, eos, pad)
    step = compiled_step(greedy_step, logits.device, compile)
    finished = FinishedCheck(state, LAGGED_EOS_CHECK)
    done = 1
    while done < new_tokens:
        if len(eos) and done % EOS_CHECK_EVERY == 0 and finished():
            break
        step(model, state, kv)
        done += 1
    out = state.out[:, :done]
    if len(eos) and not bool(state.unfinished.any()):  # cut after the last row's EOS, where the token loop stops
        out = out[:, : last_finish(out, eos) + 1]
    return out.clone()  # the state's buffer is refilled by the next call
