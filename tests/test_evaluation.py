"""The HEAR evaluation protocol end to end on tiny generated tasks, and its pieces."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.evaluation import downstream, predictions
from hearfuse.evaluation.cache import embed_split, embedding_key, read_split, split_dir
from hearfuse.evaluation.downstream import train_predictor
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.events import Postprocessing, decode_events, frame_targets
from hearfuse.evaluation.metrics import METRICS
from hearfuse.evaluation.protocol import HyperParameters, Protocol
from hearfuse.evaluation.results import result_path
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

    def visit_states(self, audio, visit, *, scene=False, needed=None):
        frames = len(self.frame_centers_ms(audio.shape[-1]))
        visit(0, torch.randn(audio.shape[0], frames, 64, generator=self.generator))


if "noise" not in families():
    register_family(
        Family("noise", lambda checkpoint, **_: NoiseUpstream(), lambda _: True, {"-": CheckpointInfo(64, 1)})
    )
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
    settings = EvaluationSettings(
        out / "cache", out / "results", protocol=Protocol(grid_points=2, max_epochs=90), progress=False
    )
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
    assert stored["protocol"] == {
        "kit": "heareval-2021.1.3",
        "grid_points": 2,
        "seed": 42,
        "max_epochs": 90,
        "shuffle_batches": False,
    }
    assert stored["monitor"] == "score" and stored["test"]["segment_1s_er"]["std"] is None  # one split: no std
    assert stored["task_suite"] is None and stored["task_sources"] == []  # not a task of hearfuse's suite


def test_finished_results_are_not_recomputed(results, tasks_root, monkeypatch):
    _, settings = results
    import hearfuse.evaluation.evaluate as module

    monkeypatch.setattr(module, "evaluate_task", lambda *a, **k: pytest.fail("recomputed a finished result"))
    again = evaluate([CREPE_TINY], tasks_root, settings, only=["tones_multiclass"])
    assert len(again) == 1 and again[0]["status"] == "ok"


def test_results_are_recomputed_under_another_protocol(results, tasks_root, monkeypatch, caplog):
    _, settings = results
    import hearfuse.evaluation.evaluate as module

    recomputed = []
    monkeypatch.setattr(module, "evaluate_task", lambda model, task, s: recomputed.append(s.protocol) or {})
    monkeypatch.setattr(module, "write_text_atomic", lambda *a: None)  # keep the module's results intact
    fewer_epochs = dataclasses.replace(settings, protocol=Protocol(grid_points=2, max_epochs=30))
    with caplog.at_level("INFO"):
        evaluate([CREPE_TINY], tasks_root, fewer_epochs, only=["tones_multiclass"])
    assert recomputed == [Protocol(grid_points=2, max_epochs=30)]
    assert "the downstream protocol (max_epochs) changed" in caplog.text


def test_stored_predictions_give_every_fold_score_back(results):
    """Scene, multilabel, k-fold and event tasks: the predictions stored beside each result score, with
    the task's metrics, exactly what the result records for every fold."""
    results, settings = results
    for result in results.values():
        stored = predictions.read(result_path(settings.results_dir, result["model"], result["task"]), result)
        assert len(stored.folds) == len(result["folds"])
        for metric, entry in result["test"].items():
            assert [None if math.isnan(v) else v for v in stored.score(metric)] == entry["folds"]


def test_a_result_whose_predictions_are_gone_reports_no_interval_and_is_computed_again(
    results, tasks_root, tmp_path, monkeypatch, caplog
):
    _, settings = results
    copy = tmp_path / "results"
    shutil.copytree(settings.results_dir / "crepe_tiny", copy / "crepe_tiny")
    (copy / "crepe_tiny" / "tones_multiclass-v1-full.predictions.npz").unlink()
    from hearfuse.evaluation.report import write_report

    text = write_report(copy)[0].read_text()
    assert (
        "No interval for 1 run(s) (`n/a`): its test predictions file tones_multiclass-v1-full.predictions.npz " in text
    )
    assert "| crepe_tiny | best | n/a | best | best |" in text  # the differences table: one model, one run without

    import hearfuse.evaluation.evaluate as module

    recomputed = []
    monkeypatch.setattr(module, "evaluate_task", lambda model, task, s: recomputed.append(task.name) or {})
    monkeypatch.setattr(module, "write_text_atomic", lambda *a: None)
    with caplog.at_level("INFO"):
        evaluate([CREPE_TINY], tasks_root, dataclasses.replace(settings, results_dir=copy))
    assert recomputed == ["tones_multiclass-v1-full"]  # the other tasks' results are reused
    assert "its test predictions file tones_multiclass-v1-full.predictions.npz is missing" in caplog.text


