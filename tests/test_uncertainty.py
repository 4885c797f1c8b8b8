"""The paired bootstrap against brute force (every resample of a small test set enumerated and scored
by the metric on the materialised copy), its coverage on simulated classifiers with a known accuracy,
its pairing, and the stored predictions it reads."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hearfuse.evaluation import predictions
from hearfuse.evaluation.metrics import METRICS, score
from hearfuse.evaluation.predictions import FoldPredictions, Predictions
from hearfuse.evaluation.uncertainty import (
    RESAMPLES,
    Estimate,
    PairedBootstrap,
    compare,
    fold_replicates,
    percentile_interval,
    resample_items,
)

LABELS = ["a", "b", "c"]


def every_resample(n: int) -> np.ndarray:
    """All n^n ordered draws of n items with replacement: the exact bootstrap distribution."""
    return np.array(list(itertools.product(range(n), repeat=n)))


def exact_interval(values: list[float]) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles as order statistics, by hand: the smallest value whose share
    of values at or below it reaches the level."""
    ordered = sorted(values)
    pick = [ordered[math.ceil(level * len(ordered) - 1e-9) - 1] for level in (0.025, 0.975)]
    return pick[0], pick[1]


def scene_fold(seed: int, n: int, split: str = "test", multilabel: bool = False) -> FoldPredictions:
    rng = np.random.default_rng(seed)
    probabilities = np.round(rng.random((n, len(LABELS))), 1).astype(np.float32)  # ties too
    if multilabel:
        targets = (rng.random((n, len(LABELS))) < 0.5).astype(np.float32)
    else:
        targets = np.eye(len(LABELS), dtype=np.float32)[rng.integers(0, len(LABELS), n)]
    files = tuple(f"{split}_clip{i}.wav" for i in range(n))
    return FoldPredictions(split, files, probabilities, targets)


def event_fold(seed: int, n: int) -> FoldPredictions:
    rng = np.random.default_rng(seed)
    predicted, references = {}, {}
    files = tuple(f"scene{i}.wav" for i in range(n))
    for name in files:
        starts = np.sort(rng.uniform(0, 4000, 3))
        references[name] = [
            {"label": str(rng.choice(LABELS)), "start": float(a), "end": float(a + 400)} for a in starts
        ]
        predicted[name] = [  # some hits (shifted less than 200 ms), some misses and insertions
            {"label": e["label"] if rng.random() < 0.7 else "a", "start": e["start"] + shift, "end": e["end"] + shift}
            for e, shift in zip(references[name], rng.uniform(-300, 300, 3))
            if rng.random() < 0.8
        ]
    return FoldPredictions("test", files, predicted=predicted, references=references)


# ---------------------------------------------------------------------------------------------
# against brute force


@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce")  # d_prime: mean of +inf and -inf
@pytest.mark.parametrize("metric", ["top1_acc", "chroma_acc", "mAP", "d_prime"])
def test_scene_resamples_score_as_the_metric_on_the_materialised_copy(metric):
    fold = scene_fold(3, 4, multilabel=metric in ("mAP", "d_prime"))
    items = every_resample(4)
    resampled = fold_replicates(fold, metric, LABELS, items)
    expected = [
        score(metric, fold.probabilities[rows].copy(), fold.targets[rows].copy(), label_vocabulary=LABELS)
        for rows in items
    ]
    np.testing.assert_array_equal(resampled, expected)  # bit for bit, NaN where the metric is undefined
    interval = percentile_interval(resampled)
    defined = [value for value in expected if not math.isnan(value)]
    assert (interval.low, interval.high) == exact_interval(defined)
    assert interval.undefined == len(expected) - len(defined)


