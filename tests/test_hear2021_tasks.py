"""The 19 HEAR 2021 tasks run as the kit runs them: miniatures with each task's exact metadata
(tests/hear2021_tasks.py), evaluated with CREPE tiny and the linear probe, each task's own rules checked
in the results, and the report placing the published numbers beside each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from hearfuse import hear2021
from hearfuse.config import FusionConfig, MemberConfig
from hearfuse.evaluation.cache import embedding_key, read_split, split_dir
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
from hearfuse.evaluation.protocol import Protocol
from hearfuse.evaluation.report import write_report
from hearfuse.evaluation.tasks import load_task
from hearfuse.model import FusionModel

from .hear2021_tasks import METADATA, RATE, write_tasks

CREPE_TINY = FusionConfig(
    "crepe_tiny", (MemberConfig("crepe", "crepe", "tiny", options={"hop_ms": 50.0, "scene_hop_ms": 250.0}),)
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hear2021")
    write_tasks(root / "tasks")
    settings = EvaluationSettings(root / "cache", root / "results", protocol=Protocol(probe="linear"), progress=False)
    results = {r["task"]: r for r in evaluate([CREPE_TINY], root / "tasks", settings)}
    return root, settings, results


def test_the_fixture_holds_the_19_tasks_hear2021_published():
    published = hear2021.load()
    matched = {published.match(directory)[0] for directory in METADATA}
    assert len(METADATA) == 19 and matched == set(published.tasks)


def test_every_task_runs_under_its_own_rules(run):
    _, _, results = run
    assert sorted(results) == sorted(METADATA)
    for task, result in results.items():
        metadata = METADATA[task]
        assert result["status"] == "ok", (task, result.get("error"))
        assert result["metric"] == metadata["evaluation"][0]
        assert set(result["test"]) == set(metadata["evaluation"]), task  # every metric the task lists
        folds = metadata.get("nfolds", 1) if metadata["split_mode"] != "trainvaltest" else 1
        assert len(result["folds"]) == folds, task
        assert all(len(result["test"][m]["folds"]) == folds for m in metadata["evaluation"]), task
    # k-fold rotation as the kit's data_splits_from_folds: fold i tests, fold i+1 validates
    gunshot = results["gunshot_triangulation-v1.0-full"]["folds"]
    assert [(f["test"], f["valid"]) for f in gunshot][:2] == [("fold00", "fold01"), ("fold01", "fold02")]
    assert gunshot[-1]["test"] == "fold06" and gunshot[-1]["valid"] == "fold00"


def test_maestro_selects_on_loss_with_its_own_grid(run):
    _, _, results = run
    maestro = results["maestro-v3.0.0-5h"]
    assert maestro["monitor"] == "loss"  # use_scoring_for_early_stopping: false
    chosen = maestro["selected_event_postprocessing"]
    assert (chosen["median_filter_ms"], chosen["min_duration"]) == (150.0, 50.0)
    dcase = results["dcase2016_task2-hear2021-full"]
    assert dcase["monitor"] == "score"
    assert dcase["selected_event_postprocessing"]["median_filter_ms"] == 250.0  # the kit's default grid
    assert dcase["selected_event_postprocessing"]["min_duration"] in (125.0, 250.0)


def test_the_mlp_takes_each_tasks_grid(run, tmp_path):
    """dcase2016_task2's grid comes from the kit itself (TASK_SPECIFIC_PARAM_GRID), maestro's from its
    metadata (task_specific_param_grid), both on top of the kit's grid."""
    root, _, _ = run
    settings = EvaluationSettings(
        tmp_path / "cache", tmp_path / "results", protocol=Protocol(grid_points=1, max_epochs=10), progress=False
    )
    results = {
        r["task"]: r
        for r in evaluate([CREPE_TINY], root / "tasks", settings, only=("dcase2016_task2", "maestro-v3.0.0-5h"))
    }
    dcase, maestro = results["dcase2016_task2-hear2021-full"], results["maestro-v3.0.0-5h"]
    assert dcase["status"] == maestro["status"] == "ok"
    assert dcase["grid"][0]["params"]["check_val_every_n_epoch"] == 10
    assert maestro["grid"][0]["params"]["check_val_every_n_epoch"] == 1
    assert maestro["grid"][0]["params"]["max_epochs"] == 10  # the task's 50, capped by --max-epochs
    assert maestro["monitor"] == "loss" and dcase["monitor"] == "score"


