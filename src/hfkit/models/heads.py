"""Task heads, written once for every family: the family's layout says where the head's parts sit."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.activations import activation
from .base import PreTrainedModel, place
from .encoder import embedding_dim, layer_norm
from .family import LMPredictor, PooledClassifier, TokenClassifier, TokenScorer
from .outputs import (MaskedLMOutput, PreTrainingOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput,
                      TokenClassifierOutput)


def first_set(config, fields: tuple[str, ...]) -> float:
    """The first of `fields` the config sets (transformers' `classifier_dropout or hidden_dropout_prob`)."""
    return next((v for v in (getattr(config, f, None) for f in fields) if v is not None), 0.0)


class HeadModel(PreTrainedModel):
    """A backbone under the family's prefix (`bert`, `roberta`, …) plus the parts of one task head."""

    task: str

    def __init__(self, config):
        super().__init__(config)
        layout = self.family.heads[self.task]
        self.layout = layout(config) if callable(layout) else layout  # a layout may depend on the config
        pooled = getattr(self.layout, "from_pooler", False)  # only BERT-style classifiers read the pooler
        backbone = self.family.base_class(config, add_pooler=pooled, family=self.family)
        self.add_module(self.family.base_prefix, backbone)
        self.__dict__["backbone"] = backbone

    def place_head(self, path: str, module: Any):
        """Place a head part; its top-level name is what a base checkpoint lacks (freshly initialised)."""
        top = path.split(".")[0]
        if top not in self.new_on_base:
            self.new_on_base = (*self.new_on_base, top)
        return place(self, path, module)

    def compile_layers(self, **options: Any) -> HeadModel:
        """The backbone's `compile_layers` (each encoder layer under torch.compile; opt-in)."""
        self.backbone.compile_layers(**options)
        return self

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, output_hidden_states=False):
        return self.backbone(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)

    def place_transform(self, layout, config, out_dim: int | None = None) -> None:
        """The layout's optional `dense → act → [norm]` block (hidden → out_dim, default hidden)."""
        hidden, out_dim = config.hidden_size, out_dim or config.hidden_size
        dense = self.place_head(layout.dense, nn.Linear(hidden, out_dim, bias=layout.dense_bias)) if layout.dense else None
        norm = self.place_head(layout.norm, layer_norm(config, out_dim)) if layout.norm else None
        self.__dict__["dense"], self.__dict__["norm"] = dense, norm  # placed first: a path may be `dense` itself
        self.act = activation(layout.activation or config.hidden_act)

    def transform(self, x: torch.Tensor) -> torch.Tensor:  # (B, [T,] H) → (B, [T,] out_dim)
        x = self.act(self.dense(x))
        return x if self.norm is None else self.norm(x)


class EncoderForSequenceClassification(HeadModel):
    task = "sequence-classification"

    def __init__(self, config):
        super().__init__(config)
        layout: PooledClassifier = self.layout
        self.place_transform(layout, config)
        self.__dict__["out"] = self.place_head(layout.out, nn.Linear(config.hidden_size, config.num_labels))
        self.dropout = nn.Dropout(first_set(config, layout.dropout_fields))
        first = layout.first_dropout_fields
        self.first_dropout = self.dropout if first is None else nn.Dropout(first_set(config, first))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, output_hidden_states=False):
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        x = out.pooler_output if self.layout.from_pooler else pool(out.last_hidden_state, attention_mask, self.layout.pooling)
        if self.dense is not None:
            x = self.transform(self.first_dropout(x) if self.layout.dropout_first else x)
        logits = self.out(self.dropout(x))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(logits, labels, self.config.problem_type, self.layout.untyped_loss)
        return SequenceClassifierOutput(logits, loss, out.hidden_states)

    def predict(self, texts, top_k: int | None = 1, **kwargs):
        """Classify texts: per text `[{"label", "score"}]`, as the text-classification pipeline."""
        from ..tasks.classify import classify

        return classify(self, self.tokenizer, texts, top_k=top_k, **kwargs)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, T, H) → (B, H): token 0 ("first"), or the mean over the attention mask ("mean")."""
    if how == "first":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return (hidden * attention_mask.unsqueeze(-1)).sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None,
                                 untyped: str = "standard") -> torch.Tensor:
    """transformers' rule: regression for one label, cross-entropy for int labels, BCE otherwise.

    `untyped="soft_targets"` is DeBERTa's rule when problem_type is unset: regression for one label,
    cross-entropy over the rows whose class id is >= 0 for one id per row, soft-target CE for a distribution."""
    num_labels = logits.shape[-1]
    if problem_type is None and untyped == "soft_targets":
        if num_labels == 1:
            return F.mse_loss(logits.view(-1).to(labels.dtype), labels.view(-1))
        if labels.dim() == 1 or labels.size(-1) == 1:
            ids = labels.reshape(-1).long()
            kept = ids >= 0
            if not bool(kept.any()):
                return torch.zeros((), dtype=logits.dtype, device=logits.device)
            return F.cross_entropy(logits[kept].float(), ids[kept])
        return -(F.log_softmax(logits, dim=-1) * labels).sum(-1).mean()
    if problem_type is None:
        integer = labels.dtype in (torch.long, torch.int)
        problem_type = "regression" if num_labels == 1 else "single_label_classification" if integer else "multi_label_classification"
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype)) if num_labels == 1 else F.mse_loss(logits, labels)
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class EncoderForTokenClassification(HeadModel):
    task = "token-classification"

    def __init__(self, config):
        super().__init__(config)
        layout: TokenClassifier = self.layout
        self.place_transform(layout, config)
        self.__dict__["out"] = self.place_head(layout.out, nn.Linear(config.hidden_size, config.num_labels))
        self.dropout = nn.Dropout(first_set(config, layout.dropout_fields))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, output_hidden_states=False):
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        x = out.last_hidden_state if self.dense is None else self.transform(out.last_hidden_state)  # (B, T, H)
        logits = self.out(self.dropout(x))  # (B, T, num_labels)
        loss = None if labels is None else F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return TokenClassifierOutput(logits, loss, out.hidden_states)

    def predict(self, texts, aggregation_strategy: str = "none", **kwargs):
        """Tag entities: the token-classification pipeline's output for each text."""
        from ..tasks.tag import tag

        return tag(self, self.tokenizer, texts, aggregation_strategy=aggregation_strategy, **kwargs)