@pytest.mark.parametrize("metric", ["event_onset_200ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er"])
def test_event_resamples_count_a_repeated_file_twice(metric):
    fold = event_fold(5, 4)
    items = every_resample(4)
    resampled = fold_replicates(fold, metric, LABELS, items)
    expected = []
    for rows in items:  # a file drawn twice is two files: renamed copies
        names = [f"{fold.files[i]}#{copy}" for copy, i in enumerate(rows)]
        predicted = {name: fold.predicted[fold.files[i]] for name, i in zip(names, rows)}
        references = {name: fold.references[fold.files[i]] for name, i in zip(names, rows)}
        expected.append(score(metric, predicted, references, label_vocabulary=LABELS))
    np.testing.assert_allclose(resampled, expected, rtol=1e-15, atol=0)
    assert len(set(expected)) > 10  # a distribution, not a constant
    assert (percentile_interval(resampled).low, percentile_interval(resampled).high) == exact_interval(expected)


def test_a_kfold_score_resamples_each_fold_and_averages_them():
    """Two folds of 3 clips: every pair of the folds' 27 resamples, scored as the kit aggregates."""
    folds = (scene_fold(1, 3, "fold00"), scene_fold(2, 3, "fold01"))
    model = Predictions("scene", tuple(LABELS), folds)
    draws = every_resample(3)
    items = [np.repeat(draws, len(draws), axis=0), np.tile(draws, (len(draws), 1))]  # the product of the two
    bootstrap = PairedBootstrap([fold.files for fold in folds], items, "top1_acc")
    estimate = bootstrap.score(model)
    per_fold = [
        [score("top1_acc", f.probabilities[r], f.targets[r], label_vocabulary=LABELS) for r in draws] for f in folds
    ]
    means = [(a + b) / 2 for a, b in itertools.product(*per_fold)]
    assert (estimate.interval.low, estimate.interval.high) == exact_interval(means)
    assert [(f.interval.low, f.interval.high) for f in estimate.folds] == [
        exact_interval(values * len(draws)) for values in per_fold
    ]
    assert estimate.value == np.mean(model.score("top1_acc"))


def test_drawn_resamples_approach_the_exact_distribution():
    fold = scene_fold(7, 5)
    exact = fold_replicates(fold, "top1_acc", LABELS, every_resample(5))
    drawn = fold_replicates(fold, "top1_acc", LABELS, resample_items([5], resamples=20000, seed=1)[0])
    for value in np.unique(exact):  # the same CDF within Monte Carlo error
        assert abs(np.mean(drawn <= value) - np.mean(exact <= value)) < 0.015


def test_resamples_depend_on_seed_fold_and_size_only():
    first, second = resample_items([5, 7], resamples=50), resample_items([5, 7], resamples=50)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert first[0].shape == (50, 5) and first[1].shape == (50, 7) and first[1].max() == 6
    assert not np.array_equal(first[0], resample_items([5], resamples=50, seed=1)[0])
    with pytest.raises(ValueError, match="at least 1"):
        resample_items([5], resamples=0)


# ---------------------------------------------------------------------------------------------
# coverage on simulated classifiers


def simulated(rng: np.random.Generator, correct: np.ndarray) -> FoldPredictions:
    """Class probabilities whose argmax is the target where ``correct``, another class elsewhere."""
    n, labels = len(correct), 5
    target = rng.integers(0, labels, n)
    predicted = np.where(correct, target, (target + rng.integers(1, labels, n)) % labels)
    probabilities = rng.random((n, labels)) * 0.5
    probabilities[np.arange(n), predicted] = 1.0
    files = tuple(f"clip{i:04d}.wav" for i in range(n))
    return FoldPredictions("test", files, probabilities, np.eye(labels)[target])


def test_95_percent_intervals_cover_a_known_accuracy_about_95_percent_of_the_time():
    """400 test sets of 300 clips from a classifier right 70 % of the time (and a second one, right
    75 %, wrong mostly where the first is): the score's interval covers 0.70, the paired difference's
    covers 0.05, each in 93-97 % of the test sets."""
    rng = np.random.default_rng(2021)
    labels = tuple("vwxyz")
    covered = {"score": 0, "difference": 0}
    for simulation in range(400):
        first_right = rng.random(300) < 0.70
        # the second is right where the first is, and on 1/6 of the rest: 0.70 + 0.30 / 6 = 0.75
        second_right = first_right | (rng.random(300) < 1 / 6)
        first = Predictions("scene", labels, (simulated(rng, first_right),))
        second = Predictions("scene", labels, (simulated(rng, second_right),))
        comparison = compare({"first": first, "second": second}, "top1_acc", reference="first", seed=simulation)
        covered["score"] += not comparison.scores["first"].interval.excludes(0.70)
        covered["difference"] += not comparison.differences["second"].interval.excludes(0.05)
    assert 0.93 <= covered["score"] / 400 <= 0.97
    assert 0.93 <= covered["difference"] / 400 <= 0.97