def _cached(root, settings, task_name: str, split: str):
    task = load_task(root / "tasks" / task_name)
    return task, read_split(split_dir(settings.cache_dir, embedding_key(CREPE_TINY), task, split))


def test_audio_is_read_from_48_khz_and_resampled(run):
    root, settings, _ = run
    task, cached = _cached(root, settings, "speech_commands-v0.0.2-5h", "test")
    assert task.sample_rates == (RATE,)
    model = FusionModel.from_config(CREPE_TINY).eval()
    for i in (0, len(cached.files) - 1):
        audio, rate = sf.read(task.path / str(RATE) / "test" / cached.files[i], dtype="float32")
        expected = model.scene_embeddings(torch.from_numpy(soxr.resample(audio, rate, 16000))[None])[0]
        np.testing.assert_allclose(cached.rows[cached.starts[i]], expected.numpy(), atol=1e-5)


def test_fsd50k_clips_of_every_length_are_embedded_alone(run):
    """sample_duration null: clips of their own lengths, each embedded as if it were alone (no padding
    to a batch's longest)."""
    root, settings, _ = run
    assert METADATA["fsd50k-v1.0-full"]["sample_duration"] is None
    task, cached = _cached(root, settings, "fsd50k-v1.0-full", "train")
    lengths = {sf.info(task.path / str(RATE) / "train" / name).frames for name in cached.files}
    assert len(lengths) == len(cached.files)
    model = FusionModel.from_config(CREPE_TINY).eval()
    for i, name in enumerate(cached.files):
        audio, rate = sf.read(task.path / str(RATE) / "train" / name, dtype="float32")
        expected = model.scene_embeddings(torch.from_numpy(soxr.resample(audio, rate, 16000))[None])[0]
        np.testing.assert_allclose(cached.rows[cached.starts[i]], expected.numpy(), atol=1e-5)


def test_numeric_labels_stay_labels(run):
    """nsynth's pitches and libricount's counts come as JSON ints, as hear-preprocess writes them."""
    root, _, results = run
    train = json.loads((root / "tasks" / "nsynth_pitch-v2.2.3-5h" / "train.json").read_text())
    assert all(isinstance(labels[0], int) for labels in train.values())
    assert load_task(root / "tasks" / "nsynth_pitch-v2.2.3-5h").labels[:3] == ("21", "22", "23")
    assert (
        results["nsynth_pitch-v2.2.3-5h"]["test"]["chroma_acc"]["mean"]
        >= (results["nsynth_pitch-v2.2.3-5h"]["test"]["pitch_acc"]["mean"])
    )


def test_the_report_places_the_published_numbers_beside_each_task(run):
    root, settings, _ = run
    report, _ = write_report(settings.results_dir)
    section = report.read_text().split("## Beside the published HEAR 2021 results")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    compared = {line.split("|")[1].strip() for line in rows}
    assert compared == set(METADATA)
    published = hear2021.load()
    for directory in METADATA:
        primary = METADATA[directory]["evaluation"][0]
        (line,) = [r for r in rows if r.split("|")[1].strip() == directory and r.split("|")[2].split()[0] == primary]
        count = len(published.task_scores(published.match(directory)[0], primary))
        assert f" of {count + 1} |" in line, directory
    assert "beehive_states_fold0-v2-full compared with beehive_states-v2-full" in section
    assert (settings.results_dir / "report-published.png").stat().st_size > 10_000
