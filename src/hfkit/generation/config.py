"""GenerationConfig: the generation_config.json fields hfkit decodes with, and their resolution for one call."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

# What an explicit None means for fields whose default is not None (transformers: None turns the feature off).
NEUTRAL = dict(do_sample=False, temperature=1.0, top_p=1.0, repetition_penalty=1.0, num_beams=1, length_penalty=1.0,
               early_stopping=False, num_return_sequences=1, max_matching_ngram_size=2, num_assistant_tokens=20,
               num_assistant_tokens_schedule="constant")


@dataclass(frozen=True)
class GenerationConfig:
    """The generation_config.json fields we use, with transformers' effective defaults."""

    max_new_tokens: int | None = None
    max_length: int | None = None  # total length (prompt + new); None: 20 new tokens, as transformers
    min_new_tokens: int | None = None  # EOS suppressed until this many new tokens (wins over min_length)
    min_length: int | None = None  # total length below which EOS is suppressed
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"
    num_return_sequences: int = 1
    stop_strings: str | list[str] | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    # speculative decoding (generation/speculative.py): candidates from prompt lookup or an assistant_model
    prompt_lookup_num_tokens: int | None = None  # candidates per pass from an n-gram lookup in the text so far
    max_matching_ngram_size: int = 2  # the longest n-gram looked up
    num_assistant_tokens: int = 20  # candidates per pass from an assistant_model
    num_assistant_tokens_schedule: str = "constant"  # "heuristic": +2 after a pass that keeps all, else -1
    assistant_confidence_threshold: float | None = 0.4  # the assistant stops proposing below this top probability

    @classmethod
    def for_model(cls, model) -> "GenerationConfig":
        """The model directory's generation_config.json if any, else the model config's special tokens."""
        config = model.config
        base = cls(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
        source = getattr(model, "source_dir", None)
        path = Path(source) / "generation_config.json" if source else None
        if path is not None and path.is_file():
            known = {f.name for f in fields(cls)}
            raw = json.loads(path.read_text(encoding="utf-8"))
            base = replace(base, **{k: v for k, v in raw.items() if k in known and v is not None})
        return base

    def updated(self, **options: Any) -> "GenerationConfig":
        """A copy with `options` set as given, as transformers' generate kwargs: an explicit None overrides
        (`eos_token_id=None`: no EOS; `top_k=None`: no top-k)."""
        return replace(self, **{k: NEUTRAL.get(k) if v is None else v for k, v in options.items()})

    def length_bounds(self, prompt_length: int, max_positions: int | None) -> tuple[int, int]:
        """(max_length, min_length) in total tokens, as transformers' `_prepare_generated_length`."""
        if self.max_new_tokens is not None:
            max_length = prompt_length + self.max_new_tokens
        elif self.max_length is not None:
            max_length = self.max_length
        else:
            max_length = prompt_length + 20
            if max_positions is not None:
                max_length = min(max_length, max_positions)
        if self.min_new_tokens is not None:
            min_length = prompt_length + self.min_new_tokens
        else:
            min_length = self.min_length or 0
        return max_length, min_length

    def eos_list(self) -> list[int]:
        eos = self.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
