"""chat: messages in, the assistant's reply out, as transformers' apply_chat_template + generate + decode.

`stream=True` yields the reply in pieces as tokens are produced (see streaming.py); the pieces join to exactly
the non-streamed reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from .batching import TaskInputError, model_device
from .streaming import run_generation, text_pieces, token_stream


def chat(model: Any, tokenizer: Any, messages: list[dict], max_new_tokens: int | None = None, stream: bool = False, *,
         tools: list[dict] | None = None, documents: list[dict] | None = None, chat_template: str | None = None,
         template_kwargs: dict | None = None, skip_special_tokens: bool = True, **sampling: Any) -> str | Iterator[str]:
    """Reply to `messages` ([{"role": "user", "content": "Hi"}, ...]): the new text only, a str, or with stream=True
    an iterator of text pieces. `sampling` takes generate_tokens' options (do_sample, temperature, top_k, top_p,
    eos_token_id, generator, ...); `template_kwargs` are extra chat-template variables (e.g. enable_thinking=False)."""
    prompt = tokenizer.apply_chat_template(messages, tools=tools, documents=documents, chat_template=chat_template,
                                           add_generation_prompt=True, tokenize=False, **(template_kwargs or {}))
    ids = tokenizer.encode(prompt, add_special_tokens=False)  # the template wrote the special tokens already
    if not ids:
        raise TaskInputError("The chat template rendered an empty prompt: there is nothing to reply to.")
    input_ids = torch.tensor([ids], dtype=torch.long, device=model_device(model))
    options = dict(sampling, tokenizer=tokenizer)  # the tokenizer serves stop_strings
    if max_new_tokens is not None:
        options["max_new_tokens"] = max_new_tokens
    if stream:
        return text_pieces(tokenizer, token_stream(model, input_ids, options), skip_special_tokens)
    out = run_generation(model, input_ids, options)
    return tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=skip_special_tokens)
