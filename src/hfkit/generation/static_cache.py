"""A preallocated KV cache with fixed shapes, so one decode step can be captured whole (gpt-fast's static cache).

Per layer, keys and values live in (B, nkv, max_len, D) buffers written in place (`index_copy_`) at the step's cache
positions, a device tensor; the number of filled slots is a device counter too, so a decode step reads nothing back
to the host. It implements the decoder's cache interface (`update(layer, k, v)` → the keys/values attention reads;
`seq_length()`) without touching the model:

- `seq_length()` reports `max_len - n` for a step of n new tokens, so the decoder's `causal_mask` spans all max_len
  slots (fixed shape) and places the step's queries on the last n of them.
- the keys go to attention "newest last" (the buffers rolled by `index_select` at a device index) when the step has
  several tokens (a prefill, speculative candidates) or the model has sliding-window layers, else in slot order,
  where a one-token step's causal and window clauses are all-true anyway. The (B, max_len) key mask from
  `key_mask()` is in the same order: the dynamic cache's left-padded mask, left-padded again with the slots not yet
  written. So every query sees exactly the keys it sees with the dynamic cache (extra keys are masked), and windows
  keep counting cache slots, as there.

The loop owns the order of calls: `start(attention_mask)` before the prefill, `advance(n)` before each decode step
(inside the compiled step), `crop(length)` after a speculative step. See `prefill_static`, `decode_static` and
`verify_static`.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from ..models.decoder import head_dim_of, layer_windows
from .steps import decode_one_token, position_ids_from_mask


class StaticCache:
    def __init__(self, model_config, batch: int, max_len: int, dtype: torch.dtype, device: torch.device | str):
        n, nkv, D = model_config.num_hidden_layers, model_config.num_key_value_heads, head_dim_of(model_config)
        buffer = lambda: torch.zeros(batch, nkv, max_len, D, dtype=dtype, device=device)
        self.keys = [buffer() for _ in range(n)]  # (B, nkv, L, D) each, slot i = the i-th token of the row
        self.values = [buffer() for _ in range(n)]
        self.mask = torch.zeros(batch, max_len, dtype=torch.long, device=device)  # slot order; 1 = a real token
        self.filled = torch.zeros(1, dtype=torch.long, device=device)  # slots written so far
        self.slots = torch.arange(max_len, device=device)
        self.cache_position = self.slots[:0]  # (n,) the slots of the current step
        self.order: torch.Tensor | None = None  # (L,) slot shown at each key index, None: slot order
        self.windowed = any(w is not None for w in layer_windows(model_config))
        self.max_len, self.step = max_len, 0
        self.counts = torch.zeros(batch * nkv, dtype=torch.int32, device=device)  # decode_step's, kept at zero
        if hasattr(torch, "_dynamo"):  # fixed addresses: CUDA graphs may mutate them in place
            for t in (*self.keys, *self.values, self.mask, self.filled, self.slots, self.counts):
                torch._dynamo.mark_static_address(t)

    # --- the decoder's interface -----------------------------------------------------------------------------
    def seq_length(self) -> int:
        return self.max_len - self.step

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(2, self.cache_position, k.to(keys.dtype))
        values.index_copy_(2, self.cache_position, v.to(values.dtype))
        if self.order is None:
            return keys, values
        return keys.index_select(2, self.order), values.index_select(2, self.order)  # newest last

    def in_place(self, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(keys, values, slot, counts) for a one-token step in slot order: a kernel may write the step's key and
        value at `slot` (1,) itself (decode_attention.decode_step, which also counts its programs in `counts` and
        leaves them at zero) in place of `update`; None for other steps."""
        if self.step != 1 or self.order is not None:
            return None
        return self.keys[layer], self.values[layer], self.cache_position, self.counts

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index`, in place (beam search)."""
        for t in (*self.keys, *self.values, self.mask):
            t.copy_(t.index_select(0, index))

    # --- the loop's side -------------------------------------------------------------------------------------
    def start(self, attention_mask: torch.Tensor) -> None:  # (B, T) the prompt's mask
        """Prepare the prefill: the prompt fills slots 0…T-1."""
        T = attention_mask.shape[1]
        if T > self.max_len:
            raise ValueError(f"prompt of {T} tokens does not fit a static cache of {self.max_len}")
        self.filled.zero_()
        self.mask.zero_()
        self.mask[:, :T] = attention_mask
        self._at(T, rolled=True)

    def advance(self, n: int = 1) -> None:
        """Prepare a decode step of n tokens (fixed shapes, device tensors only): the next n slots hold real tokens.
        Steps of several tokens (speculative decoding's candidates) see the keys newest last, as a prefill."""
        self._at(n, rolled=self.windowed or n > 1)
        self.mask.index_fill_(1, self.cache_position, 1)

    def ready(self, n: int) -> None:
        """The state a compiled step of n tokens starts from, the same at every call so that it stays one graph:
        `step` n, the keys in slot order, except that a one-token step of a windowed model keeps its rolled order."""
        self.step = n
        if n > 1 or not self.windowed:
            self.order = None

    def crop(self, length: int) -> None:
        """Keep the first `length` slots; later ones are free again and masked (rejected speculative candidates)."""
        self.filled.fill_(length)
        self.mask[:, length:] = 0

    def _at(self, n: int, rolled: bool) -> None:
        self.step = n
        self.cache_position = self.filled + self.slots[:n]  # (n,)
        self.order = (self.slots + self.filled + n) % self.max_len if rolled else None  # newest slot last
        self.filled.add_(n)

    def key_mask(self) -> torch.Tensor:  # (B, L) in the order `update` returns keys
        return self.mask if self.order is None else self.mask.index_select(1, self.order)


# model → its kept cache, as the decoded model and as a speculative draft (the same model may be both at once)
_KEPT: dict[bool, weakref.WeakKeyDictionary] = {False: weakref.WeakKeyDictionary(), True: weakref.WeakKeyDictionary()}


def static_cache_for(model, batch: int, max_len: int, dtype: torch.dtype, device: torch.device,
                     draft: bool = False) -> StaticCache:
    """The model's last static cache when it fits — the same batch, dtype and device, and at least `max_len` slots,
    as transformers reuses its static cache: fixed buffer addresses and shapes, so captured CUDA graphs replay across
    generate calls of different lengths instead of re-recording or recompiling; extra slots stay masked —, else a
    new one, kept for the next call. draft: the one it keeps as a speculative draft model, apart."""
    caches = _KEPT[draft]
    kept = caches.get(model)
    key = (batch, dtype, torch.device(device))
    if kept is None or kept[0] != key or kept[1].max_len < max_len:
        kept = caches[model] = (key, StaticCache(model.config, batch, max_len, dtype, device))
    return kept[1]


def prefill_static(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: StaticCache) -> torch.Tensor:  # (B, V)
    """Run the prompt into slots 0…T-1; the last position's logits in float32."""
    cache.start(attention_mask)
    out = model(input_ids, cache.key_mask(), position_ids_from_mask(attention_mask), cache, use_cache=True, logits_to_keep=1)
    cache.ready(1)
    return out.logits[:, -1].float()


def decode_static(model, token: torch.Tensor, position_ids: torch.Tensor, cache: StaticCache) -> torch.Tensor:  # (B, V)
    """One fixed-shape step: token (B, 1) at position_ids (B, 1) into the next slot. What `compile=True` captures."""
    cache.advance()
    return decode_one_token(model, token, cache.key_mask(), position_ids, cache)


def verify_static(model, tokens: torch.Tensor, position_ids: torch.Tensor, cache: StaticCache) -> torch.Tensor:
    """A fixed-shape step of several tokens (1, n) at position_ids (1, n) into the next n slots: every position's
    logits (1, n, V) in float32 (speculative decoding's check of n - 1 candidates)."""
    cache.advance(tokens.shape[1])
    return model(tokens, cache.key_mask(), position_ids, cache, use_cache=True).logits.float()


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


# model → {(step, options): its compiled form that worked, or the step itself after compile failures}: a failure on
# one model (or under one kernel switch) leaves other models' steps compiled
_CHOSEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FORMS: dict = {}  # (step, options) → its compiled forms, fullgraph=True first, then with graph breaks (all models)
# mode="reduce-overhead" (CUDA graphs) plus gpt-fast's coordinate-descent tuning of the generated kernels: on the H100
# a Llama-1B-shaped bf16 step went from 1.66 to 1.36 ms (benchmarks/explore/decode_step.py). Combo kernels (inductor's
# independent kernels fused side by side: the step's bookkeeping at both ends): once every kernel of a layer was
# hfkit's, 907 against 889 and 908 against 892 tok/s in two processes on an H100 (twenty-fifth session; on the
# step of the third session, bf16 1.325 → 1.364 ms). Tried and left off: programmatic dependent launch of inductor's
# kernels (int8 1.294 ms; with nn.matvec's kernels as dependent launches, matvec.PDL, within noise; with combo
# kernels 904 against 907 tok/s)
STEP_OPTIONS = {"triton.cudagraphs": True, "coordinate_descent_tuning": True, "combo_kernels": True}


def compiled_step(step, device: torch.device, compile: bool = True):
    """`step(model, ...)` under torch.compile with CUDA graphs (STEP_OPTIONS) on CUDA; `step` itself without
    `compile`, and after one warning off CUDA or if compiling fails for that model. Tries fullgraph=True first, then
    allows graph breaks; the choice is kept per model."""
    if not compile:
        return step
    if device.type != "cuda":
        warn_once("compile=True needs CUDA (CUDA graphs); decoding uncompiled.")
        return step

    def run(model, *args):
        key = (step, tuple(sorted(STEP_OPTIONS.items())))  # other options (an A/B run): compiled afresh
        chosen = _CHOSEN.setdefault(model, {})
        if chosen.get(key) is step:
            return step(model, *args)
        if key not in _FORMS:
            _FORMS[key] = [torch.compile(step, options=STEP_OPTIONS, fullgraph=True),
                           torch.compile(step, options=STEP_OPTIONS, fullgraph=False)]
        tries = [chosen[key]] if key in chosen else _FORMS[key]
        for i, fn in enumerate(tries):
            try:
                torch.compiler.cudagraph_mark_step_begin()
                with torch.device(device):  # tensors the model makes (RoPE tables) born on the GPU: no host copies
                    out = fn(model, *args)
                chosen[key] = fn
                return out
            except Exception as error:  # noqa: BLE001 — any compiler failure falls back
                what = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                if i + 1 < len(tries):
                    warn_once(f"torch.compile(fullgraph=True) failed ({what}); compiling with graph breaks.")
                else:
                    warn_once(f"torch.compile failed ({what}); decoding uncompiled.")
        chosen[key] = step
        return step(model, *args)

    return run