# ---------------------------------------------------------------------------------------------
# pairing


def test_identical_models_differ_by_exactly_zero_on_every_resample():
    folds = (scene_fold(1, 30, "fold00"), scene_fold(2, 40, "fold01"))
    model = Predictions("scene", tuple(LABELS), folds)
    twin = Predictions("scene", tuple(LABELS), tuple(f.in_file_order() for f in folds))  # clips in another order
    comparison = compare({"model": model, "twin": twin}, "top1_acc")
    difference = comparison.differences["twin"]
    assert (difference.value, difference.interval.low, difference.interval.high) == (0.0, 0.0, 0.0)
    assert all((f.value, f.interval.low, f.interval.high) == (0.0, 0.0, 0.0) for f in difference.folds)
    assert not difference.significant
    assert comparison.scores["model"] == comparison.scores["twin"]


def test_pairing_narrows_the_difference_of_correlated_models():
    """The second model is the first with 6 of 200 errors fixed: paired, the gain is significant;
    scored on independent resamples, it would not be."""
    rng = np.random.default_rng(0)
    right = rng.random(200) < 0.6
    better = right.copy()
    better[np.flatnonzero(~right)[:6]] = True
    first = Predictions("scene", tuple("vwxyz"), (simulated(np.random.default_rng(1), right),))
    second = Predictions("scene", tuple("vwxyz"), (simulated(np.random.default_rng(1), better),))
    comparison = compare({"first": first, "second": second}, "top1_acc")
    assert comparison.reference == "second"
    paired = comparison.differences["first"]
    assert paired.significant and paired.interval.high < 0 and math.isclose(paired.value, -6 / 200)
    independent = (
        PairedBootstrap.drawn(first, "top1_acc", seed=1).replicates(first)[1]
        - (PairedBootstrap.drawn(second, "top1_acc", seed=2).replicates(second)[1])
    )
    assert not percentile_interval(independent[0]).excludes(0.0)


def test_the_best_follows_the_metric_direction_and_other_files_are_not_paired():
    fold = event_fold(1, 6)
    worse = FoldPredictions("test", fold.files, predicted={name: [] for name in fold.files}, references=fold.references)
    models = {name: Predictions("event", tuple(LABELS), (f,)) for name, f in (("good", fold), ("silent", worse))}
    assert compare(models, "segment_1s_er").reference == "good"  # lower is better
    assert compare(models, "event_onset_200ms_fms").reference == "good"
    assert compare(models, "segment_1s_er", higher_is_better=True).reference == "silent"
    elsewhere = Predictions("event", tuple(LABELS), (event_fold(1, 5),))
    comparison = compare({**models, "elsewhere": elsewhere}, "event_onset_200ms_fms")
    assert "other files" in comparison.unavailable["elsewhere"] and "elsewhere" not in comparison.differences


def test_a_named_baseline_is_compared_with_every_model_on_the_same_resamples():
    folds = {name: scene_fold(seed, 50) for name, seed in (("a", 1), ("b", 2), ("c", 3))}
    models = {name: Predictions("scene", tuple(LABELS), (fold,)) for name, fold in folds.items()}
    comparison = compare(models, "top1_acc", baseline="c", resamples=200)
    bootstrap = PairedBootstrap.drawn(models["a"], "top1_acc", resamples=200)
    for name in models:
        expected = bootstrap.difference(models[name], models["c"])
        assert comparison.baseline_differences[name] == expected
        assert comparison.differences[name] == bootstrap.difference(models[name], models[comparison.reference])
    assert comparison.baseline_differences["c"].value == 0.0 and not comparison.baseline_differences["c"].significant
    absent = compare(models, "top1_acc", baseline="d", resamples=10)  # no run of it on this task
    assert absent.baseline is None and absent.baseline_differences == {}


