"""Decoding as free functions around a pure model (gpt-fast's shape): prefill, decode_one_token, generate_tokens.

The model never loops; these functions own the KV cache, the growing attention mask and the positions,
so a static cache + a compiled `decode_one_token` can replace the dynamic pieces without touching the model.
Positions follow transformers' generate: for a left-padded row, position = (number of real tokens so far) - 1,
pads at 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from ..models.decoder import KVCache


@dataclass(frozen=True)
class GenerationConfig:
    """The generation_config.json fields we use, with transformers' defaults."""

    max_new_tokens: int | None = None
    max_length: int | None = None  # total length (prompt + new); None: 20 new tokens, as transformers
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    @classmethod
    def for_model(cls, model) -> "GenerationConfig":
        """The model directory's generation_config.json if any, else the model config's special tokens."""
        config = model.config
        base = cls(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
        source = getattr(model, "source_dir", None)
        path = Path(source) / "generation_config.json" if source else None
        if path is not None and path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            base = replace(base, **{k: v for k, v in raw.items() if k in known and v is not None})
        return base


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:  # (B, S)
    """Real tokens counted from 0 in each row; pads at 0 (transformers' generate)."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


def prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:  # (B, V)
    """Run the prompt once, filling the cache; the last position's logits in float32."""
    out = model(input_ids, attention_mask, position_ids_from_mask(attention_mask), cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float()


def decode_one_token(model, token: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                     cache: KVCache) -> torch.Tensor:  # (B, V)
    """One step: token (B, 1) at position_ids (B, 1), attention_mask (B, S+1) over cache + token."""
    out = model(token, attention_mask, position_ids, cache, use_cache=True)
    return out.logits[:, -1].float()


def process_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float = 1.0) -> torch.Tensor:  # (B, V)
    """transformers' warpers in their order: temperature → top-k → top-p (masked to -inf)."""
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k)[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, -float("inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative <= (1 - top_p)
        drop[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    return logits


def next_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float,
               generator: torch.Generator | None) -> torch.Tensor:  # (B,)
    if not do_sample:
        return logits.argmax(-1)
    probs = process_logits(logits, temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def generate_tokens(
    model,
    input_ids: torch.Tensor,  # (B, T), left-padded
    attention_mask: torch.Tensor | None = None,  # (B, T)
    max_new_tokens: int | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    generation_config: GenerationConfig | None = None,
) -> torch.Tensor:  # (B, T + new): the prompt and the new tokens, finished rows padded with pad_token_id
    """Greedy (or sampled) decoding with a KV cache; unset arguments come from generation_config.json."""
    gc = generation_config or GenerationConfig.for_model(model)
    pick = lambda value, default: default if value is None else value
    max_new_tokens = pick(max_new_tokens, gc.max_new_tokens)
    if max_new_tokens is None:  # transformers: generation_config's max_length, else 20 new tokens within max positions
        T = input_ids.shape[1]
        limit = gc.max_length if gc.max_length is not None else min(T + 20, getattr(model.config, "max_position_embeddings", T + 20))
        max_new_tokens = max(limit - T, 0)
    eos = pick(eos_token_id, gc.eos_token_id)
    eos = torch.tensor([] if eos is None else [eos] if isinstance(eos, int) else list(eos), device=input_ids.device)
    pad = pick(pad_token_id, gc.pad_token_id)
    if pad is None and len(eos):
        pad = int(eos[0])
    sampling = (pick(do_sample, gc.do_sample), pick(temperature, gc.temperature), pick(top_k, gc.top_k), pick(top_p, gc.top_p))
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if max_new_tokens == 0:
        return input_ids

    cache = KVCache()
    with torch.inference_mode():
        logits = prefill(model, input_ids, attention_mask, cache)
        position = position_ids_from_mask(attention_mask)[:, -1:]  # (B, 1)
        unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tokens = [input_ids]
        for step in range(max_new_tokens):
            token = next_token(logits, *sampling, generator)  # (B,)
            if pad is not None:
                token = torch.where(unfinished, token, torch.full_like(token, pad))
            tokens.append(token[:, None])
            unfinished &= ~torch.isin(token, eos)
            if not bool(unfinished.any()) or step == max_new_tokens - 1:
                break
            attention_mask = torch.cat((attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)), dim=1)
            position = position + 1
            logits = decode_one_token(model, token[:, None], attention_mask, position, cache)
    return torch.cat(tokens, dim=1)
