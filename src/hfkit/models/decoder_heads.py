"""Decoder heads, written once for every decoder family: next-token prediction and last-token classification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import matvec
from ..nn.linear_cross_entropy import linear_cross_entropy
from .base import PreTrainedModel, place
from .decoder import KVCache
from .heads import sequence_classification_loss


@dataclass(frozen=True)
class CausalLM:
    """Next-token head: `lm_head` (tied to `model.embed_tokens` when `tie_word_embeddings`)."""

    out: str = "lm_head"


@dataclass(frozen=True)
class LastTokenClassifier:
    """Sequence classification on the last non-pad token (`score`, no bias), as transformers' Generic head."""

    out: str = "score"


# Outputs, with transformers' field names.
@dataclass
class CausalLMOutputWithPast:
    logits: torch.Tensor | None  # (B, T, V); None when the loss was computed chunked (DecoderForCausalLM.chunked_loss)
    loss: torch.Tensor | None = None
    past_key_values: "KVCache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutputWithPast:
    logits: torch.Tensor  # (B, num_labels)
    loss: torch.Tensor | None = None
    past_key_values: "KVCache | None" = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class DecoderHeadModel(PreTrainedModel):
    """A decoder backbone under the family's prefix (`model`, GPT-2's `transformer`) plus one head's parts."""

    task: str

    def __init__(self, config):
        super().__init__(config)
        self.layout = self.family.heads[self.task]
        backbone = place(self, self.family.base_prefix, self.family.base_class(config, family=self.family))
        self.__dict__["model"] = self.__dict__["backbone"] = backbone

    def place_head(self, name: str, module: nn.Module) -> nn.Module:
        self.new_on_base = (*self.new_on_base, name)
        self.add_module(name, module)
        return module


class DecoderForCausalLM(DecoderHeadModel):
    task = "causal-lm"
    # True: given labels, the loss comes from the hidden states chunk by chunk (nn/linear_cross_entropy.py) and the
    # output's logits are None: the (B, T, V) logits are never built, for training memory (Llama-3-shaped B8 × S1024
    # eager: 12.6 → 5.6 GB at 2048-row chunks, +12 % time; torch.compile's plain loss is as small and faster).
    # A head that is not a plain nn.Linear (LoRA- or int8-wrapped) keeps the plain loss.
    chunked_loss: bool = False

    def __init__(self, config):
        super().__init__(config)
        self.__dict__["lm_head"] = self.place_head(self.layout.out, nn.Linear(config.hidden_size, config.vocab_size, bias=False))
        self.tie_weights()

    def tied_weights(self) -> dict[str, str]:
        source = f"{self.family.base_prefix}.{self.family.input_embeddings}.weight"
        return {f"{self.layout.out}.weight": source} if self.config.tie_word_embeddings else {}

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, labels=None,
                use_cache: bool = False, output_hidden_states: bool = False, inputs_embeds=None,
                logits_to_keep: int = 0) -> CausalLMOutputWithPast:
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, use_cache, output_hidden_states, inputs_embeds)
        h = out.last_hidden_state[:, -logits_to_keep:] if logits_to_keep else out.last_hidden_state
        cap = getattr(self.config, "final_logit_softcapping", None)  # Gemma 2
        if labels is not None and self.chunked_loss and type(self.lm_head) is nn.Linear:
            targets = shifted_labels(labels).reshape(-1).to(h.device)  # (B·T,)
            loss = linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm_head.weight, targets, softcap=cap)
            return CausalLMOutputWithPast(None, loss, out.past_key_values, out.hidden_states)
        logits = matvec.linear(self.lm_head, h)  # (B, T, V)
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return CausalLMOutputWithPast(logits, loss, out.past_key_values, out.hidden_states)

    def generate(self, prompts, max_new_tokens: int | None = None, **sampling):
        """Continue text: a str for one prompt, a list for a list (greedy unless do_sample=True)."""
        from ..tasks.generate import generate_text

        return generate_text(self, self.tokenizer, prompts, max_new_tokens=max_new_tokens, **sampling)

    def chat(self, messages, max_new_tokens: int | None = None, stream: bool = False, **kwargs):
        """Reply to a conversation with the tokenizer's chat template: a str, or with stream=True text pieces."""
        from ..tasks.chat import chat

        return chat(self, self.tokenizer, messages, max_new_tokens=max_new_tokens, stream=stream, **kwargs)


def shifted_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:  # (B, T)
    """Token t's target is label t+1 (labels are the inputs, unshifted); the last position has none."""
    return F.pad(labels, (0, 1), value=ignore_index)[:, 1:]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy of token t's logits against label t+1."""
    shifted = shifted_labels(labels, ignore_index)  # (B, T)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shifted.reshape(-1).to(logits.device),
                           ignore_index=ignore_index)


class DecoderForSequenceClassification(DecoderHeadModel):
    task = "sequence-classification"

    def __init__(self, config):
        super().__init__(config)
        self.__dict__["score"] = self.place_head(self.layout.out, nn.Linear(config.hidden_size, config.num_labels, bias=False))

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, labels=None,
                use_cache: bool = False, output_hidden_states: bool = False, inputs_embeds=None):
        out = self.model(input_ids, attention_mask, position_ids, past_key_values, use_cache, output_hidden_states, inputs_embeds)
        logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        B, T = logits.shape[:2]
        pad = self.config.pad_token_id
        if pad is None and B != 1:
            raise ValueError("Batched sequence classification needs config.pad_token_id to find each row's last token.")
        if pad is None or input_ids is None:
            last = torch.full((B,), T - 1, device=logits.device)
        else:  # the rightmost non-pad token (left or right padding alike)
            keep = (input_ids != pad).to(logits.device, torch.int32)
            last = (torch.arange(T, device=logits.device, dtype=torch.int32) * keep).argmax(-1)
        pooled = logits[torch.arange(B, device=logits.device), last]  # (B, num_labels)
        loss = None if labels is None else sequence_classification_loss(pooled, labels.to(pooled.device), self.config.problem_type)
        return SequenceClassifierOutputWithPast(pooled, loss, out.past_key_values, out.hidden_states)


DECODER_HEADS: dict[str, type[DecoderHeadModel]] = {
    cls.task: cls for cls in (DecoderForCausalLM, DecoderForSequenceClassification)
}


def head_layouts() -> dict[str, Any]:
    """Every decoder family's head layout (transformers' names)."""
    return {"causal-lm": CausalLM(), "sequence-classification": LastTokenClassifier()}