def test_the_spread_across_training_seeds_is_recorded_and_asked_for_again_when_more_seeds_are_wanted(
    results, tasks_root, tmp_path, caplog
):
    _, settings = results
    seeded = dataclasses.replace(
        settings, results_dir=tmp_path / "results", protocol=Protocol(grid_points=1, max_epochs=30), training_seeds=2
    )
    (result,) = evaluate([CREPE_TINY], tasks_root, seeded, only=["tones_multiclass_kfold"])
    spread = result["training_seeds"]
    assert spread["seeds"] == [42, 43] and set(spread["test"]) == set(result["test"])
    assert spread["test"]["top1_acc"][0] == result["test"]["top1_acc"]["mean"]  # the reported run is the first
    assert 0 <= spread["test"]["top1_acc"][1] <= 1 and result["timings"]["seeds_s"] > 0

    import hearfuse.evaluation.evaluate as module

    kfold = ["tones_multiclass_kfold"]
    with pytest.MonkeyPatch.context() as patch:  # fewer seeds than stored: reused
        patch.setattr(module, "evaluate_task", lambda *a, **k: pytest.fail("recomputed a finished result"))
        assert evaluate([CREPE_TINY], tasks_root, dataclasses.replace(seeded, training_seeds=1), only=kfold)
    with caplog.at_level("INFO"), pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "evaluate_task", lambda model, task, s: {})
        patch.setattr(module, "write_text_atomic", lambda *a: None)
        evaluate([CREPE_TINY], tasks_root, dataclasses.replace(seeded, training_seeds=3), only=kfold)
    assert "the spread across 3 training seeds was asked" in caplog.text
    with pytest.raises(ValueError, match="positive integer"):
        dataclasses.replace(seeded, training_seeds=0)


def test_settings_reject_an_empty_grid(tasks_root, tmp_path, capsys):
    for points in (0, 17):
        with pytest.raises(ValueError, match="between 1 and 16"):
            Protocol(grid_points=points)
    with pytest.raises(ValueError, match="positive integer"):
        Protocol(max_epochs=0)
    with pytest.raises(ValueError, match="below one validation check"):
        Protocol(max_epochs=2).grid({"task_name": "x"})
    from hearfuse.cli import main

    command = ["evaluate", "-m", "crepe", "--tasks", str(tasks_root), "--results", str(tmp_path), "--grid-points", "0"]
    assert main(command) == 2
    assert "grid_points must be between 1 and 16" in capsys.readouterr().err


def test_same_seed_same_scores(tasks_root, tmp_path):
    runs = []
    for name in ("a", "b"):
        settings = EvaluationSettings(
            tmp_path / "cache", tmp_path / name, protocol=Protocol(grid_points=2, max_epochs=30), progress=False
        )
        runs.append(evaluate([CREPE_TINY], tasks_root, settings, only=["tones_multilabel"])[0])
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["grid"] == runs[1]["grid"]


def test_a_failing_task_is_recorded_and_the_others_go_on(tasks_root, tmp_path):
    root = tmp_path / "tasks"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", root / "good-v1-full")
    broken = root / "broken-v1-full"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", broken)
    next((broken / "16000" / "test").iterdir()).unlink()
    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(grid_points=1, max_epochs=9), progress=False
    )
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


def test_cache_resumes_after_a_kill_and_rebuilds_when_its_record_differs(tasks_root, tmp_path):
    task = load_task(tasks_root / "tone_events-v1-full")
    model = FusionModel.from_config(CREPE_TINY)
    fresh = embed_split(model, task, "train", tmp_path / "a")
    assert isinstance(fresh.rows, np.memmap) and fresh.timestamps is not None and fresh.rows.shape[1] == 256
    assert fresh.files == task.kit_file_order()["train"]  # stored in the kit's memmap order
    assert read_split(split_dir(tmp_path / "a", embedding_key(model.config), task, "train")).files == fresh.files
    directory = split_dir(tmp_path / "b", embedding_key(model.config), task, "train")
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
    again = embed_split(model, task, "train", tmp_path / "b")  # another record: embedded anew, not reused
    np.testing.assert_array_equal(np.asarray(again.rows), np.asarray(fresh.rows))