class EncoderForQuestionAnswering(HeadModel):
    task = "question-answering"

    def __init__(self, config):
        super().__init__(config)
        layout: TokenClassifier = self.layout
        self.place_transform(layout, config)
        self.__dict__["out"] = self.place_head(layout.out, nn.Linear(config.hidden_size, 2))
        self.dropout = nn.Dropout(first_set(config, layout.dropout_fields))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                start_positions=None, end_positions=None, output_hidden_states=False):
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        x = out.last_hidden_state if self.dense is None else self.transform(out.last_hidden_state)  # (B, T, H)
        start, end = self.out(self.dropout(x)).unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start.shape[1]  # positions outside the sequence are ignored, as in transformers
            s, e = start_positions.clamp(0, ignored), end_positions.clamp(0, ignored)
            loss = (F.cross_entropy(start, s, ignore_index=ignored) + F.cross_entropy(end, e, ignore_index=ignored)) / 2
        return QuestionAnsweringModelOutput(start.contiguous(), end.contiguous(), loss, out.hidden_states)

    def answer(self, question, context, **kwargs):
        """Extract the answer span: `{"score", "start", "end", "answer"}` as the QA pipeline."""
        from ..tasks.answer import answer

        return answer(self, self.tokenizer, question, context, **kwargs)


class EncoderForMaskedLM(HeadModel):
    task = "masked-lm"

    def __init__(self, config):
        super().__init__(config)
        layout: LMPredictor = self.layout
        dim, vocab = embedding_dim(config), config.vocab_size
        self.place_transform(layout, config, dim)
        decoder = None  # None: the logits are taken against the word embeddings directly
        if layout.decoder is not None:
            linear = nn.Linear(dim, vocab, bias=layout.bias is None and layout.decoder_bias)
            decoder = self.place_head(layout.decoder, linear)  # placed first: the path may be `decoder` itself
        self.__dict__["decoder"] = decoder
        if layout.bias:
            self.place_head(layout.bias, nn.Parameter(torch.zeros(vocab)))
        self.tie_weights()

    def tied_weights(self) -> dict[str, str]:
        layout, prefix = self.layout, self.family.base_prefix
        if layout.decoder is None:
            return {}
        source = f"{prefix}.{self.family.input_embeddings}.weight"
        ties = {f"{layout.decoder}.weight": source} if self.config.tie_word_embeddings else {}
        if layout.bias:  # older checkpoints also stored the bias under the decoder
            ties[f"{layout.decoder}.bias"] = layout.bias
        return ties

    def tie_weights(self) -> None:
        if self.decoder is not None and self.config.tie_word_embeddings:
            self.decoder.weight = self.input_embeddings.weight

    @property
    def input_embeddings(self) -> nn.Embedding:
        return self.backbone.get_submodule(self.family.input_embeddings)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, output_hidden_states=False):
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        x = self.transform(out.last_hidden_state)  # (B, T, E)
        if self.decoder is not None:
            logits = self.decoder(x)  # (B, T, V)
        else:
            logits = F.linear(x, self.input_embeddings.weight)  # (B, T, V)
        if self.layout.bias:
            logits = logits + self.get_parameter(self.layout.bias)
        loss = None if labels is None else F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return MaskedLMOutput(logits, loss, out.hidden_states)

    def fill_mask(self, text, top_k: int = 5, **kwargs):
        """Fill the mask token: `[{"score", "token", "token_str", "sequence"}]` as the fill-mask pipeline."""
        from ..tasks.fill_mask import fill_mask

        return fill_mask(self, self.tokenizer, text, top_k=top_k, **kwargs)


class EncoderForPreTraining(HeadModel):
    """Replaced-token detection (ELECTRA's discriminator): one logit per token, dense → act → score."""

    task = "pretraining"

    def __init__(self, config):
        super().__init__(config)
        layout: TokenScorer = self.layout
        self.__dict__["dense"] = self.place_head(layout.dense, nn.Linear(config.hidden_size, config.hidden_size))
        self.__dict__["out"] = self.place_head(layout.out, nn.Linear(config.hidden_size, 1))
        self.act = activation(config.hidden_act)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None, output_hidden_states=False):
        out = self.encode(input_ids, attention_mask, token_type_ids, position_ids, output_hidden_states)
        logits = self.out(self.act(self.dense(out.last_hidden_state))).squeeze(-1)  # (B, T)
        loss = None
        if labels is not None:  # BCE over attended tokens, as transformers
            active = attention_mask.bool() if attention_mask is not None else torch.ones_like(labels, dtype=torch.bool)
            loss = F.binary_cross_entropy_with_logits(logits[active], labels[active].to(logits.dtype))
        return PreTrainingOutput(logits, loss, out.hidden_states)


HEADS: dict[str, type[HeadModel]] = {
    cls.task: cls
    for cls in (EncoderForSequenceClassification, EncoderForTokenClassification, EncoderForQuestionAnswering,
                EncoderForMaskedLM, EncoderForPreTraining)
}
