"""Evaluation metrics as pure functions: accuracy, macro F1, entity F1 (seqeval), SQuAD EM/F1, perplexity."""

from __future__ import annotations

import math
import re
import string
from collections import Counter

import torch

from ..errors import ConfigError

# the metric that picks the best checkpoint, per training task
TASK_METRICS = {"classify": "accuracy", "ner": "f1", "qa": "f1", "mlm": "perplexity", "causal-lm": "perplexity"}
LOWER_IS_BETTER = ("loss", "perplexity")


def _as_list(values) -> list:
    return values.tolist() if isinstance(values, torch.Tensor) else list(values)


def _paired(preds, labels, what: str) -> tuple[list, list]:
    """Both sequences as lists, checked to be non-empty and of one length."""
    preds, labels = _as_list(preds), _as_list(labels)
    if len(preds) != len(labels):
        raise ConfigError(f"{what}: got {len(preds)} predictions for {len(labels)} labels. "
                          f"Fix: pass one prediction per example.")
    if not preds:
        raise ConfigError(f"{what}: no examples to score. Fix: evaluate on a non-empty dataset.")
    return preds, labels


# --- classification -------------------------------------------------------------------------------------------
def accuracy(preds, labels) -> float:
    """The fraction of predictions equal to their label."""
    preds, labels = _paired(preds, labels, "accuracy")
    return sum(p == t for p, t in zip(preds, labels)) / len(labels)


def macro_f1(preds, labels, num_labels: int | None = None) -> float:
    """Per-class F1 averaged over the classes in labels ∪ preds, as sklearn's `f1_score(average="macro")`.

    Zero division scores 0. `num_labels`, when given, checks that every id lies in `0..num_labels-1`.
    """
    preds, labels = _paired(preds, labels, "macro_f1")
    classes = set(preds) | set(labels)
    if num_labels is not None and not classes <= set(range(num_labels)):
        raise ConfigError(f"macro_f1: label ids {sorted(classes - set(range(num_labels)))} lie outside "
                          f"0..{num_labels - 1}. Fix: pass the model's num_labels, or map labels to ids first.")
    true_pos = Counter(p for p, t in zip(preds, labels) if p == t)
    predicted, actual = Counter(preds), Counter(labels)
    # F1 = 2·tp / (2·tp + fp + fn) = 2·tp / (predicted + actual); every class occurs in one of them
    scores = [2 * true_pos[c] / (predicted[c] + actual[c]) for c in classes]
    return sum(scores) / len(scores)


# --- named entities -------------------------------------------------------------------------------------------
def _split_tag(label: str) -> tuple[str, str]:
    """'B-PER' → ('B', 'PER'); like seqeval, a label without a prefix splits after its first character."""
    return label[0], label[1:].split("-", maxsplit=1)[-1] or "_"


def _entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) of each chunk, by conlleval's rules as seqeval's default (non-strict) mode applies them."""
    chunks, begin, prev_tag, prev_type = set(), 0, "O", ""
    for i, label in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(label)
        if prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO") or (prev_tag not in "O." and prev_type != type_):
            chunks.add((prev_type, begin, i - 1))
        if tag in "BS" or (prev_tag in "ESO" and tag in "EI") or (tag not in "O." and prev_type != type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def entity_f1(pred_tags: list[list[str]], true_tags: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 over IOB1/IOB2/IOBES tag sequences, as seqeval's defaults.

    An entity counts as correct only with the same type and the same first and last token. A run of one plain
    label without a B-/I- prefix (e.g. "PER PER") is one entity, as in seqeval.
    """
    pred_tags, true_tags = _paired(pred_tags, true_tags, "entity_f1")
    correct = n_pred = n_true = 0
    for i, (pred, true) in enumerate(zip(pred_tags, true_tags)):
        if len(pred) != len(true):
            raise ConfigError(f"entity_f1: sentence {i} has {len(pred)} predicted tags for {len(true)} true tags. "
                              f"Fix: predict one tag per token (drop sub-word and padding positions first).")
        predicted, actual = _entities(list(pred)), _entities(list(true))
        correct, n_pred, n_true = correct + len(predicted & actual), n_pred + len(predicted), n_true + len(actual)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- extractive QA --------------------------------------------------------------------------------------------
def _normalize_answer(text: str) -> list[str]:
    """The official SQuAD v1.1 normalisation, as tokens: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def _token_f1(prediction: list[str], reference: list[str]) -> float:
    same = sum((Counter(prediction) & Counter(reference)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction), same / len(reference)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """SQuAD exact match and token F1 in percent, each the best over an example's reference answers.

    An empty reference list marks an unanswerable question (SQuAD v2): it scores 100 iff the prediction
    normalises to the empty string.
    """
    predictions, references = _paired(predictions, references, "squad_em_f1")
    exact = f1 = 0.0
    for i, (prediction, answers) in enumerate(zip(predictions, references)):
        if isinstance(answers, str):
            raise ConfigError(f"squad_em_f1: references[{i}] is a string. Fix: pass a list of reference answers "
                              f"per question (e.g. [[\"Paris\"]]), or [] for an unanswerable one.")
        tokens = _normalize_answer(prediction)
        if not answers:
            exact, f1 = exact + (not tokens), f1 + (not tokens)
            continue
        golds = [_normalize_answer(answer) for answer in answers]
        exact += max(tokens == gold for gold in golds)
        f1 += max(_token_f1(tokens, gold) for gold in golds)
    return {"exact_match": 100 * exact / len(predictions), "f1": 100 * f1 / len(predictions)}


# --- language modelling and checkpoint selection --------------------------------------------------------------
def perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy), `inf` where it overflows."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf


def best_metric_name(task: str) -> str:
    """The metric that selects the best checkpoint for `task` (see TASK_METRICS)."""
    if task not in TASK_METRICS:
        raise ConfigError(f"No default metric for task {task!r}. Fix: use one of {sorted(TASK_METRICS)}, "
                          f"or name the metric to select checkpoints by.")
    return TASK_METRICS[task]


def greater_is_better(metric_name: str) -> bool:
    """False for losses and perplexity (also with an `eval_` prefix), True for every other metric."""
    return metric_name.removeprefix("eval_") not in LOWER_IS_BETTER
