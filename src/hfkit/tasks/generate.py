"""text-generation: prompts in, continuations out (the new text only), batched with left padding."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ..generation.config import GenerationConfig
from ..generation.decode import generate_tokens
from ..generation.speculative import speculates
from .batching import TaskInputError, as_list, model_device
from .streaming import text_pieces, token_stream


def left_padded(ids: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → (B, T) ids and mask, padded on the left as decoders generate from the right edge."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, tokens in enumerate(ids):
        if tokens:
            input_ids[row, width - len(tokens):] = torch.tensor(tokens)
            mask[row, width - len(tokens):] = 1
    return input_ids.to(device), mask.to(device)


def generate_text(model: Any, tokenizer: Any, prompts: str | Sequence[str], max_new_tokens: int | None = None,
                  skip_special_tokens: bool = True, stream: bool = False, **sampling: Any) -> str | list[str] | Iterator[str]:
    """Continue each prompt; `sampling` takes generate_tokens' options (generation_config.json field names:
    do_sample, temperature, top_k, top_p, min_p, repetition_penalty, num_beams, stop_strings, …, and generator;
    prompt_lookup_num_tokens or assistant_model decode speculatively, one prompt at a time).
    A single prompt gives a str, a list gives a list (num_return_sequences > 1: each prompt's texts in turn);
    `stream=True` (one prompt) gives an iterator of text pieces that join to the same continuation."""
    prompts, single = as_list(prompts, "prompts")
    if len(prompts) > 1 and not stream:  # speculative decoding (the call's, or a generation_config's): one at a time
        gc = sampling.get("generation_config") or GenerationConfig.for_model(model)
        sampling = dict(sampling, generation_config=gc)  # generation_config.json read once, here
        if speculates(sampling.get("assistant_model"), sampling.get("prompt_lookup_num_tokens",
                                                                    gc.prompt_lookup_num_tokens)):
            return [generate_text(model, tokenizer, p, max_new_tokens, skip_special_tokens, **sampling)
                    for p in prompts]
    ids = tokenizer(prompts, padding=False, return_tensors=None)["input_ids"]
    if any(not row for row in ids):
        raise TaskInputError("An empty prompt has no tokens to continue; give at least one token of text.")
    if stream:
        if len(ids) != 1:
            raise TaskInputError(f"stream=True continues one prompt at a time, got {len(ids)}.")
        options = dict(sampling, tokenizer=tokenizer, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {}))
        input_ids = torch.tensor(ids, dtype=torch.long, device=model_device(model))
        return text_pieces(tokenizer, token_stream(model, input_ids, options), skip_special_tokens)
    pad_id = next((t for t in (tokenizer.pad_token_id, model.config.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    input_ids, mask = left_padded(ids, pad_id, model_device(model))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if max_new_tokens is not None:
                sampling["max_new_tokens"] = max_new_tokens
            out = generate_tokens(model, input_ids, mask, pad_token_id=pad_id, tokenizer=tokenizer, **sampling)
    finally:
        model.train(was_training)
    texts = tokenizer.batch_decode(out[:, input_ids.shape[1]:].tolist(), skip_special_tokens=skip_special_tokens)
    return texts[0] if single else texts
