"""Evaluation of a model under training: the mean loss plus the task's metrics (DESIGN §4 tasks, issue 6).

classify → accuracy, macro-F1 · ner → entity-level precision / recall / F1 · qa → SQuAD exact match and F1
of the answers the question-answering task extracts · mlm, causal-lm → perplexity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import metrics


def _label_name(config, index: int) -> str:
    return config.id2label.get(index, str(index)) if getattr(config, "id2label", None) else str(index)


@torch.no_grad()
def evaluate(model, task: str, batches: Sequence[dict[str, torch.Tensor]], rows: Sequence[dict], tokenizer,
             device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager],
             doc_stride: int, max_length: int) -> dict[str, float]:
    """Run `model` (unwrapped, on `device`) over collated eval `batches`; `rows` are the raw eval rows (QA)."""
    was_training = model.training
    model.eval()
    try:
        loss_sum, weight, preds, labels = 0.0, 0, [], []
        for batch in batches:
            batch = {key: value.to(device) for key, value in batch.items()}
            with autocast():
                out = model(**batch)
            target = batch.get("labels", batch.get("start_positions"))
            n = int((target != -100).sum()) if task in ("ner", "mlm", "causal-lm") else target.shape[0]
            loss_sum, weight = loss_sum + float(out.loss) * n, weight + n
            if task in ("classify", "ner"):
                preds.append(out.logits.argmax(-1).cpu())
                labels.append(target.cpu())
        result = {"loss": loss_sum / max(weight, 1)}
        if task == "classify":
            result.update(_classification(model.config, preds, labels))
        elif task == "ner":
            result.update(_entities(model.config, preds, labels))
        elif task == "qa":
            result.update(_squad(model, tokenizer, rows, doc_stride, max_length))
        else:
            result["perplexity"] = metrics.perplexity(result["loss"])
        return result
    finally:
        model.train(was_training)


def _classification(config, preds: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float]:
    if config.num_labels == 1 or getattr(config, "problem_type", None) == "multi_label_classification":
        return {}  # regression / multi-label: the loss is the metric
    pred, label = torch.cat(preds).tolist(), torch.cat(labels).tolist()
    return {"accuracy": metrics.accuracy(pred, label), "macro_f1": metrics.macro_f1(pred, label, config.num_labels)}


def _entities(config, preds: list[torch.Tensor], labels: list[torch.Tensor]) -> dict[str, float]:
    """Tags at the labelled positions (first piece of each word) of every example, as entity sequences."""
    pred_tags, true_tags = [], []
    for pred, label in zip(preds, labels):
        for p_row, l_row in zip(pred, label):
            keep = l_row != -100
            pred_tags.append([_label_name(config, int(i)) for i in p_row[keep]])
            true_tags.append([_label_name(config, int(i)) for i in l_row[keep]])
    scores = metrics.entity_f1(pred_tags, true_tags)
    return {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}


def _squad(model, tokenizer, rows: Sequence[dict[str, Any]], doc_stride: int, max_length: int) -> dict[str, float]:
    """Answers extracted as `model.answer` does (the pipeline semantics) against every reference answer."""
    from ..tasks.answer import answer

    if not rows:
        return {}
    found = answer(model, tokenizer, [r["question"] for r in rows], [r["context"] for r in rows],
                   doc_stride=doc_stride, max_seq_len=max_length,
                   handle_impossible_answer=any(not r["answers"]["text"] for r in rows))
    predictions = [item["answer"] if item else "" for item in found]
    scores = metrics.squad_em_f1(predictions, [list(r["answers"]["text"]) for r in rows])
    return {"exact_match": scores["exact_match"], "f1": scores["f1"]}
