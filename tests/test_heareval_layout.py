"""Scoring embeddings in the layout heareval's embedding runner writes (``hearfuse evaluate --embeddings``)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from hearfuse.evaluation.cache import embed_split
from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate, evaluate_embeddings
from hearfuse.evaluation.protocol import Protocol
from hearfuse.evaluation.tasks import TaskError, load_task
from hearfuse.model import FusionModel

from . import taskgen
from .test_evaluation import CREPE_TINY


def write_kit_layout(task_dir: Path, out: Path, model: FusionModel, cache: Path) -> Path:
    """What heareval.embeddings.task_embeddings writes for one module, built from the same embeddings:
    metadata, vocabulary and split files copied; per split a raw float32 memmap in the kit's shuffled
    file order, its dimensions, each row's labels pickled (frames: the labels of every event with
    start <= t < end + 0.0001, the kit's IntervalTree), and each frame's [file path, timestamp]."""
    task = load_task(task_dir)
    target = out / task_dir.name
    target.mkdir(parents=True)
    for name in ["task_metadata.json", "labelvocabulary.csv", *(f"{s}.json" for s in task.splits)]:
        shutil.copy(task_dir / name, target)
    order = task.kit_file_order()
    for split in task.splits:
        embeddings = embed_split(model, task, split, cache, files=order[split])
        references = task.split_labels(split)
        rows, labels, pairs = [], [], []
        for name, start, count in zip(embeddings.files, embeddings.starts, embeddings.counts):
            rows.append(np.asarray(embeddings.rows[start : start + count]))
            if task.embedding_type == "scene":
                labels.append(references[name])
                continue
            for t in np.asarray(embeddings.timestamps[start : start + count]).tolist():
                labels.append([e["label"] for e in references[name] if e["start"] <= t < e["end"] + 0.0001])
                pairs.append([str(target / split / name), t])
        matrix = np.concatenate(rows).astype(np.float32)
        memmap = np.memmap(target / f"{split}.embeddings.npy", dtype=np.float32, mode="w+", shape=matrix.shape)
        memmap[:] = matrix
        memmap.flush()
        (target / f"{split}.embedding-dimensions.json").write_text(json.dumps(list(matrix.shape)))
        with open(target / f"{split}.target-labels.pkl", "wb") as handle:
            pickle.dump(labels, handle)
        if task.embedding_type == "event":
            (target / f"{split}.filename-timestamps.json").write_text(json.dumps(pairs))
    return target


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    tasks = root / "tasks"
    taskgen.scene_task(tasks, kfold=True)
    taskgen.scene_task(tasks, multilabel=True)
    taskgen.event_task(tasks, clips=8)
    model = FusionModel.from_config(CREPE_TINY)
    module = root / "embeddings" / "hearfuse.presets.crepe_tiny"
    for task_dir in sorted(tasks.iterdir()):
        write_kit_layout(task_dir, module, model, root / "cache")
    protocol = Protocol(grid_points=2, max_epochs=30)
    ours = evaluate(
        [CREPE_TINY], tasks, EvaluationSettings(root / "cache", root / "ours", protocol=protocol, progress=False)
    )
    settings = EvaluationSettings(root / "unused", root / "kit", protocol=protocol, progress=False)
    return ours, evaluate_embeddings(module, settings), module, settings


def test_the_same_embeddings_score_the_same_from_either_layout(both):
    ours, theirs, _, _ = both
    assert len(ours) == len(theirs) == 3
    for mine, kit in zip(sorted(ours, key=lambda r: r["task"]), sorted(theirs, key=lambda r: r["task"])):
        assert mine["status"] == kit["status"] == "ok", (mine.get("error"), kit.get("error"))
        assert kit["model"] == "hearfuse.presets.crepe_tiny" and kit["task"] == mine["task"]
        assert kit["grid"] == mine["grid"] and kit["test"] == mine["test"]
        assert kit["selected_event_postprocessing"] == mine["selected_event_postprocessing"]


def test_a_finished_layout_result_is_reused_until_its_files_change(both, caplog):
    _, theirs, module, settings = both
    import hearfuse.evaluation.evaluate as evaluation

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "score_task", lambda *a, **k: pytest.fail("recomputed"))
        again = evaluate_embeddings(module, settings, only=["tones_multilabel"])
    assert [r["test"] for r in again] == [r["test"] for r in theirs if r["task"].startswith("tones_multilabel")]
    rows = module / "tones_multilabel-v1-full" / "valid.embeddings.npy"
    rows.write_bytes(rows.read_bytes())
    with caplog.at_level("INFO"):
        (recomputed,) = evaluate_embeddings(module / "tones_multilabel-v1-full", settings)
    assert recomputed["status"] == "ok" and "the embedding files (valid) changed" in caplog.text


def test_broken_layouts_are_named(both, tmp_path):
    _, _, module, settings = both
    with pytest.raises(TaskError, match="no heareval embeddings in"):
        evaluate_embeddings(tmp_path, settings)
    broken = tmp_path / "module" / "tone_events-v1-full"
    shutil.copytree(module / "tone_events-v1-full", broken)
    (broken / "test.filename-timestamps.json").unlink()
    (result,) = evaluate_embeddings(broken.parent, EvaluationSettings(tmp_path, tmp_path / "r", progress=False))
    assert result["status"] == "failed"
    assert "split 'test': missing test.filename-timestamps.json" in result["error"]


def test_cli_scores_a_layout(both, tmp_path, capsys):
    from hearfuse.cli import main

    _, _, module, _ = both
    code = main(
        [
            "evaluate",
            "--embeddings",
            str(module),
            "--task",
            "tones_multiclass_kfold",
            "--results",
            str(tmp_path),
            "--grid-points",
            "1",
            "--max-epochs",
            "6",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert code == 0 and "hearfuse.presets.crepe_tiny" in capsys.readouterr().out
    assert main(["evaluate", "--embeddings", str(module), "--tasks", str(tmp_path)]) == 2
    assert "either --model and --tasks" in capsys.readouterr().err
    assert main(["evaluate", "--tasks", str(tmp_path)]) == 2  # no model named
    assert "missing --model" in capsys.readouterr().err
    assert main(["evaluate", "--model", "crepe"]) == 2
    assert "missing --tasks" in capsys.readouterr().err
