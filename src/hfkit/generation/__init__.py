"""Generation as free functions around a pure decoder: prefill, one decode step, the loop (greedy, sampled or
beam search), logits processors and stopping criteria with transformers' semantics."""

from .config import GenerationConfig
from .decode import generate_tokens
from .steps import decode_one_token, position_ids_from_mask, prefill

__all__ = ["GenerationConfig", "decode_one_token", "generate_tokens", "position_ids_from_mask", "prefill"]
