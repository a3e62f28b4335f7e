"""Phi-3: the shared decoder with fused projections.

    phi3  one `self_attn.qkv_proj` (q | k | v) and one `mlp.gate_up_proj` (gate | up), held fused as the checkpoint
          stores them and their outputs split (`Projections.FUSED`); every layer attends within `sliding_window`
          (when set); RoPE on head_dim · partial_rotary_factor features (`rope_parameters`), incl. `longrope`
          (Phi-3 128k, Phi-3.5: short/long factors around original_max_position_embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

from .decoder import DecoderLayout, Projections
from .llama import DecoderConfig, family


@dataclass(frozen=True)
class Phi3Config(DecoderConfig):
    model_type = "phi3"

    vocab_size: int = 32064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    eos_token_id: int | list[int] | None = 32000
    pad_token_id: int | None = 32000
    resid_pdrop: float | int = 0.0
    embd_pdrop: float | int = 0.0
    sliding_window: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if "partial_rotary_factor" not in self.rope_parameters:  # transformers' Phi3Config always writes it
            self.set("rope_parameters", {**self.rope_parameters, "partial_rotary_factor": 1.0})


PHI3 = family("phi3", Phi3Config, "Phi3", DecoderLayout(projections=Projections.FUSED), sliding_window=5)
