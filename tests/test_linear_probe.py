"""The linear probe (``--probe linear``) against scikit-learn: the same L2-regularised logistic
regression on standardised inputs (``C = 1 / (l2 * n_train)``), the penalty a brute-force search picks,
frame-level event probes, and determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.linear import LogisticProblem, best_candidate, principal_axes, search
from hearfuse.evaluation.metrics import METRICS
from hearfuse.evaluation.protocol import L2_DECADES, L2_REFINEMENT, LinearParameters, Protocol

from . import taskgen

#: Probabilities of the two solutions agree to this: both solve to a gradient of about 1e-6, which at
#: the weakest penalty tested (1e-4, nearly separable data) leaves them a few 1e-3 apart on a flat optimum.
ATOL = 5e-3


def _data(seed: int, n: int, dims: int, classes: int, multilabel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Noisy clusters with columns of very different scales and offsets, and one constant column."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims))
    labels = rng.integers(0, classes, n)
    x = centres[labels] + rng.normal(size=(n, dims)) * 1.5
    x = x * rng.uniform(0.01, 100, dims) + rng.uniform(-50, 50, dims)
    x[:, 0] = 3.25
    if multilabel:
        y = (rng.random((n, classes)) < 0.3) | (np.eye(classes)[labels] > 0)
    else:
        y = np.eye(classes)[labels]
    return x.astype(np.float32), y.astype(np.float32)


def _scaler(rows: np.ndarray):
    """scikit-learn's standardisation, in float64 (given float32 it would fit in float32 too)."""
    scaler = StandardScaler().fit(rows.astype(np.float64))
    return lambda x: scaler.transform(x.astype(np.float64))


def _reference(x: np.ndarray, labels: np.ndarray, l2: float, fit_rows: int) -> LogisticRegression:
    return LogisticRegression(C=1.0 / (l2 * fit_rows), tol=1e-10, max_iter=20000).fit(x, labels)