def test_the_files_most_models_were_tested_on_are_the_ones_resampled():
    fold = scene_fold(1, 12)
    elsewhere = Predictions("scene", tuple(LABELS), (scene_fold(2, 10),))
    models = {"elsewhere": elsewhere, **{name: Predictions("scene", tuple(LABELS), (fold,)) for name in "ab"}}
    comparison = compare(models, "top1_acc", resamples=20)
    assert set(comparison.scores) == {"a", "b"} and set(comparison.unavailable) == {"elsewhere"}


def test_an_undefined_interval_marks_nothing_significant():
    interval = percentile_interval(np.full(10, math.nan))
    assert math.isnan(interval.low) and interval.undefined == 10
    assert not interval.excludes(0.0) and not Estimate(math.nan, interval).significant
    assert Estimate(0.1, percentile_interval(np.linspace(0.05, 0.2, 100))).significant


# ---------------------------------------------------------------------------------------------
# stored predictions


@pytest.mark.parametrize("kind", ["scene", "event"])
def test_predictions_are_stored_exactly_and_used_only_with_their_result(tmp_path: Path, kind):
    fold = scene_fold(4, 20) if kind == "scene" else event_fold(4, 8)
    model = Predictions(kind, tuple(LABELS), (fold, fold))
    result_file = tmp_path / "model" / "task-v1.0-full.json"
    record = {predictions.KEY: predictions.write(result_file, model)}
    assert (tmp_path / "model" / "task-v1.0-full.predictions.npz").is_file()
    loaded = predictions.read(result_file, record)
    for metric in ("top1_acc", "mAP") if kind == "scene" else ("event_onset_200ms_fms", "segment_1s_er"):
        assert loaded.score(metric) == model.score(metric)
    if kind == "event":
        assert loaded.folds[0].predicted == fold.predicted and loaded.folds[0].references == fold.references

    assert "not stored" in predictions.stale(result_file, {})
    predictions.write(result_file, Predictions(kind, tuple(LABELS), (fold,)))  # another run's, never this one's
    assert "not the one it was written with" in predictions.stale(result_file, record)
    with pytest.raises(ValueError, match="not the one"):
        predictions.read(result_file, record)
    predictions.path_for(result_file).unlink()
    assert "missing" in predictions.stale(result_file, record)


def test_a_result_file_gives_its_predictions(tmp_path: Path):
    model = Predictions("scene", tuple(LABELS), (scene_fold(4, 20),))
    result_file = tmp_path / "model" / "task-v1.0-full.linear.json"
    result_file.parent.mkdir()
    result_file.write_text(json.dumps({"status": "ok", predictions.KEY: predictions.write(result_file, model)}))
    assert predictions.load(result_file).score("top1_acc") == model.score("top1_acc")
    result_file.write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ValueError, match="holds no score"):
        predictions.load(result_file)


def test_counted_metrics_score_as_their_functions():
    """The metrics of summed counts are their count functions' scores: checked on the tasks' metrics."""
    fold = event_fold(9, 5)
    for name, metric in METRICS.items():
        if metric.counts is None:
            continue
        source = fold if name.startswith(("event", "segment")) else scene_fold(9, 12)
        counts = source.item_counts(name, LABELS)
        assert float(metric.counts.score(counts.sum(axis=0))) == source.score(name, LABELS)


def test_map_of_weights_is_map_of_the_repeated_clips():
    """Larger than brute force allows: 60 clips with tied scores, 300 drawn resamples."""
    fold = scene_fold(11, 60, multilabel=True)
    items = resample_items([60], resamples=300, seed=3)[0]
    expected = [score("mAP", fold.probabilities[rows], fold.targets[rows], label_vocabulary=LABELS) for rows in items]
    np.testing.assert_allclose(fold_replicates(fold, "mAP", LABELS, items), expected, rtol=1e-13, atol=0)


def test_the_commands_default_to_the_bootstraps_resamples():
    from hearfuse.cli import common

    assert common.RESAMPLES == RESAMPLES