def test_cache_index_never_names_rows_missing_on_disk(tasks_root, tmp_path, monkeypatch):
    """A kill between the data and the index: rows of the last clips are cut (the disk lost them),
    the index still names them. A resume keeps only clips whose rows are complete, and the result
    equals a fresh run."""
    task = load_task(tasks_root / "tone_events-v1-full")
    model = FusionModel.from_config(CREPE_TINY)
    fresh = embed_split(model, task, "valid", tmp_path / "fresh")
    directory = split_dir(tmp_path / "cut", embedding_key(model.config), task, "valid")
    embed_split(model, task, "valid", tmp_path / "cut")
    entries = [json.loads(line) for line in (directory / "index.jsonl").read_text().splitlines()]
    cut_at = entries[-3]["start"] + 2  # inside the third-last clip
    with open(directory / "rows.f32", "r+b") as handle:
        handle.truncate(cut_at * 256 * 4)
    embedded = []
    original = FusionModel.embed_variants
    monkeypatch.setattr(
        FusionModel,
        "embed_variants",
        lambda self, audio, *a, **k: embedded.append(len(audio)) or original(self, audio, *a, **k),
    )
    resumed = embed_split(model, task, "valid", tmp_path / "cut")
    assert sum(embedded) == 3  # exactly the three clips whose rows were not all on disk
    assert resumed.files == fresh.files
    np.testing.assert_array_equal(np.asarray(resumed.rows), np.asarray(fresh.rows))

    # the writer puts rows on disk before the index lines that name them
    order = []
    real_sync = __import__("hearfuse.evaluation.cache", fromlist=["_sync"])._sync
    monkeypatch.setattr(
        "hearfuse.evaluation.cache._sync", lambda handle: order.append(Path(handle.name).name) or real_sync(handle)
    )
    embed_split(model, task, "valid", tmp_path / "order")
    assert order[:3] == ["rows.f32", "timestamps.f32", "index.jsonl"]


def test_mlp_layout():
    model = downstream.MLP(10, 4, HyperParameters(2, 1e-3, "xavier_normal"))
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU", "Linear", "BatchNorm1d", "Dropout", "ReLU", "Linear"]


def _toy(seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]


def _scripted(values):
    """A validator returning the given scores in turn, remembering the probabilities it saw."""
    scores, seen = iter(values), {}

    def validate(probabilities):
        value = next(scores)
        seen[len(seen)] = probabilities
        return value, None

    return validate, seen


SMALL = dict(hidden_dim=16, batch_size=16, check_val_every_n_epoch=3, patience=4)


def test_early_stopping_after_patience_checks_and_best_weights_restored():
    x, y = _toy()
    params = HyperParameters(1, 1e-3, "xavier_uniform", **SMALL)
    top1 = METRICS["top1_acc"]
    constant = train_predictor(
        x, y, x, y, params, prediction_type="multiclass", validate=lambda p: (0.5, None), metric=top1
    )
    assert constant.best_epoch == 3 and constant.epochs_run == 3 * 5
    validate, seen = _scripted([0.1, 0.4, 0.9, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2])
    trained = train_predictor(x, y, x, y, params, prediction_type="multiclass", validate=validate, metric=top1)
    assert trained.best_epoch == 9 and trained.validation_score == 0.9 and trained.epochs_run == 21
    np.testing.assert_allclose(trained.predict(x, "multiclass"), seen[2], rtol=1e-5, atol=1e-6)


def test_a_lower_is_better_score_keeps_its_lowest_check():
    x, y = _toy()
    params = HyperParameters(1, 1e-3, "xavier_uniform", **SMALL)
    validate, _ = _scripted([0.5, 0.3, 0.4, 0.6, 0.7, 0.8])
    trained = train_predictor(
        x, y, x, y, params, prediction_type="multiclass", validate=validate, metric=METRICS["segment_1s_er"]
    )
    assert (trained.best_epoch, trained.validation_score, trained.epochs_run) == (6, 0.3, 18)