@pytest.mark.parametrize("n, dims, classes", [(40, 5, 3), (300, 24, 4), (1200, 64, 6), (60, 90, 4)])
@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
def test_multiclass_probabilities_equal_scikit_learns_logistic_regression(n, dims, classes, l2):
    x, y = _data(n + dims, n, dims, classes)
    problem = LogisticProblem(x[: n // 2], y[: n // 2], "multiclass")
    predictor = problem.fit(LinearParameters(l2))
    assert predictor.converged
    scale = _scaler(x[: n // 2])
    reference = _reference(scale(x[: n // 2]), y[: n // 2].argmax(1), l2, n // 2)
    expected = np.zeros((n - n // 2, classes))
    expected[:, reference.classes_] = reference.predict_proba(scale(x[n // 2 :]))
    np.testing.assert_allclose(predictor.predict(x[n // 2 :], "multiclass"), expected, atol=ATOL)


@pytest.mark.parametrize("n, dims, labels", [(60, 6, 3), (400, 32, 5), (40, 70, 3)])
@pytest.mark.parametrize("l2", [1e-3, 1e-1])
def test_multilabel_probabilities_are_one_scikit_learn_regression_per_label(n, dims, labels, l2):
    x, y = _data(7 * n, n, dims, labels, multilabel=True)
    predictor = LogisticProblem(x[: n // 2], y[: n // 2], "multilabel").fit(LinearParameters(l2))
    scale = _scaler(x[: n // 2])
    train, test = scale(x[: n // 2]), scale(x[n // 2 :])
    ours = predictor.predict(x[n // 2 :], "multilabel")
    for label in range(labels):
        expected = _reference(train, y[: n // 2, label], l2, n // 2).predict_proba(test)[:, 1]
        np.testing.assert_allclose(ours[:, label], expected, atol=ATOL)


def test_a_label_or_class_absent_from_training_gets_probability_near_zero():
    """scikit-learn cannot fit a label with one value, nor score a class it never saw (one-vs-rest and
    multinomial both give such a class probability 0): the unpenalised bias goes towards minus infinity."""
    x, y = _data(3, 200, 8, 4)
    present = y[:, 3] == 0  # class 3 never occurs in training
    train_x, train_y = x[present][:120], y[present][:120]
    multiclass = LogisticProblem(train_x, train_y, "multiclass").fit(LinearParameters(1e-2))
    scale = _scaler(train_x)
    reference = _reference(scale(train_x), train_y.argmax(1), 1e-2, len(train_x))
    ours = multiclass.predict(x[150:], "multiclass")
    assert ours[:, 3].max() < 1e-4
    np.testing.assert_allclose(ours[:, :3], reference.predict_proba(scale(x[150:])), atol=ATOL)
    multilabel = LogisticProblem(train_x, train_y, "multilabel").fit(LinearParameters(1e-2))
    assert multilabel.predict(x[150:], "multilabel")[:, 3].max() < 1e-4


def test_the_chosen_penalty_is_the_one_a_brute_force_search_picks():
    """Decades, then the refinement around the best decade, scored on validation with the task's metric;
    ties go to the stronger penalty. The brute force refits every candidate with scikit-learn."""
    x, y = _data(11, 240, 40, 5)
    train, valid = slice(0, 80), slice(80, 140)  # few training rows: the penalty matters
    vocabulary = list("abcde")
    metric = METRICS["top1_acc"]

    def score(probabilities: np.ndarray) -> float:
        return metric(probabilities, y[valid], label_vocabulary=vocabulary)

    problem = LogisticProblem(x[train], y[train], "multiclass")
    candidates = search(problem, lambda p: (score(p.predict(x[valid], "multiclass")), None), metric.rank)
    chosen = best_candidate(candidates, metric.rank)

    scale = _scaler(x[train])

    def brute(l2: float) -> float:
        fitted = _reference(scale(x[train]), y[train].argmax(1), l2, 80)
        return score(fitted.predict_proba(scale(x[valid])))

    coarse = {l2: brute(l2) for l2 in L2_DECADES}
    best_decade = max(coarse, key=lambda l2: (coarse[l2], l2))
    everything = coarse | {best_decade * f: brute(best_decade * f) for f in L2_REFINEMENT}
    expected = max(everything, key=lambda l2: (everything[l2], l2))
    assert [c.params.l2 for c in candidates] == sorted(everything, reverse=True)
    assert [c.validation_score for c in candidates] == [everything[l2] for l2 in sorted(everything, reverse=True)]
    assert chosen.params.l2 == expected


def test_an_event_tasks_frame_probe_agrees_with_scikit_learn_on_the_frame_matrix():
    """Event tasks are probed per frame, one sigmoid per label, on the rows of every frame."""
    rng = np.random.default_rng(5)
    frames = rng.normal(size=(3000, 12)).astype(np.float32) * 4 + 1
    active = (frames[:, :3] + rng.normal(size=(3000, 3)) > 2).astype(np.float32)  # label k follows column k
    predictor = LogisticProblem(frames[:2000], active[:2000], "multilabel").fit(LinearParameters(1e-3))
    scale = _scaler(frames[:2000])
    for label in range(3):
        reference = _reference(scale(frames[:2000]), active[:2000, label], 1e-3, 2000)
        np.testing.assert_allclose(
            predictor.predict(frames[2000:], "multilabel")[:, label],
            reference.predict_proba(scale(frames[2000:]))[:, 1],
            atol=ATOL,
        )


def test_fewer_rows_than_columns_find_the_axes_from_the_gram_matrix():
    """The span of 30 rows of 200 columns (rank 30 after centring: 29): the moment's eigenvectors found from
    the (30, 30) Gram matrix are numpy's (D, D) eigenvectors above rounding, as a projector (eigenvectors
    of repeated values are any basis of their space), orthonormal, eigenvalues equal."""
    rng = np.random.default_rng(4)
    rows = rng.standard_normal((30, 200)) * rng.uniform(0.1, 3.0, 200)
    rows -= rows.mean(0)
    axes = principal_axes([torch.from_numpy(rows[:17]), torch.from_numpy(rows[17:])]).numpy()
    values, vectors = np.linalg.eigh(rows.T @ rows / 30)
    kept = vectors[:, values > values.max() * 200 * np.finfo(np.float64).eps]
    assert axes.shape == kept.shape == (200, 29)
    np.testing.assert_allclose(axes.T @ axes, np.eye(29), atol=1e-12)
    np.testing.assert_allclose(axes @ axes.T, kept @ kept.T, atol=1e-10)
    np.testing.assert_allclose(np.diag(axes.T @ (rows.T @ rows / 30) @ axes), values[-29:], rtol=1e-10)


def test_rows_outnumbering_the_columns_only_in_a_later_chunk_are_streamed_into_the_moment():
    """Two chunks held (40 rows of 50 columns), the third makes them more: the (D, D) moment of all 60."""
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((60, 50)) * rng.uniform(0.1, 3.0, 50)
    axes = principal_axes(torch.from_numpy(rows[start : start + 20]) for start in (0, 20, 40)).numpy()
    values, vectors = np.linalg.eigh(rows.T @ rows / 60)
    assert axes.shape == (50, 50)
    np.testing.assert_allclose(axes @ axes.T, vectors @ vectors.T, atol=1e-10)
    np.testing.assert_allclose(np.diag(axes.T @ (rows.T @ rows / 60) @ axes), values, rtol=1e-10)


def test_rows_read_in_chunks_give_the_same_optimum(monkeypatch):
    """The loss and gradient accumulated chunk by chunk are the whole batch's (memory bounded)."""
    import hearfuse.evaluation.linear as linear

    x, y = _data(2, 500, 16, 3)
    whole = LogisticProblem(x, y, "multiclass").fit(LinearParameters(1e-3))
    monkeypatch.setattr(linear, "CHUNK_ROWS", 37)
    chunked = LogisticProblem(x, y, "multiclass").fit(LinearParameters(1e-3))
    np.testing.assert_allclose(chunked.predict(x, "multiclass"), whole.predict(x, "multiclass"), atol=1e-6)
    # no free memory: nothing held, every chunk standardised again from the stored rows at each evaluation
    monkeypatch.setattr(linear, "free_bytes", lambda device: 0)
    streamed = LogisticProblem(x, y, "multiclass")
    assert streamed.held is None
    np.testing.assert_allclose(
        streamed.fit(LinearParameters(1e-3)).predict(x, "multiclass"), whole.predict(x, "multiclass"), atol=1e-6
    )


CREPE_TINY = FusionConfig(
    "crepe_tiny", (MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 50, "scene_hop_ms": 50}),)
)


def test_evaluate_with_the_linear_probe_is_deterministic_and_records_its_definition(tmp_path):
    tasks = tmp_path / "tasks"
    taskgen.scene_task(tasks, multilabel=True)

    def run(name: str) -> dict:
        settings = EvaluationSettings(
            tmp_path / "cache", tmp_path / name, protocol=Protocol(probe="linear"), progress=False
        )
        (result,) = evaluate([CREPE_TINY], tasks, settings)
        return result

    first, second = run("first"), run("second")
    assert first["status"] == "ok"
    strip = lambda r: json.dumps({k: v for k, v in r.items() if k not in ("timings", "provenance")}, sort_keys=True)  # noqa: E731
    assert strip(first) == strip(second)
    assert [g["params"]["l2"] for g in first["grid"]] == sorted(
        (g["params"]["l2"] for g in first["grid"]), reverse=True
    )
    assert len(first["grid"]) == len(L2_DECADES) + len(L2_REFINEMENT)
    assert first["protocol"]["candidates"]["l2_decades"] == list(L2_DECADES)
    assert first["selected_hyperparameters"]["l2"] in [g["params"]["l2"] for g in first["grid"]]


def test_results_of_the_earlier_linear_probe_are_recomputed_and_the_report_names_each_definition(tmp_path, caplog):
    import logging

    from hearfuse.evaluation.report import write_report

    tasks = tmp_path / "tasks"
    taskgen.scene_task(tasks, clips=12)
    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(probe="linear"), progress=False
    )
    (first,) = evaluate([CREPE_TINY], tasks, settings)
    (stored,) = (tmp_path / "results").glob("*/*.linear.json")
    earlier = json.loads(stored.read_text())
    earlier["provenance"]["protocol"]["candidates"] = [0.01, 0.001, 0.0001]  # what the Adam-trained layer recorded
    earlier["protocol"]["candidates"] = [0.01, 0.001, 0.0001]
    stored.write_text(json.dumps(earlier))
    text = write_report(tmp_path / "results")[0].read_text()
    assert "earlier linear probe" in text and "rerun `hearfuse evaluate --probe linear`" in text
    with caplog.at_level(logging.INFO, logger="hearfuse.evaluation.evaluate"):
        (again,) = evaluate([CREPE_TINY], tasks, settings)
    assert "recomputing crepe_tiny" in caplog.text
    assert again["protocol"]["candidates"]["l2_decades"] == list(L2_DECADES) and again["test"] == first["test"]
    text = write_report(tmp_path / "results")[0].read_text()
    assert "Linear probe: L2-regularised logistic regression" in text and "earlier linear probe" not in text
