"""hfkit.train.metrics: hand-computed cases, plus sklearn and seqeval as references where installed."""

import math
import random
import warnings

import pytest
import torch

from hfkit.errors import ConfigError
from hfkit.train.metrics import (
    TASK_METRICS,
    accuracy,
    best_metric_name,
    entity_f1,
    greater_is_better,
    macro_f1,
    perplexity,
    squad_em_f1,
)


def test_accuracy_lists_and_tensors():
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5
    assert accuracy(torch.tensor([3, 1]), torch.tensor([3, 1])) == 1.0


def test_macro_f1_by_hand():
    # class 0: tp 1, fp 0, fn 1 → 2/3; class 1: tp 1, fp 1, fn 1 → 1/2; class 2: only predicted → 0
    assert macro_f1([0, 1, 1, 2], [0, 1, 0, 1]) == pytest.approx((2 / 3 + 1 / 2 + 0.0) / 3)
    assert macro_f1([0, 1], [0, 1], num_labels=4) == 1.0  # absent classes do not count, as in sklearn


def test_macro_f1_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(0)
    for _ in range(50):
        n, k = rng.randint(1, 30), rng.randint(2, 6)
        preds, labels = [rng.randrange(k) for _ in range(n)], [rng.randrange(k) for _ in range(n)]
        expected = sklearn_metrics.f1_score(labels, preds, average="macro", zero_division=0)
        assert macro_f1(torch.tensor(preds), labels) == pytest.approx(expected)
        assert macro_f1(preds, labels, num_labels=k) == pytest.approx(expected)


def test_classification_errors_name_the_fix():
    with pytest.raises(ConfigError, match="3 predictions for 2 labels"):
        accuracy([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="no examples"):
        macro_f1([], [])
    with pytest.raises(ConfigError, match=r"outside 0\.\.1"):
        macro_f1([0, 2], [0, 1], num_labels=2)


@pytest.mark.parametrize("pred, true, expected", [
    # IOB2, one of two entities right (the other has the wrong type)
    (["B-PER", "I-PER", "O", "B-ORG"], ["B-PER", "I-PER", "O", "B-LOC"], (0.5, 0.5, 0.5)),
    # I- after O starts an entity (IOB1), equal to the IOB2 spelling
    (["O", "B-PER", "I-PER", "O"], ["O", "I-PER", "I-PER", "O"], (1.0, 1.0, 1.0)),
    # a type change inside a run splits it: true has PER(0) and LOC(1), pred one PER(0..1)
    (["B-PER", "I-PER"], ["B-PER", "I-LOC"], (0.0, 0.0, 0.0)),
    # IOB1: B- separates two adjacent entities of one type
    (["I-PER", "I-PER", "B-PER", "O"], ["I-PER", "I-PER", "B-PER", "O"], (1.0, 1.0, 1.0)),
    (["I-PER", "I-PER", "I-PER", "O"], ["I-PER", "I-PER", "B-PER", "O"], (0.0, 0.0, 0.0)),
    # IOBES
    (["S-PER", "B-LOC", "E-LOC"], ["S-PER", "B-LOC", "I-LOC"], (1.0, 1.0, 1.0)),
    # plain labels: a run is one entity; pred PER(0) ≠ PER(0..1), LOC(3) right
    (["PER", "O", "O", "LOC"], ["PER", "PER", "O", "LOC"], (0.5, 0.5, 0.5)),
    # nothing predicted: zero, not an error
    (["O", "O"], ["B-PER", "O"], (0.0, 0.0, 0.0)),
    # two predicted, one of them right
    (["B-PER", "O", "B-LOC"], ["B-PER", "O", "O"], (0.5, 1.0, 2 / 3)),
])
def test_entity_f1_by_hand(pred, true, expected):
    scores = entity_f1([pred], [true])
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(expected)


def test_entities_do_not_cross_sentences():
    true = [["O", "B-PER"], ["I-PER", "O"]]  # PER(end of sentence 0) and PER(start of sentence 1)
    assert entity_f1(true, true)["f1"] == 1.0
    assert entity_f1([["O", "B-PER"], ["O", "O"]], true) == pytest.approx({"precision": 1.0, "recall": 0.5,
                                                                           "f1": 2 / 3})


def test_entity_f1_length_mismatch():
    with pytest.raises(ConfigError, match="sentence 1 has 1 predicted tags for 2"):
        entity_f1([["O"], ["O"]], [["O"], ["O", "O"]])


def test_entity_f1_matches_seqeval():
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-PER", "S-LOC", "I-MISC", "PER", "LOC"]
    rng = random.Random(0)
    for _ in range(300):
        lengths = [rng.randint(1, 8) for _ in range(rng.randint(1, 4))]
        true = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        pred = [[rng.choice(tags) for _ in range(n)] for n in lengths]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # seqeval warns on plain labels and on zero division
            expected = {name: getattr(seqeval_metrics, f"{name}_score")(true, pred)
                        for name in ("precision", "recall", "f1")}
        assert entity_f1(pred, true) == pytest.approx(expected), (pred, true)


def test_squad_by_hand():
    scores = squad_em_f1(["The Eiffel Tower!", "in Paris, France"], [["eiffel tower"], ["France", "Paris France"]])
    # example 2: best reference "paris france": precision 2/3, recall 1 → F1 0.8
    assert scores == pytest.approx({"exact_match": 50.0, "f1": (100 + 80) / 2})
    assert squad_em_f1(["in Paris"], [["Paris"]]) == pytest.approx({"exact_match": 0.0, "f1": 100 * 2 / 3})
    assert squad_em_f1(["an  apple"], [["Apple."]]) == {"exact_match": 100.0, "f1": 100.0}


def test_squad_unanswerable():
    assert squad_em_f1(["", "the", "Paris"], [[], [], []]) == pytest.approx({"exact_match": 200 / 3,
                                                                             "f1": 200 / 3})
    assert squad_em_f1([""], [["Paris"]]) == {"exact_match": 0.0, "f1": 0.0}
    with pytest.raises(ConfigError, match="list of reference answers"):
        squad_em_f1(["Paris"], ["Paris"])


def test_perplexity():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf


def test_checkpoint_metric_defaults():
    assert {task: best_metric_name(task) for task in TASK_METRICS} == {
        "classify": "accuracy", "ner": "f1", "qa": "f1", "mlm": "perplexity", "causal-lm": "perplexity"}
    assert not greater_is_better("perplexity") and not greater_is_better("eval_loss")
    assert greater_is_better("accuracy") and greater_is_better("eval_f1")
    with pytest.raises(ConfigError, match="one of"):
        best_metric_name("summarize")
