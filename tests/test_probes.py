"""The fast probes (``--probe linear|knn``) against scikit-learn, how evaluate and the report keep them
apart from the kit's MLP, and a probe registered from outside taken like the built-in ones."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.evaluation.downstream import KnnPredictor, column_moments
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.protocol import (
    L2_DECADES,
    LINEAR_DEFINITION,
    PROBES,
    KnnParameters,
    Probe,
    Protocol,
    register_probe,
)
from hearfuse.evaluation.report import write_report
from hearfuse.evaluation.results import load_results

from . import taskgen

CREPE_TINY = FusionConfig(
    "crepe_tiny", (MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 50, "scene_hop_ms": 50}),)
)


def _clusters(seed: int, n: int = 300, dims: int = 16, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dims)) * 2
    labels = rng.integers(0, classes, n)
    return (centres[labels] + rng.normal(size=(n, dims))).astype(np.float32), labels


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_probabilities_equal_scikit_learns_cosine_neighbours(k):
    x, labels = _clusters(0)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    ours = KnnPredictor.fit(x[:200], one_hot[:200], KnnParameters(k)).predict(x[200:])
    reference = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(x[:200], labels[:200])
    np.testing.assert_allclose(ours, reference.predict_proba(x[200:]), atol=1e-6)


def test_knn_multilabel_is_the_per_label_neighbour_vote():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    y = (rng.random((120, 3)) < 0.4).astype(np.float32)
    ours = KnnPredictor.fit(x[:90], y[:90], KnnParameters(5)).predict(x[90:], "multilabel")
    reference = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute").fit(x[:90], y[:90])
    expected = np.stack([p[:, 1] for p in reference.predict_proba(x[90:])], axis=1)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_column_moments_are_numpys_in_two_passes():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(1000, 5)) * [1, 10, 100, 0.1, 3] + [5, -2, 0, 1e4, 7]).astype(np.float32)
    mean, std = column_moments(x, chunk=128, dtype=torch.float64)
    np.testing.assert_allclose(mean.numpy(), x.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std.numpy(), x.astype(np.float64).std(axis=0), rtol=1e-9)  # no cancellation at 1e4


def test_the_linear_and_knn_grids():
    metadata = {"task_name": "x", "evaluation_params": {"task_specific_param_grid": {"check_val_every_n_epoch": [5]}}}
    assert [p.l2 for p in Protocol(probe="linear").grid(metadata)] == list(L2_DECADES)
    assert [p.k for p in Protocol(probe="knn").grid(metadata)] == [1, 3, 5, 10, 20, 50]
    assert Protocol().to_dict() == {k: v for k, v in Protocol(probe="mlp").to_dict().items()}
    assert "probe" not in Protocol().to_dict() and Protocol(probe="knn").to_dict()["probe"] == "knn"
    # what defines the linear probe is recorded: results of another definition are stale
    assert Protocol(probe="linear").to_dict()["candidates"] == LINEAR_DEFINITION
    assert Protocol(probe="knn").deviations() == ["probe"]


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """CREPE tiny on a scene task and an event task under all three probes, into one results folder."""
    root = tmp_path_factory.mktemp("probes")
    tasks = root / "tasks"
    taskgen.scene_task(tasks)
    taskgen.event_task(tasks)
    results = {}
    for probe in ("mlp", "linear", "knn"):
        settings = EvaluationSettings(
            root / "cache",
            root / "results",
            protocol=Protocol(grid_points=1, max_epochs=9, probe=probe),
            progress=False,
        )
        results[probe] = {r["task"]: r for r in evaluate([CREPE_TINY], tasks, settings)}
    return root, results


def test_every_probe_scores_and_records_itself_and_knn_skips_event_tasks(probed):
    root, results = probed
    for probe in ("mlp", "linear"):
        assert {r["status"] for r in results[probe].values()} == {"ok"}
        assert all(r["probe"] == probe for r in results[probe].values())
    knn = results["knn"]
    assert knn["tones_multiclass-v1-full"]["status"] == "ok"
    assert knn["tone_events-v1-full"]["status"] == "skipped"
    assert "scene tasks only" in knn["tone_events-v1-full"]["reason"]
    assert [g["params"] for g in knn["tones_multiclass-v1-full"]["grid"]][:2] == [{"k": 1}, {"k": 3}]
    names = sorted(p.name for p in (root / "results" / "crepe_tiny").glob("*.json"))
    assert "tones_multiclass-v1-full.json" in names and "tones_multiclass-v1-full.linear.json" in names
    assert "tone_events-v1-full.knn.json" in names


def test_the_report_keeps_one_table_per_probe(probed):
    root, _ = probed
    assert len(load_results(root / "results")) == 6
    markdown, chart = write_report(root / "results")
    text = markdown.read_text()
    assert (
        text.index("## Primary metric\n")
        < text.index("## Primary metric, linear probe")
        < text.index("## Primary metric, knn probe")
    )
    knn_table = text[text.index("## Primary metric, knn probe") :]
    assert "| crepe_tiny |" in knn_table and "n/a" in knn_table.split("\n## ")[0]
    assert (root / "results" / "report-linear.png").is_file() and (root / "results" / "report-knn.png").is_file()
    assert "0 failed" in text


def test_the_probe_option_through_the_command_line(probed, capsys):
    from hearfuse.cli import main

    root, _ = probed
    config = root / "crepe_tiny.json"
    config.write_text(json.dumps(CREPE_TINY.to_dict()))
    command = ["evaluate", "-m", str(config), "--tasks", str(root / "tasks"), "--results", str(root / "results")]
    assert main([*command, "--probe", "knn", "--cache", str(root / "cache"), "-q"]) == 0  # skipped is not failed
    assert "skipped: crepe_tiny on tone_events-v1-full" in capsys.readouterr().out


@dataclass(frozen=True)
class Temperature:
    """The toy probe's one hyperparameter."""

    temperature: float

    def to_dict(self) -> dict:
        return {"temperature": self.temperature}


