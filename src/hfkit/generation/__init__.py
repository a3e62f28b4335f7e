"""Generation as free functions around a pure decoder: prefill, one decode step, the loop, sampling."""

from .decode import GenerationConfig, decode_one_token, generate_tokens, position_ids_from_mask, prefill

__all__ = ["GenerationConfig", "decode_one_token", "generate_tokens", "position_ids_from_mask", "prefill"]
