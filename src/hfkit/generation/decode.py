"""The decode loop: greedy or sampled (with processors and stopping criteria), or beam search when num_beams > 1.

Options are generation_config.json's field names; an argument overrides the model's generation_config.json,
which overrides transformers' defaults. Token-identical to transformers' `generate` for the same options.
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.decoder import KVCache
from .beam import beam_search
from .config import GenerationConfig
from .greedy_static import finish_rows, greedy_static, last_finish
from .processors import mark_seen, next_token, process, seen_tokens
from .speculative import check_speculative, speculates, speculative_decode
from .static_cache import compiled_step, decode_static, prefill_static, static_cache_for, warn_once
from .steps import decode_one_token, position_ids_from_mask, prefill
from .stopping import StopStrings

__all__ = ["GenerationConfig", "decode_one_token", "generate_tokens", "position_ids_from_mask", "prefill"]

# SAMPLED_EOS_CHECK_EVERY: tokens between the sampled (or processed) loop's "every row finished?" read-backs with an
# EOS. Each read-back waits for the GPU's queue to drain, and the GPU then idles while the host processes the logits
# and issues the next step; so the loop reads back every 16 tokens, as greedy_static.EOS_CHECK_EVERY does for the
# greedy step, and cuts off the steps run past the last row's EOS, their draws undone (`DrawStates`). Top-k sampling
# of the Llama-3.2-1B shape on an H100: 705 against 578 tok/s checking every token, tokens and generator states
# equal (RESULTS.md, twenty-fifth session). By device type; elsewhere every token, as transformers (a CPU's
# read-back costs nothing, extra steps would). Stop strings are matched every token regardless.
SAMPLED_EOS_CHECK_EVERY = {"cuda": 16}


def generate_tokens(
    model,
    input_ids: torch.Tensor,  # (B, T), left-padded
    attention_mask: torch.Tensor | None = None,  # (B, T)
    generation_config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    tokenizer: Any = None,  # needed for stop_strings only
    assistant_model: Any = None,  # a smaller causal LM of the same vocabulary: speculative decoding
    cache: str = "dynamic",  # "static": a preallocated StaticCache of prompt + max_new_tokens slots (greedy/sampling)
    compile: bool | None = None,  # static cache: the decode step under torch.compile(mode="reduce-overhead");
    # None: on CUDA, as transformers compiles its static cache by default

    **options: Any,  # GenerationConfig fields: max_new_tokens, do_sample, top_k, num_beams, stop_strings, …
) -> torch.Tensor:  # (B · num_return_sequences, T + new): prompt + new tokens, finished rows padded
    """Decode with a KV cache; unset options come from generation_config.json, then transformers' defaults."""
    unknown = set(options) - set(GenerationConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"Unknown generation options: {sorted(unknown)}")
    if cache not in ("dynamic", "static"):
        raise ValueError(f"cache must be 'dynamic' or 'static', not {cache!r}")
    if compile is None:
        compile = cache == "static" and input_ids.is_cuda
    gc = (generation_config or GenerationConfig.for_model(model)).updated(**options)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    max_length, min_length = gc.length_bounds(input_ids.shape[1], getattr(model.config, "max_position_embeddings", None))
    eos = torch.tensor(gc.eos_list(), dtype=torch.long, device=input_ids.device)
    pad = gc.pad_token_id if gc.pad_token_id is not None else (int(eos[0]) if len(eos) else None)
    stop = None
    if gc.stop_strings:
        if tokenizer is None:
            raise ValueError("stop_strings need the model's tokenizer: pass tokenizer= to generate_tokens.")
        stop = StopStrings(tokenizer, gc.stop_strings)
    speculative = speculates(assistant_model, gc.prompt_lookup_num_tokens)
    if speculative:
        check_speculative(model, assistant_model, gc, input_ids.shape[0] * gc.num_return_sequences)
    with torch.inference_mode():
        if gc.num_beams > 1:
            if cache == "static":
                warn_once("cache='static' is not used by beam search; it decodes with the dynamic cache.")
            return beam_search(model, input_ids, attention_mask, gc, max_length, min_length, eos, pad, stop, generator)
        if gc.num_return_sequences > 1:  # transformers expands the batch: each prompt's copies adjacent
            input_ids = input_ids.repeat_interleave(gc.num_return_sequences, 0)
            attention_mask = attention_mask.repeat_interleave(gc.num_return_sequences, 0)
        if max_length <= input_ids.shape[1]:
            return input_ids
        if speculative:
            return speculative_decode(model, input_ids, attention_mask, gc, max_length, min_length, eos, stop,
                                      generator, assistant_model, cache, compile)
        return sample(model, input_ids, attention_mask, gc, max_length, min_length, eos, pad, stop, generator,
                      cache, compile)


