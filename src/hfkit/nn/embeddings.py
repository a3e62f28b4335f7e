"""Token + position (+ token-type) embeddings followed by LayerNorm, as BERT-style encoders use them."""

from __future__ import annotations

import torch
from torch import nn


def padding_offset_positions(input_ids: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """RoBERTa positions: count non-pad tokens from padding_idx + 1; pads keep padding_idx. (B, T) → (B, T)"""
    keep = input_ids.ne(padding_idx).int()
    return torch.cumsum(keep, dim=1).type_as(keep) * keep + padding_idx


class TokenEmbeddings(nn.Module):
    """word + position [+ token type] → LayerNorm → dropout. Names match the BERT checkpoint keys."""

    def __init__(self, config, position_style: str, dim: int):
        super().__init__()
        pad = config.pad_token_id
        self.position_style = position_style
        self.word_embeddings = nn.Embedding(config.vocab_size, dim, padding_idx=pad)
        pos_pad = pad if position_style == "padding_offset" else None
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, dim, padding_idx=pos_pad)
        if config.type_vocab_size > 0:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        position_ids: torch.Tensor | None = None,  # (B, T)
    ) -> torch.Tensor:  # (B, T, H)
        if position_ids is None:
            if self.position_style == "padding_offset":
                position_ids = padding_offset_positions(input_ids, self.position_embeddings.padding_idx)
            else:
                position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        x = self.word_embeddings(input_ids)  # summed in transformers' order: float addition is not associative
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))
