"""Token classification (NER) with the transformers `token-classification` pipeline's entities and spans."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from .batching import TaskInputError, as_list, rows, run_batched, unpad

STRATEGIES = ("none", "simple", "first", "average", "max")


def backend_tokenizer(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a hfkit or transformers tokenizer, or None."""
    for name in ("backend_tokenizer", "_backend"):
        backend = getattr(tokenizer, name, None)
        if backend is not None and hasattr(backend, "decoder"):
            return backend
    return None


def tokens_to_string(tokenizer: Any, tokens: list[str]) -> str:
    """Join tokens as the tokenizer's decoder does (`convert_tokens_to_string` of transformers)."""
    backend = backend_tokenizer(tokenizer)
    decoder = backend.decoder if backend is not None else None
    return decoder.decode(tokens) if decoder is not None else " ".join(tokens)


def _pre_entities(tokenizer: Any, text: str, ids: list[int], offsets: list, sequence_ids: list,
                  scores: torch.Tensor, strategy: str) -> list[dict[str, Any]]:
    """One dict per non-special token: its token string, scores (L,), char span and subword flag."""
    backend = backend_tokenizer(tokenizer)
    word_aware = backend is not None and getattr(backend.model, "continuing_subword_prefix", None)
    if not word_aware and strategy in ("first", "average", "max"):
        warnings.warn("Tokenizer does not support real words, using fallback heuristic", UserWarning, stacklevel=3)
    unk_id = getattr(tokenizer, "unk_token_id", None)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    entities = []
    for index, (token, token_id, (start, end), sequence_id) in enumerate(zip(tokens, ids, offsets, sequence_ids)):
        if sequence_id is None:  # special tokens added by the post-processor
            continue
        word_ref = text[start:end]
        if word_aware:  # WordPiece-style "##": a subword's token is longer than its text
            is_subword = len(token) != len(word_ref)
        else:
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if token_id == unk_id:
            token, is_subword = word_ref, False
        entities.append({"word": token, "scores": scores[index], "start": start, "end": end,
                         "index": index, "is_subword": is_subword})
    return entities


def _aggregate_word(tokenizer: Any, id2label: dict, tokens: list[dict], strategy: str) -> dict[str, Any]:
    """One entity for the tokens of one word, labelled by its first token, its surest token, or the mean."""
    if strategy == "first":
        scores = tokens[0]["scores"]
    elif strategy == "max":
        scores = max(tokens, key=lambda token: token["scores"].max().item())["scores"]
    else:
        scores = torch.stack([token["scores"] for token in tokens]).mean(0)  # (L,)
    label = int(scores.argmax())
    return {"entity": id2label[label], "score": scores[label].item(),
            "word": tokens_to_string(tokenizer, [token["word"] for token in tokens]),
            "start": tokens[0]["start"], "end": tokens[-1]["end"]}


def _split_tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label  # not B-/I- form: continue the group


def _group(tokenizer: Any, entities: list[dict]) -> list[dict[str, Any]]:
    """Merge adjacent entities of one tag into groups; a `B-` starts a new group."""
    groups: list[list[dict]] = []
    for entity in entities:
        bi, tag = _split_tag(entity["entity"])
        if groups and bi != "B" and tag == _split_tag(groups[-1][-1]["entity"])[1]:
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [
        {"entity_group": group[0]["entity"].split("-", 1)[-1],
         "score": sum(entity["score"] for entity in group) / len(group),
         "word": tokens_to_string(tokenizer, [entity["word"] for entity in group]),
         "start": group[0]["start"], "end": group[-1]["end"]}
        for group in groups
    ]


def tag(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: str | Sequence[str],
    aggregation_strategy: str = "none",
    ignore_labels: Sequence[str] = ("O",),
    batch_size: int = 32,
) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
    """Per text, the entities the transformers token-classification pipeline gives.

    `"none"`: one `{"entity", "score", "index", "word", "start", "end"}` per token; `"simple"` groups
    B-/I- runs into `{"entity_group", "score", "word", "start", "end"}`; `"first"|"average"|"max"`
    first force one label per word. Labels in `ignore_labels` are dropped. Texts longer than the
    tokenizer's `model_max_length` are truncated (the tail gets no entities)."""
    strategy = aggregation_strategy.lower()
    if strategy not in STRATEGIES:
        raise TaskInputError(f"aggregation_strategy must be one of {STRATEGIES}, got {aggregation_strategy!r}.")
    texts, single = as_list(texts)
    if not texts:
        return []
    encoding = tokenizer(texts, padding=False, truncation=True, return_offsets_mapping=True, return_tensors=None)
    logits = run_batched(model, tokenizer, rows(encoding), batch_size,
                         lambda out, batch: unpad(out.logits, batch["attention_mask"]))  # (T_i, L) each

    id2label = model.config.id2label
    results = []
    for i, (text, row) in enumerate(zip(texts, logits)):
        scores = row.softmax(-1)  # (T_i, L)
        pre = _pre_entities(tokenizer, text, encoding["input_ids"][i], encoding["offset_mapping"][i],
                            encoding.sequence_ids(i), scores, strategy)
        if strategy in ("none", "simple"):
            entities = []
            for token in pre:
                label = int(token["scores"].argmax())
                entities.append({"entity": id2label[label], "score": token["scores"][label].item(),
                                 "index": token["index"], "word": token["word"],
                                 "start": token["start"], "end": token["end"]})
        else:
            words: list[list[dict]] = []
            for token in pre:
                if words and token["is_subword"]:
                    words[-1].append(token)
                else:
                    words.append([token])
            entities = [_aggregate_word(tokenizer, id2label, word, strategy) for word in words]
        if strategy != "none":
            entities = _group(tokenizer, entities)
        key = "entity" if strategy == "none" else "entity_group"
        results.append([entity for entity in entities if entity[key] not in ignore_labels])
    return results[0] if single else results