@pytest.mark.parametrize("metric", ["top1_acc", "segment_1s_er"])
def test_a_nan_validation_score_stops_training_and_is_never_the_best(metric):
    """The kit: EarlyStopping(check_finite=True) stops at a NaN; ModelCheckpoint keeps the first check
    (even a NaN one, as the worst value) and never prefers a NaN over a number."""
    x, y = _toy()
    params = HyperParameters(1, 1e-3, "xavier_uniform", **SMALL)
    good = 0.9 if metric == "top1_acc" else 0.1
    validate, _ = _scripted([good, float("nan"), good, good])
    trained = train_predictor(
        x, y, x, y, params, prediction_type="multiclass", validate=validate, metric=METRICS[metric]
    )
    assert (trained.best_epoch, trained.validation_score, trained.epochs_run) == (3, good, 6)
    validate, _ = _scripted([float("nan"), good])
    first = train_predictor(x, y, x, y, params, prediction_type="multiclass", validate=validate, metric=METRICS[metric])
    assert first.best_epoch == 3 and np.isnan(first.validation_score) and first.epochs_run == 3
    assert METRICS[metric].rank(float("nan")) < METRICS[metric].rank(1e6 if metric == "segment_1s_er" else -1e6)


def test_loss_based_early_stopping_keeps_the_lowest_validation_loss(monkeypatch):
    """``use_scoring_for_early_stopping: false``: the kit monitors val_loss (mode min)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(96, 8)).astype(np.float32)
    y = (rng.random((96, 3)) < 0.3).astype(np.float32)  # multilabel noise: the validation loss goes up and down
    x_valid, y_valid = x[64:], y[64:]
    losses = []
    real_loss = downstream.loss
    monkeypatch.setattr(
        downstream,
        "loss",
        lambda logits, targets, kind: (
            (lambda value: losses.append(float(value)) or value)(real_loss(logits, targets, kind))
            if not logits.requires_grad
            else real_loss(logits, targets, kind)
        ),
    )
    params = HyperParameters(
        1, 3.2e-3, "xavier_uniform", hidden_dim=16, batch_size=16, check_val_every_n_epoch=1, patience=5, max_epochs=60
    )
    trained = train_predictor(x[:64], y[:64], x_valid, y_valid, params, prediction_type="multilabel", validate=None)
    assert trained.monitor == "loss" and len(losses) == trained.epochs_run
    assert trained.best_epoch == 1 + int(np.argmin(losses)) and trained.validation_score == min(losses)
    assert trained.epochs_run == trained.best_epoch + 5  # stopped after `patience` checks without a lower loss
    p = np.clip(trained.predict(x_valid, "multilabel").astype(np.float64), 1e-12, 1 - 1e-12)
    bce = -np.mean(y_valid * np.log(p) + (1 - y_valid) * np.log(1 - p))  # an independent BCE of the restored model
    assert abs(bce - trained.validation_score) < 1e-4


def test_training_batches_come_in_stored_order_unless_shuffling_is_asked_for(monkeypatch):
    x, y = _toy(n=40)
    seen = []
    real = downstream.Rows.__getitem__
    monkeypatch.setattr(
        downstream.Rows, "__getitem__", lambda self, index: seen.append(index.tolist()) or real(self, index)
    )
    params = HyperParameters(1, 1e-3, "xavier_uniform", hidden_dim=8, batch_size=16, max_epochs=3)
    train_predictor(
        x, y, x, y, params, prediction_type="multiclass", validate=lambda p: (0.5, None), metric=METRICS["top1_acc"]
    )
    assert seen[:3] == [list(range(16)), list(range(16, 32)), list(range(32, 40))] and seen[3] == seen[0]
    seen.clear()
    train_predictor(
        x,
        y,
        x,
        y,
        params,
        prediction_type="multiclass",
        validate=lambda p: (0.5, None),
        metric=METRICS["top1_acc"],
        shuffle=True,
    )
    assert sorted(sum(seen[:3], [])) == list(range(40)) and seen[0] != list(range(16))


def test_training_progress_shows_epochs_and_best_score_without_changing_the_result(capsys):
    x, y = _toy(1)
    params = HyperParameters(1, 1e-3, "xavier_uniform", hidden_dim=16, batch_size=16, max_epochs=12)
    validate = lambda p: (float((p.argmax(1) == y.argmax(1)).mean()), None)  # noqa: E731
    kwargs = dict(prediction_type="multiclass", validate=validate, metric=METRICS["top1_acc"])
    quiet = train_predictor(x, y, x, y, params, **kwargs)
    assert "epoch" not in capsys.readouterr().err
    shown = train_predictor(x, y, x, y, params, progress=True, **kwargs)
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
    raw = decode_events(p, timestamps, ["a", "b"], Postprocessing(0, 0))
    assert raw == [
        {"label": "a", "start": 100.0, "end": 200.0},
        {"label": "a", "start": 300.0, "end": 350.0},
        {"label": "a", "start": 600.0, "end": 650.0},
        {"label": "b", "start": 750.0, "end": 900.0},
    ]
    filtered = decode_events(p, timestamps, ["a", "b"], Postprocessing(median_filter_ms=150, min_duration=100))
    assert filtered == [{"label": "a", "start": 100.0, "end": 350.0}, {"label": "b", "start": 750.0, "end": 900.0}]
    shuffled = np.random.default_rng(0).permutation(20)
    assert decode_events(p[shuffled], timestamps[shuffled], ["a", "b"], Postprocessing(0, 0)) == raw


def test_frame_targets_cover_start_to_just_after_the_end():
    """heareval: IntervalTree over [start, end + 0.0001)."""
    times = np.array([50.0, 100, 150, 200, 200.0001, 250])
    targets = frame_targets([{"label": "b", "start": 100, "end": 200}], times, {"a": 0, "b": 1})
    assert targets[:, 1].tolist() == [0, 1, 1, 1, 0, 0] and targets[:, 0].sum() == 0


def test_cli_evaluate_and_report(tasks_root, tmp_path, capsys):
    from hearfuse.cli import main

    config = tmp_path / "crepe_tiny.toml"
    config.write_text(
        'name = "crepe_tiny"\n[[members]]\nname = "crepe"\nfamily = "crepe"\ncheckpoint = "tiny"\n'
        "options = { hop_ms = 50, scene_hop_ms = 50 }\n"
    )
    results = tmp_path / "results"
    base = ["evaluate", "--model", str(config), "--tasks", str(tasks_root), "--results", str(results)]
    assert main([*base, "--probe", "linear", "--seeds", "2"]) == 2
    assert "--seeds applies to the mlp probe" in capsys.readouterr().err
    assert main([*base, "--baseline", "crepe"]) == 2  # checked before any work
    assert "--baseline 'crepe' is none of the models evaluated or stored in" in capsys.readouterr().err
    assert main([*base, "--model", "crepe_tiny"]) == 2  # the preset of that name is another model
    assert "two models are named 'crepe_tiny' (" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            "--model",
            str(config),
            "--tasks",
            str(tasks_root),
            "--task",
            "tones_multiclass",
            "--results",
            str(results),
            "--grid-points",
            "1",
            "--max-epochs",
            "30",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "tones_multiclass-v1-full" in out and (results / "report.png").is_file()
    assert "### How sure" in out and "Spread across training seeds" not in out
    (results / "report.md").unlink()
    assert main(["report", str(results)]) == 0 and (results / "report.md").is_file()
    assert main(["report", str(results), "--baseline", "crepe_tiny"]) == 0
    assert "Difference to the baseline crepe_tiny" in capsys.readouterr().out
    assert main(["report", str(results), "--baseline", "crepe"]) == 2
    assert "baseline 'crepe' is not a model of" in capsys.readouterr().err
    assert main(["tasks", "check", str(tasks_root)]) == 0
    assert "ok: tone_events-v1-full" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# every number is computed from what it claims


@pytest.fixture
def small_run(tmp_path):
    """A scene task of 18 clips evaluated once with a 1-point grid, and a way to evaluate again while
    recording whether anything was embedded or trained (small: one test embeds it in bfloat16, which a
    CPU without native bfloat16 emulates)."""
    root = tmp_path / "tasks"
    taskgen.scene_task(root, clips=6)
    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(grid_points=1, max_epochs=9), progress=False
    )
    first = evaluate([CREPE_TINY], root, settings)[0]
    assert first["status"] == "ok"

    def again(config=CREPE_TINY, dtype=None):
        import hearfuse.evaluation.evaluate as module

        calls = {"embedded": 0, "trained": 0}
        embed, score = FusionModel.embed_variants, module.score_task

        def counting_embed(self, audio, *args, **kwargs):
            calls["embedded"] += len(audio)
            return embed(self, audio, *args, **kwargs)

        def counting_score(*args, **kwargs):
            calls["trained"] += 1
            return score(*args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(FusionModel, "embed_variants", counting_embed)
            patch.setattr(module, "score_task", counting_score)
            result = evaluate([config], root, settings, dtype=dtype)[0]
        return result, calls

    return root / "tones_multiclass-v1-full", first, again


def test_a_performance_only_option_reuses_results(small_run):
    _, first, again = small_run
    faster = FusionConfig(
        "crepe_tiny",
        (MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 50, "scene_hop_ms": 50, "frame_batch": 64}),),
    )
    assert faster.fingerprint() == CREPE_TINY.fingerprint()
    result, calls = again(faster)
    assert calls == {"embedded": 0, "trained": 0} and result["test"] == first["test"]


def test_another_dtype_recomputes_embeddings_and_scores(small_run, caplog):
    _, _, again = small_run
    with caplog.at_level("INFO"):
        result, calls = again(dtype=torch.bfloat16)
    assert calls["embedded"] == 18 and calls["trained"] == 1  # every clip of the three splits
    assert "the dtype (float32 -> bfloat16) changed" in caplog.text
    assert result["provenance"]["dtype"] == "bfloat16" and result["embedding_key"]["dtype"] == "bfloat16"


def test_a_task_rebuilt_with_permuted_labels_is_scored_again(small_run, caplog):
    task_dir, first, again = small_run
    train = json.loads((task_dir / "train.json").read_text())
    names = list(train)
    permuted = dict(zip(names, [train[n] for n in names[1:] + names[:1]]))  # same files, other labels
    (task_dir / "train.json").write_text(json.dumps(permuted))
    with caplog.at_level("INFO"):
        result, calls = again()
    assert calls == {"embedded": 0, "trained": 1}  # the audio did not change: embeddings reused
    assert "the task's metadata, vocabulary or split files changed" in caplog.text
    assert result["provenance"]["task"] != first["provenance"]["task"]


def test_rewritten_audio_is_embedded_again(small_run, caplog):
    task_dir, _, again = small_run
    clip = next((task_dir / "16000" / "valid").iterdir())
    clip.write_bytes(clip.read_bytes())  # same bytes, new modification time: a rebuild
    with caplog.at_level("INFO"):
        _, calls = again()
    valid = len(json.loads((task_dir / "valid.json").read_text()))
    assert calls == {"embedded": valid, "trained": 1}  # only the valid split
    assert "the task's audio files (valid) changed" in caplog.text and "re-embedding" in caplog.text


# ---------------------------------------------------------------------------------------------
# broken tasks: one line per root cause, naming the task, the split and the file


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_an_empty_split_is_named(tasks_root, tmp_path, split):
    task_dir = tmp_path / "task"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", task_dir)
    (task_dir / f"{split}.json").write_text("{}")
    with pytest.raises(TaskError) as error:
        load_task(task_dir)
    assert str(task_dir) in str(error.value) and f"{split}.json: split '{split}' lists no files" in str(error.value)


def test_a_missing_metadata_key_is_one_line(tasks_root, tmp_path):
    task_dir = tmp_path / "task"
    shutil.copytree(tasks_root / "tone_events-v1-full", task_dir)
    _edit(task_dir, "task_metadata.json", lambda t: t.replace('"embedding_type"', '"kind"'))
    with pytest.raises(TaskError) as error:
        load_task(task_dir)
    assert str(error.value) == f"malformed task {task_dir}: task_metadata.json: missing 'embedding_type'"


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"not audio at all\n", "not readable as audio")])
def test_tasks_check_reads_every_audio_header(tasks_root, tmp_path, capsys, content, reason):
    from hearfuse.cli import main

    task_dir = tmp_path / "tones_multiclass-v1-full"
    shutil.copytree(tasks_root / "tones_multiclass-v1-full", task_dir)
    clip = sorted((task_dir / "16000" / "test").iterdir())[0]
    clip.write_bytes(content)
    assert main(["tasks", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"malformed task {task_dir}" in err and f"split 'test': audio file {clip}: {reason}" in err


def test_a_task_filter_matching_nothing_names_the_tasks(tasks_root, tmp_path, capsys):
    from hearfuse.cli import main

    command = ["evaluate", "-m", "crepe", "--tasks", str(tasks_root), "--task", "nsynth", "--results", str(tmp_path)]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "--task nsynth matches none of the tasks" in err and "tone_events-v1-full" in err
    )
    assert main(["tasks", "check", str(tmp_path)]) == 2
    assert "no task directories" in capsys.readouterr().err