@dataclass
class Centroids:
    params: Temperature
    means: np.ndarray  # (labels, D)
    validation_score: float = math.nan
    monitor: str = "score"
    best_epoch: int = 0
    epochs_run: int = 0
    postprocessing: None = None

    def predict(self, x, prediction_type: str, device: str = "cpu") -> np.ndarray:
        logits = -((np.asarray(x, np.float64)[:, None, :] - self.means) ** 2).sum(-1) / self.params.temperature
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


class NearestCentroid(Probe):
    """A fourth probe, all of it here: nearest class mean, softmax over negative squared distances."""

    summary = "nearest class mean"

    def not_applicable(self, embedding_type: str) -> str | None:
        return None if embedding_type == "scene" else "scene tasks only"

    def grid(self, protocol, metadata) -> list[Temperature]:
        return [Temperature(1000.0), Temperature(1.0)]

    def fit(self, fold, params: Temperature, protocol) -> Centroids:
        x, y = np.asarray(fold.x_train, np.float64), np.asarray(fold.y_train, np.float64)
        fitted = Centroids(params, (y.T @ x) / np.maximum(y.sum(axis=0), 1)[:, None])
        fitted.validation_score, _ = fold.validate(fitted.predict(fold.valid.x, fold.prediction_type))
        return fitted


@pytest.fixture
def nearest_centroid():
    probe = register_probe("centroid", NearestCentroid())
    yield probe
    del PROBES["centroid"]


def test_a_probe_registered_by_name_runs_through_evaluate_the_report_and_the_command_line(probed, nearest_centroid):
    from hearfuse.cli import build_parser

    root, _ = probed
    results_dir = root / "centroid-results"
    settings = EvaluationSettings(root / "cache", results_dir, protocol=Protocol(probe="centroid"), progress=False)
    results = {r["task"]: r for r in evaluate([CREPE_TINY], root / "tasks", settings)}
    scene, event = results["tones_multiclass-v1-full"], results["tone_events-v1-full"]
    assert scene["status"] == "ok" and scene["probe"] == "centroid" and scene["protocol"]["probe"] == "centroid"
    grid = scene["grid"]
    assert [g["params"] for g in grid] == [{"temperature": 1000.0}, {"temperature": 1.0}]
    best = max(g["validation_score"] for g in grid)
    assert scene["validation_score"] == best  # and on a tie the earlier candidate, as for every probe
    assert scene["selected_hyperparameters"] == next(g["params"] for g in grid if g["validation_score"] == best)
    assert set(scene["test"]) == {"top1_acc", "pitch_acc"} and scene["test"]["top1_acc"]["mean"] > 0.5  # chance 1/3
    assert event["status"] == "skipped" and event["reason"] == "scene tasks only"
    stored = results_dir / "crepe_tiny" / "tones_multiclass-v1-full.centroid.json"
    assert json.loads(stored.read_text())["test"] == scene["test"]
    assert evaluate([CREPE_TINY], root / "tasks", settings, only=["tones_multiclass"])[0] == scene  # reused
    markdown, _ = write_report(results_dir)
    assert "## Primary metric, centroid probe" in markdown.read_text()
    assert build_parser().parse_args(["evaluate", "--probe", "centroid"]).probe == "centroid"
