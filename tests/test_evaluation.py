"""The HEAR evaluation protocol end to end on tiny generated tasks, and its pieces."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.evaluation import downstream
from hearfuse.evaluation.cache import EmbeddingError, embed_split, read_split
from hearfuse.evaluation.downstream import (
    HyperParameters,
    decode_events,
    frame_targets,
    hyperparameter_grid,
    train_predictor,
)
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.tasks import TaskError, load_task
from hearfuse.model import FusionModel
from hearfuse.upstream import CheckpointInfo, Family, Upstream, families, register_family
from hearfuse.upstream.base import centered_frame_count

from . import taskgen

CREPE_TINY = FusionConfig(
    "crepe_tiny", (MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 50, "scene_hop_ms": 50}),)
)


class NoiseUpstream(Upstream):
    """A 'representation' that ignores its input: the downstream model must sit near chance."""

    context_dependent = False
    num_states = 1
    feature_dim = 64
    hop_samples = 800
    receptive_field = 1

    def __init__(self):
        super().__init__()
        self.generator = torch.Generator().manual_seed(1234)

    def frame_centers_ms(self, num_samples, *, scene=False):
        return torch.arange(centered_frame_count(num_samples, 800, 0), dtype=torch.float64) * 50

    def visit_states(self, audio, visit, *, scene=False):
        frames = len(self.frame_centers_ms(audio.shape[-1]))
        visit(0, torch.randn(audio.shape[0], frames, 64, generator=self.generator))


if "noise" not in families():
    register_family(Family("noise", lambda checkpoint, **_: NoiseUpstream(), lambda _: True, {"-": CheckpointInfo(64, 1)}))
NOISE = FusionConfig("noise", (MemberConfig("noise", "noise", "-"),))


@pytest.fixture(scope="module")
def tasks_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    taskgen.scene_task(root)
    taskgen.scene_task(root, multilabel=True)
    taskgen.scene_task(root, kfold=True)
    taskgen.event_task(root)
    return root


@pytest.fixture(scope="module")
def results(tasks_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    settings = EvaluationSettings(out / "cache", out / "results", grid_points=2, max_epochs=90, progress=False)
    return {r["model"] + "/" + r["task"]: r for r in evaluate([CREPE_TINY, NOISE], tasks_root, settings)}, settings


def _primary(results, model, task):
    result = results[f"{model}/{task}"]
    assert result["status"] == "ok", result.get("error")
    return result["test"][result["metric"]]["mean"]


def test_informative_embedding_beats_chance_and_noise_sits_near_it(results):
    results, _ = results
    assert _primary(results, "crepe_tiny", "tones_multiclass-v1-full") >= 0.9
    assert _primary(results, "noise", "tones_multiclass-v1-full") <= 0.6  # chance is 1/3
    assert _primary(results, "crepe_tiny", "tones_multilabel-v1-full") >= 0.9
    assert _primary(results, "noise", "tones_multilabel-v1-full") <= 0.75  # chance mAP is the positive rate, ~0.5
    assert _primary(results, "crepe_tiny", "tone_events-v1-full") >= 0.7
    assert _primary(results, "noise", "tone_events-v1-full") <= 0.3


def test_kfold_task_scores_every_fold(results):
    results, _ = results
    result = results["crepe_tiny/tones_multiclass_kfold-v1-full"]
    assert result["status"] == "ok" and len(result["test"]["top1_acc"]["folds"]) == 3
    assert result["test"]["top1_acc"]["mean"] >= 0.9


def test_result_files_have_the_report_schema(results):
    results, settings = results
    stored = json.loads((settings.results_dir / "crepe_tiny" / "tone_events-v1-full.json").read_text())
    assert stored["metric"] == "event_onset_200ms_fms" and stored["higher_is_better"]
    assert set(stored["test"]) == {"event_onset_200ms_fms", "segment_1s_er"}
    assert stored["selected_event_postprocessing"]["median_filter_ms"] == 250.0
    assert len(stored["grid"]) == 2 and stored["config_fingerprint"] == CREPE_TINY.fingerprint()


def test_finished_results_are_not_recomputed(results, tasks_root, monkeypatch):
    _, settings = results
    import hearfuse.evaluation.evaluate as module

    monkeypatch.setattr(module, "evaluate_task", lambda *a, **k: pytest.fail("recomputed a finished result"))
    again = evaluate([CREPE_TINY], tasks_root, settings, only=["tones_multiclass"])
    assert len(again) == 1 and again[0]["status"] == "ok"


def test_results_are_recomputed_under_another_protocol(results, tasks_root, monkeypatch):
    _, settings = results
    import hearfuse.evaluation.evaluate as module

    stored = json.loads((settings.results_dir / "crepe_tiny" / "tones_multiclass-v1-full.json").read_text())
    assert stored["protocol"] == {"grid_points": 2, "max_epochs": 90, "seed": 0}
    recomputed = []
    monkeypatch.setattr(module, "evaluate_task", lambda model, task, s: recomputed.append(s.protocol()) or {})
    monkeypatch.setattr(module, "_write_json", lambda *a: None)  # keep the module's results intact
    fewer_epochs = dataclasses.replace(settings, max_epochs=30)
    evaluate([CREPE_TINY], tasks_root, fewer_epochs, only=["tones_multiclass"])
    assert recomputed == [{"grid_points": 2, "max_epochs": 30, "seed": 0}]


def test_settings_reject_an_empty_grid_and_trainings_without_a_validation_check(tasks_root, tmp_path, capsys):
    for points in (0, 17):
        with pytest.raises(ValueError, match="between 1 and 16"):
            EvaluationSettings(tmp_path, tmp_path, grid_points=points)
    with pytest.raises(ValueError, match="at least 3"):
        EvaluationSettings(tmp_path, tmp_path, max_epochs=2)
    from hearfuse.cli import main

    command = ["evaluate", "-m", "crepe", "--tasks", str(tasks_root), "--results", str(tmp_path), "--grid-points", "0"]
    assert main(command) == 2
    assert "grid_points must be between 1 and 16" in capsys.readouterr().err


def test_same_seed_same_scores(tasks_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        settings = EvaluationSettings(tmp_path / "cache", tmp_path / name, grid_points=2, max_epochs=30, progress=False)
        runs.append(evaluate([CREPE_TINY], tasks_root, settings, only=["tones_multilabel"])[0])
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["grid"] == runs[1]["grid"]


def test_a_failing_task_is_recorded_and_the_others_go_on(tasks_root, tmp_path):
    root = tmp_path / "tasks"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", root / "good-v1-full")
    broken = root / "broken-v1-full"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", broken)
    next((broken / "16000" / "test").iterdir()).unlink()
    settings = EvaluationSettings(tmp_path / "cache", tmp_path / "results", grid_points=1, max_epochs=9, progress=False)
    by_task = {r["task"]: r for r in evaluate([CREPE_TINY], root, settings)}
    assert by_task["good-v1-full"]["status"] == "ok"
    assert by_task["broken-v1-full"]["status"] == "failed" and "missing" in by_task["broken-v1-full"]["error"]
    from hearfuse.evaluation.report import write_report

    markdown, chart = write_report(settings.results_dir)
    assert "failed" in Path(markdown).read_text() and Path(chart).stat().st_size > 1000


def _edit(task_dir: Path, name: str, change) -> None:
    path = task_dir / name
    path.write_text(change(path.read_text()))


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("task_metadata.json", lambda t: t.replace('"scene"', '"clip"'), "embedding_type='clip'"),
        ("task_metadata.json", lambda t: t.replace('"top1_acc"', '"top5_acc"'), "unknown metric 'top5_acc'"),
        ("task_metadata.json", lambda t: t.replace('"split_mode"', '"mode_of_split"'), "missing 'split_mode'"),
        ("train.json", lambda t: t.replace('["low"]', '["bass"]', 1), "labels not in labelvocabulary.csv: ['bass']"),
        ("train.json", lambda t: t.replace('["low"]', '["low", "mid"]', 1), "has 2 labels, expected 1"),
        ("train.json", lambda t: t[:-2], "train.json is not valid JSON"),
        ("labelvocabulary.csv", lambda t: t.replace("2,high", "3,high"), "idx must be 0..n-1"),
    ],
)
def test_malformed_tasks_say_exactly_what_is_wrong(tasks_root, tmp_path, name, change, message):
    task_dir = tmp_path / "task"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", task_dir)
    _edit(task_dir, name, change)
    with pytest.raises(TaskError) as error:
        load_task(task_dir)
    assert message in str(error.value)


def test_missing_audio_is_reported(tasks_root, tmp_path):
    task_dir = tmp_path / "task"
    shutil.copytree(tasks_root / "tone_events-v1-full", task_dir)
    next((task_dir / "16000" / "valid").iterdir()).unlink()
    with pytest.raises(TaskError, match="1 audio files of split 'valid' missing"):
        load_task(task_dir)


def test_fold_rotation(tasks_root):
    folds = load_task(tasks_root / "tones_multiclass_kfold-v1-full").folds()
    assert [(f.test, f.valid, f.train) for f in folds] == [
        ("fold00", "fold01", ("fold02",)),
        ("fold01", "fold02", ("fold00",)),
        ("fold02", "fold00", ("fold01",)),
    ]
    (single,) = load_task(tasks_root / "tones_multiclass-v1-full").folds()
    assert (single.train, single.valid, single.test) == (("train",), "valid", "test")


def test_cache_resumes_after_a_kill_and_rejects_other_widths(tasks_root, tmp_path):
    task = load_task(tasks_root / "tone_events-v1-full")
    model = FusionModel.from_config(CREPE_TINY)
    fresh = embed_split(model, task, "train", tmp_path / "a")
    assert isinstance(fresh.rows, np.memmap) and fresh.timestamps is not None and fresh.rows.shape[1] == 256
    assert read_split(tmp_path / "a" / CREPE_TINY.fingerprint() / task.name / "train").files == fresh.files
    directory = tmp_path / "b" / CREPE_TINY.fingerprint() / task.name / "train"
    embed_split(model, task, "train", tmp_path / "b")
    lines = (directory / "index.jsonl").read_text().splitlines()
    (directory / "index.jsonl").write_text("\n".join(lines[:5]) + '\n{"file": "cut sho')
    with open(directory / "rows.f32", "ab") as handle:
        handle.write(b"\0" * 1000)
    resumed = embed_split(model, task, "train", tmp_path / "b")
    assert resumed.files == fresh.files
    np.testing.assert_array_equal(np.asarray(resumed.rows), np.asarray(fresh.rows))
    np.testing.assert_array_equal(resumed.counts, fresh.counts)
    (directory / "meta.json").write_text(json.dumps({"kind": "event", "width": 999, "config": "x"}))
    with pytest.raises(EmbeddingError, match="other embeddings"):
        embed_split(model, task, "train", tmp_path / "b")


def test_grid_is_the_hear_grid_drawn_deterministically():
    grid = hyperparameter_grid(8, seed=0)
    assert grid == hyperparameter_grid(8, seed=0) and grid != hyperparameter_grid(8, seed=1)
    assert len(set(grid)) == 8
    for params in grid:
        assert params.hidden_layers in (1, 2) and params.lr in (3.2e-3, 1e-3, 3.2e-4, 1e-4)
        assert params.initialization in ("xavier_uniform", "xavier_normal")
        assert (params.hidden_dim, params.dropout, params.batch_size, params.check_every, params.patience) == (
            1024, 0.1, 1024, 3, 20)
    assert len(set(hyperparameter_grid(16, seed=3))) == 16


def test_mlp_layout():
    model = downstream.MLP(10, 4, HyperParameters(2, 1e-3, "xavier_normal"))
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU", "Linear", "BatchNorm1d", "Dropout", "ReLU", "Linear"]


def test_early_stopping_after_patience_checks_and_best_weights_restored():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 64)]
    params = HyperParameters(1, 1e-3, "xavier_uniform", hidden_dim=16, batch_size=16, check_every=3, patience=4)
    constant = train_predictor(x, y, x, lambda p: (0.5, {}), params, prediction_type="multiclass")
    assert constant.best_epoch == 3 and constant.epochs_run == 3 * 5
    scores = iter([0.1, 0.4, 0.9, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2])
    snapshots = {}

    def validate(probabilities):
        value = next(scores)
        snapshots[value] = probabilities
        return value, {"value": value}

    trained = train_predictor(x, y, x, validate, params, prediction_type="multiclass")
    assert trained.best_epoch == 9 and trained.validation_score == 0.9 and trained.epochs_run == 21
    np.testing.assert_allclose(trained.predict(x, "multiclass"), snapshots[0.9], rtol=1e-5, atol=1e-6)
    lower = train_predictor(x, y, x, lambda p: (next(iter([0.5])), {}), params, prediction_type="multiclass",
                            higher_is_better=False)
    assert lower.best_epoch == 3


def test_training_progress_shows_epochs_and_best_score_without_changing_the_result(capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 64)]
    params = HyperParameters(1, 1e-3, "xavier_uniform", hidden_dim=16, batch_size=16, max_epochs=12)
    validate = lambda p: (float((p.argmax(1) == y.argmax(1)).mean()), {})
    quiet = train_predictor(x, y, x, validate, params, prediction_type="multiclass")
    assert "epoch" not in capsys.readouterr().err
    shown = train_predictor(x, y, x, validate, params, prediction_type="multiclass", progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "/12" in err and "best=" in err
    assert (shown.best_epoch, shown.validation_score) == (quiet.best_epoch, quiet.validation_score)


def test_event_decoding_on_hand_made_frames():
    timestamps = np.arange(20) * 50.0  # 50 ms hop
    p = np.zeros((20, 2))
    p[2:8, 0] = 0.9  # 100..350 ms
    p[5, 0] = 0.1  # a one-frame dip, removed by a 150 ms (3 frame) median filter
    p[12:14, 0] = 0.8  # 600..650 ms: 50 ms long
    p[15:19, 1] = 0.6  # 750..900 ms
    p[10, 1] = 0.5  # not above the threshold
    raw = decode_events(p, timestamps, ["a", "b"])
    assert raw == [
        {"label": "a", "start": 100.0, "end": 200.0},
        {"label": "a", "start": 300.0, "end": 350.0},
        {"label": "a", "start": 600.0, "end": 650.0},
        {"label": "b", "start": 750.0, "end": 900.0},
    ]
    filtered = decode_events(p, timestamps, ["a", "b"], median_filter_ms=150, min_duration=100)
    assert filtered == [{"label": "a", "start": 100.0, "end": 350.0}, {"label": "b", "start": 750.0, "end": 900.0}]
    shuffled = np.random.default_rng(0).permutation(20)
    assert decode_events(p[shuffled], timestamps[shuffled], ["a", "b"]) == raw


def test_frame_targets_include_both_ends():
    targets = frame_targets([{"label": "b", "start": 100, "end": 200}], np.array([50.0, 100, 150, 200, 250]), {"a": 0, "b": 1})
    assert targets[:, 1].tolist() == [0, 1, 1, 1, 0] and targets[:, 0].sum() == 0


def test_cli_evaluate_and_report(tasks_root, tmp_path, capsys):
    from hearfuse.cli import main

    config = tmp_path / "crepe_tiny.toml"
    config.write_text(
        'name = "crepe_tiny"\n[[members]]\nname = "crepe"\nfamily = "crepe"\ncheckpoint = "tiny"\n'
        "options = { hop_ms = 50, scene_hop_ms = 50 }\n"
    )
    results = tmp_path / "results"
    code = main(["evaluate", "--model", str(config), "--tasks", str(tasks_root), "--task", "tones_multiclass",
                 "--results", str(results), "--grid-points", "1", "--max-epochs", "30", "--device", "cpu", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "tones_multiclass-v1-full" in out and (results / "report.png").is_file()
    (results / "report.md").unlink()
    assert main(["report", str(results)]) == 0 and (results / "report.md").is_file()
    assert main(["tasks", "check", str(tasks_root)]) == 0
    assert "ok: tone_events-v1-full" in capsys.readouterr().out