def plain_greedy(gc: GenerationConfig, stop: StopStrings | None, eos_suppressed: bool) -> bool:
    """Greedy with no processor or stop string acting at any step: the whole token step can run on the device."""
    return not gc.do_sample and gc.repetition_penalty == 1.0 and stop is None and not eos_suppressed


def sample(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, gc: GenerationConfig, max_length: int,
           min_length: int, eos: torch.Tensor, pad: int | None, stop: StopStrings | None,
           generator: torch.Generator | None, cache: str = "dynamic", compile: bool = False) -> torch.Tensor:  # (B, T + new)
    """Greedy or multinomial decoding until max_length, EOS or a stop string in every row."""
    position = position_ids_from_mask(attention_mask)[:, -1:]  # (B, 1)
    if cache == "static":
        dtype = next(model.parameters()).dtype
        kv = static_cache_for(model, input_ids.shape[0], max_length, dtype, input_ids.device)
        logits = prefill_static(model, input_ids, attention_mask, kv)  # (B, V)
        if plain_greedy(gc, stop, len(eos) > 0 and min_length > input_ids.shape[1]):
            new = greedy_static(model, logits, kv, position, eos, pad, max_length - input_ids.shape[1], compile)
            return torch.cat((input_ids, new), dim=1)
        step = compiled_step(decode_static, input_ids.device, compile)
        decode = lambda token, mask, position: step(model, token, position, kv)
    else:
        if compile:
            warn_once("compile=True needs cache='static'; decoding uncompiled.")
        kv = KVCache()
        logits = prefill(model, input_ids, attention_mask, kv)  # (B, V)
        decode = lambda token, mask, position: decode_one_token(model, token, mask, position, kv)
    seen = seen_tokens(input_ids, attention_mask, logits.shape[-1]) if gc.repetition_penalty != 1.0 else None
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens = [input_ids]
    every = SAMPLED_EOS_CHECK_EVERY.get(input_ids.device.type, 1) if stop is None else 1
    draws = DrawStates(generator, input_ids.device, gc.do_sample and len(eos) > 0 and every > 1)
    for length in range(input_ids.shape[1], max_length):  # `length` tokens so far
        token = next_token(process(logits, gc, seen, eos, length, min_length), gc.do_sample, generator)  # (B,)
        draws.keep()
        if len(eos):  # transformers pads finished rows only when an EOS criterion exists; without one, no kernels
            token = finish_rows(token, unfinished, eos, pad)
        tokens.append(token[:, None])
        if stop is not None:
            unfinished &= ~stop(torch.cat(tokens[-stop.window:], dim=1))
        # a read-back (a sync) only with an EOS or stop strings, every `every` new tokens
        checks = (len(eos) or stop is not None) and (length + 1 - input_ids.shape[1]) % every == 0
        if length + 1 == max_length or (checks and not bool(unfinished.any())):
            break
        if checks:
            draws.clear()
        if seen is not None:
            seen = mark_seen(seen, token)
        if cache != "static":  # the static cache keeps its own fixed-shape mask
            attention_mask = torch.cat((attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)), dim=1)
        position = position + 1
        logits = decode(token[:, None], attention_mask, position)
    out = torch.cat(tokens, dim=1)
    if every > 1 and len(eos) and not bool(unfinished.any()):  # cut where the token-by-token loop stopped
        last = last_finish(out[:, input_ids.shape[1]:], eos)
        draws.back_to(last)
        out = out[:, : input_ids.shape[1] + last + 1]
    return out


class DrawStates:
    """The sampling generator's state after each draw since the last EOS check (`keep`), so that the draws of steps
    run past the last row's EOS can be undone (`back_to`): the generator ends as the token-by-token loop leaves it.
    Inactive (no state kept) for greedy decoding, without an EOS or with a check every token."""

    def __init__(self, generator: torch.Generator | None, device: torch.device, active: bool):
        if active and generator is None:  # torch.multinomial's default: the device's generator
            cuda = device.type == "cuda"
            index = device.index if device.index is not None else torch.cuda.current_device() if cuda else 0
            generator = torch.cuda.default_generators[index] if cuda else torch.default_generator
        self.generator = generator if active else None
        self.states: list[torch.Tensor] = []  # after the draws of steps drawn - len(states) … drawn - 1
        self.drawn = 0

    def keep(self) -> None:
        if self.generator is not None:
            self.states.append(self.generator.get_state())
        self.drawn += 1

    def clear(self) -> None:
        self.states.clear()

    def back_to(self, step: int) -> None:
        """The state after step `step`'s draw (0: the first new token's; a step since the last check)."""
        if self.generator is not None:
            self.generator.set_state(self.states[step - (self.drawn - len(self.states))])
