"""The model-facing steps (gpt-fast's shape): prefill the prompt, then one token at a time through the cache.

These functions own the KV cache, the growing attention mask and the positions, so a static cache + a compiled
`decode_one_token` can replace the dynamic pieces without touching the model. Positions follow transformers'
generate: for a left-padded row, position = (number of real tokens so far) - 1, pads at 0.
"""

from __future__ import annotations

import torch

from ..models.decoder import KVCache


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
