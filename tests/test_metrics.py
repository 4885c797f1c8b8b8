"""HEAR scores against independent references: scikit-learn / scipy / numpy for scene scores,
values computed by sed_eval 0.2.1 itself (tests/data/sed_eval_reference.json) for event scores,
plus small cases worked out by hand."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from hearfuse.evaluation.metrics import METRICS, score

REFERENCE = Path(__file__).parent / "data" / "sed_eval_reference.json"
EVENT_METRICS = ["event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er"]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_registry_names_directions_and_aliases():
    assert set(METRICS) == {
        "top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc", *EVENT_METRICS,
    }  # fmt: skip
    assert all(m.name == name for name, m in METRICS.items())
    assert [n for n, m in METRICS.items() if not m.higher_is_better] == ["segment_1s_er"]
    assert METRICS["pitch_acc"].fn is METRICS["top1_acc"].fn
    with pytest.raises(ValueError, match="unknown metric"):
        score("f1", [[1.0]], [[1]], label_vocabulary=["a"])


# Scene / frame scores


def one_hot(classes: np.ndarray, n_labels: int) -> np.ndarray:
    return np.eye(n_labels, dtype=int)[classes]


def tied_scores(rng: np.random.Generator, n: int, n_labels: int) -> np.ndarray:
    """Scores on a coarse grid, so that many are tied within and across classes."""
    return np.round(rng.random((n, n_labels)), 1)


def sklearn_macro(fn, targets: np.ndarray, scores: np.ndarray, **kw) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about classes without positives
        return float(fn(targets, scores, **kw))


@pytest.mark.parametrize("seed", range(5))
def test_scene_scores_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, n_labels = 60, 5
    scores = tied_scores(rng, n, n_labels)
    targets = one_hot(rng.integers(0, n_labels, n), n_labels)
    targets[:n_labels] = np.eye(n_labels, dtype=int)  # every class present
    vocab = [f"c{i}" for i in range(n_labels)]
    kw = {"label_vocabulary": vocab}

    expected_map = sklearn_macro(average_precision_score, targets, scores, average="macro")
    assert same(score("mAP", scores, targets, **kw), expected_map)
    assert same(score("aucroc", scores, targets, **kw), sklearn_macro(roc_auc_score, targets, scores, average="macro"))
    aucs = roc_auc_score(targets, scores, average=None)
    assert same(score("d_prime", scores, targets, **kw), float(np.mean(np.sqrt(2.0) * norm.ppf(aucs))))

    correct = sum(int(np.argmax(s) == np.argmax(t)) for s, t in zip(scores, targets))
    assert score("top1_acc", scores, targets, **kw) == correct / n
    assert score("pitch_acc", scores, targets, **kw) == correct / n


@pytest.mark.parametrize("seed", range(3))
def test_multi_hot_targets_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores = tied_scores(rng, 80, 6)
    targets = (rng.random((80, 6)) < 0.3).astype(int)
    targets[0], targets[1] = 1, 0  # each class has positives and negatives
    kw = {"label_vocabulary": list("abcdef")}
    expected_map = sklearn_macro(average_precision_score, targets, scores, average="macro")
    assert same(score("mAP", scores, targets, **kw), expected_map)
    assert same(score("aucroc", scores, targets, **kw), sklearn_macro(roc_auc_score, targets, scores, average="macro"))


def test_class_absent_from_split():
    """mAP: the absent class scores AP 0 (scikit-learn >= 1.1) and pulls the mean down;
    aucroc and d_prime: undefined for that class, so NaN overall (heareval returns NaN)."""
    rng = np.random.default_rng(7)
    n_labels = 4
    scores = tied_scores(rng, 50, n_labels)
    targets = one_hot(rng.integers(0, n_labels - 1, 50), n_labels)  # class 3 never occurs
    targets[:3, :3] = np.eye(3, dtype=int)
    kw = {"label_vocabulary": ["a", "b", "c", "d"]}

    expected_map = sklearn_macro(average_precision_score, targets, scores, average="macro")
    present = average_precision_score(targets[:, :3], scores[:, :3], average=None)
    assert same(expected_map, float(np.sum(present)) / 4)
    assert same(score("mAP", scores, targets, **kw), expected_map)
    assert math.isnan(score("aucroc", scores, targets, **kw))
    assert math.isnan(score("d_prime", scores, targets, **kw))


def test_class_always_present():
    """A class positive in every row: AP 1 (precision is 1 at every threshold), AUC undefined."""
    scores = np.array([[0.9, 0.2], [0.4, 0.6], [0.3, 0.1]])
    targets = np.array([[1, 1], [0, 1], [0, 1]])
    kw = {"label_vocabulary": ["a", "b"]}
    assert same(score("mAP", scores, targets, **kw), (1.0 + 1.0) / 2)
    assert math.isnan(score("aucroc", scores, targets, **kw))


def test_ranking_scores_by_hand():
    # Class a: scores 0.9+ 0.8- 0.7+ 0.1-  (+ = positive).
    #   AP: thresholds 0.9, 0.8, 0.7 have precision 1/1, 1/2, 2/3 and recall 1/2, 1/2, 1; recall gains
    #   0.5 at 0.9 and 0.5 at 0.7 -> AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    #   AUC: pairs (pos, neg) ranked right: (0.9, 0.8), (0.9, 0.1), (0.7, 0.1); wrong: (0.7, 0.8) -> 3/4.
    # Class b: scores 0.5+ 0.5- 0.5+ 0.5- all tied: AP = 2/4 = 1/2, AUC = 1/2 (ties count half).
    scores = np.array([[0.9, 0.5], [0.8, 0.5], [0.7, 0.5], [0.1, 0.5]])
    targets = np.array([[1, 1], [0, 0], [1, 1], [0, 0]])
    kw = {"label_vocabulary": ["a", "b"]}
    assert same(score("mAP", scores, targets, **kw), (5 / 6 + 1 / 2) / 2)
    assert same(score("aucroc", scores, targets, **kw), (3 / 4 + 1 / 2) / 2)
    # d' = sqrt(2) * Phi^-1(AUC); Phi^-1(1/2) = 0.
    assert same(score("d_prime", scores, targets, **kw), math.sqrt(2) * norm.ppf(0.75) / 2)


def test_top1_takes_first_maximum_on_ties():
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.7, 0.7]])
    targets = np.array([[1, 0, 0], [0, 0, 1]])
    assert score("top1_acc", scores, targets, label_vocabulary=["a", "b", "c"]) == 0.5


def test_chroma_accuracy_on_consecutive_midi_vocabulary():
    rng = np.random.default_rng(3)
    vocab = [str(p) for p in range(48, 84)]  # consecutive semitones, numeric order, like HEAR's NSynth
    scores = rng.random((200, len(vocab)))
    classes = np.where(rng.random(200) < 0.5, scores.argmax(axis=1), rng.integers(0, len(vocab), 200))
    classes[:20] = (scores[:20].argmax(axis=1) + 12) % len(vocab)  # octave errors
    targets = one_hot(classes, len(vocab))
    predicted_pitch = np.array([int(vocab[i]) for i in scores.argmax(axis=1)])
    target_pitch = np.array([int(vocab[i]) for i in classes])
    expected = float(np.mean(predicted_pitch % 12 == target_pitch % 12))
    chroma = score("chroma_acc", scores, targets, label_vocabulary=vocab)
    assert chroma == expected
    assert chroma > score("top1_acc", scores, targets, label_vocabulary=vocab)


def test_chroma_accuracy_compares_indices_not_label_strings():
    # heareval takes argmax indices mod 12: here "72" (index 2) vs "60" (index 0) is a miss.
    vocab = ["60", "62", "72"]
    scores, targets = np.array([[0.1, 0.2, 0.7]]), np.array([[1, 0, 0]])
    assert score("chroma_acc", scores, targets, label_vocabulary=vocab) == 0.0


@pytest.mark.parametrize(
    "scores, targets, vocab",
    [
        ([[0.1, 0.9]], [[0, 1], [1, 0]], ["a", "b"]),  # shape mismatch
        ([[0.1, 0.9]], [[0, 1]], ["a", "b", "c"]),  # vocabulary size
        (np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"]),  # empty
    ],
)
def test_scene_input_errors(scores, targets, vocab):
    for name in ("top1_acc", "mAP", "aucroc"):
        with pytest.raises(ValueError):
            score(name, scores, targets, label_vocabulary=vocab)


def test_ranking_scores_refuse_nan_and_soft_targets():
    with pytest.raises(ValueError, match="NaN"):
        score("mAP", [[np.nan, 1.0], [0.0, 1.0]], [[1, 0], [0, 1]], label_vocabulary=["a", "b"])
    with pytest.raises(ValueError, match="0/1"):
        score("aucroc", [[0.2, 1.0], [0.0, 1.0]], [[0.5, 0.5], [0, 1]], label_vocabulary=["a", "b"])


# Event scores against sed_eval 0.2.1


def reference_cases() -> list[dict]:
    return json.loads(REFERENCE.read_text())["cases"]


def test_reference_file_is_documented_and_small():
    doc = json.loads(REFERENCE.read_text())
    assert next(iter(doc)) == "generated_by"
    assert doc["generated_by"]["versions"]["sed_eval"] == "0.2.1"
    assert "def sed_eval_score" in doc["generated_by"]["script"]
    assert {m: METRICS[m].params for m in EVENT_METRICS} == {
        m: {k: v for k, v in p.items() if k != "evaluate_onset"} for m, p in doc["metrics"].items()
    }
    assert REFERENCE.stat().st_size < 200_000


@pytest.mark.parametrize("case", reference_cases(), ids=lambda c: c["name"])
def test_event_scores_match_sed_eval(case):
    for name in EVENT_METRICS:
        got = score(name, case["predictions"], case["targets"], label_vocabulary=case["label_vocabulary"])
        expected = case["expected"][name]
        assert same(got, math.nan if expected is None else expected), (name, got, expected)


def ev(label: str, start: float, end: float) -> dict:
    return {"label": label, "start": start, "end": end}


def test_onset_f_measure_by_hand():
    # 200 ms collar, onsets only: dog@0.1 s hits dog@0 s; dog@3.3 s misses dog@3 s (0.3 s away);
    # cat@5 s hits; cat@8 s is a false positive. Ntp = 2, Nsys = 4, Nref = 3:
    # P = 1/2, R = 2/3, F = 2PR / (P + R) = (2/3) / (7/6) = 4/7.
    targets = {"f": [ev("dog", 0, 1000), ev("dog", 3000, 4000), ev("cat", 5000, 5500)]}
    predictions = {"f": [ev("dog", 100, 900), ev("dog", 3300, 4000), ev("cat", 5000, 5500), ev("cat", 8000, 8100)]}
    vocab = ["dog", "cat"]
    assert same(score("event_onset_200ms_fms", predictions, targets, label_vocabulary=vocab), 4 / 7)
    # With a 50 ms collar only cat@5 s hits: P = 1/4, R = 1/3, F = (1/6) / (7/12) = 2/7.
    assert same(score("event_onset_50ms_fms", predictions, targets, label_vocabulary=vocab), 2 / 7)
    # Parameters can be overridden: a 0.35 s collar also accepts dog@3.3 s: P = 3/4, R = 1, F = 6/7.
    assert same(score("event_onset_200ms_fms", predictions, targets, label_vocabulary=vocab, t_collar=0.35), 6 / 7)


def test_offset_collar_is_max_of_collar_and_share_of_length():
    # Long reference a 1-3 s: offset tolerance max(0.05, 0.2 * 2 s) = 0.4 s; estimate ends 0.35 s late: hit.
    # Short reference b 0-0.1 s: tolerance max(0.05, 0.2 * 0.1 s) = 0.05 s; estimate ends 0.06 s late: miss.
    # Onsets are 20 ms and 10 ms off, within 50 ms. Ntp = 1 of 2 and 2 -> F = 1/2; onset only: F = 1.
    targets = {"f": [ev("a", 1000, 3000), ev("b", 0, 100)]}
    predictions = {"f": [ev("a", 1020, 3350), ev("b", 10, 160)]}
    vocab = ["a", "b"]
    assert same(score("event_onset_offset_50ms_20perc_fms", predictions, targets, label_vocabulary=vocab), 0.5)
    assert same(score("event_onset_50ms_fms", predictions, targets, label_vocabulary=vocab), 1.0)


def test_segment_error_rate_by_hand():
    # File lasts until the last offset, 3.4 s -> 4 one-second segments.
    #   reference: a 0-2.5 s -> segments 0, 1, 2; b 1.5-2 s -> segment 1
    #   estimate:  a 0-1 s   -> segment 0;       b 1.2-3.4 s -> segments 1, 2, 3
    # seg 0: ref {a}, est {a}: all right.
    # seg 1: ref {a, b}, est {b}: Nref 2, Nsys 1, Ntp 1 -> S = min(2, 1) - 1 = 0, D = 1.
    # seg 2: ref {a}, est {b}: Ntp 0 -> S = 1.
    # seg 3: ref {}, est {b}: I = 1.
    # N = 1 + 2 + 1 = 4, ER = (S + D + I) / N = 3/4.
    targets = {"f": [ev("a", 0, 2500), ev("b", 1500, 2000)]}
    predictions = {"f": [ev("a", 0, 1000), ev("b", 1200, 3400)]}
    assert same(score("segment_1s_er", predictions, targets, label_vocabulary=["a", "b"]), 0.75)


def test_only_files_of_the_predictions_are_scored():
    # f2 is absent from the predictions: heareval never looks at its references.
    targets = {"f1": [ev("a", 0, 1000)], "f2": [ev("a", 0, 1000)]}
    kw = {"label_vocabulary": ["a"]}
    assert score("event_onset_200ms_fms", {"f1": [ev("a", 0, 1000)]}, targets, **kw) == 1.0
    assert score("segment_1s_er", {"f1": [ev("a", 0, 1000)]}, targets, **kw) == 0.0
    # An empty list for f2 makes its reference a miss: P = 1, R = 1/2 -> F = 2/3;
    # one deleted segment of N = 2 -> ER = 1/2.
    predictions = {"f1": [ev("a", 0, 1000)], "f2": []}
    assert same(score("event_onset_200ms_fms", predictions, targets, **kw), 2 / 3)
    assert same(score("segment_1s_er", predictions, targets, **kw), 0.5)


def test_empty_estimates_give_nan_f_measure():
    # sed_eval: precision = Ntp / Nsys is NaN for Nsys = 0, and so is F (not 0).
    targets = {"f": [ev("a", 0, 1000)]}
    assert math.isnan(score("event_onset_200ms_fms", {"f": []}, targets, label_vocabulary=["a"]))
    assert math.isnan(score("event_onset_200ms_fms", {}, targets, label_vocabulary=["a"]))
    assert score("segment_1s_er", {}, targets, label_vocabulary=["a"]) == 0.0


def test_label_outside_vocabulary():
    # Segment rolls need a column per label (sed_eval raises); the event F-measure only compares labels.
    events = {"f": [ev("zebra", 0, 1000)]}
    with pytest.raises(ValueError, match="zebra"):
        score("segment_1s_er", events, events, label_vocabulary=["a"])
    assert score("event_onset_200ms_fms", events, events, label_vocabulary=["a"]) == 1.0


def test_event_parameter_errors():
    events = {"f": [ev("a", 0, 1000)]}
    with pytest.raises(ValueError):
        score("event_onset_200ms_fms", events, events, label_vocabulary=["a"], t_collar=0.0)
    with pytest.raises(ValueError):
        score("event_onset_offset_50ms_20perc_fms", events, events, label_vocabulary=["a"], percentage_of_length=1.5)
    with pytest.raises(ValueError):
        score("segment_1s_er", {"f": [ev("a", 0, math.inf)]}, events, label_vocabulary=["a"])
