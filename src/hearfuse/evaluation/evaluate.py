"""Evaluate representations on HEAR tasks: embed (cached), train the downstream grid, score, save.

For each task: every split is embedded once per model config (:mod:`.cache`); the grid of
:func:`~.downstream.hyperparameter_grid` is searched on the first fold only; the chosen
configuration is trained on every fold (fold i tests, fold i+1 validates, the rest train)
and scored with every metric of the task. Results go to ``RESULTS/<model>/<task>.json``;
a finished result is not recomputed unless the model config or the downstream protocol
(grid points, epoch limit, seed) changed.
"""

from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import FusionConfig
from ..hear import resolve_config
from ..model import FusionModel
from . import metrics
from .cache import SplitEmbeddings, embed_split
from .downstream import (
    GRID_SIZE,
    HyperParameters,
    TrainedPredictor,
    decode_events,
    frame_targets,
    hyperparameter_grid,
    train_predictor,
)
from .tasks import Fold, Task, find_tasks, load_task


@dataclass
class EvaluationSettings:
    cache_dir: Path
    results_dir: Path
    device: str = "cpu"
    seed: int = 0
    grid_points: int = 8
    batch_seconds: float = 60.0
    max_epochs: int = 500
    progress: bool = True

    def __post_init__(self) -> None:
        """Refuse settings under which no configuration would be trained or validated."""
        if not 1 <= self.grid_points <= GRID_SIZE:
            raise ValueError(f"grid_points must be between 1 and {GRID_SIZE} (the HEAR grid), got {self.grid_points}")
        checks = HyperParameters.check_every
        if self.max_epochs < checks:
            raise ValueError(f"max_epochs must be at least {checks} (one validation check), got {self.max_epochs}")

    def protocol(self) -> dict:
        """The settings a score depends on besides the embedding; stored with each result,
        which is reused only under the same protocol (a 1-point grid must not stand in for 8)."""
        return {"grid_points": self.grid_points, "max_epochs": self.max_epochs, "seed": self.seed}


def result_path(results_dir: Path, model_name: str, task_name: str) -> Path:
    return Path(results_dir) / model_name / f"{task_name}.json"


def evaluate(
    models: Sequence[str | FusionConfig],
    tasks_dir: str | Path,
    settings: EvaluationSettings,
    *,
    only: Sequence[str] = (),
    dtype: torch.dtype | None = None,
) -> list[dict]:
    """Every model x task; a failing task is recorded as failed and the others go on."""
    task_paths = find_tasks(tasks_dir)
    if only:
        task_paths = [p for p in task_paths if p.name in only or p.name.split("-")[0] in only]
    if not task_paths:
        raise FileNotFoundError(f"no task directories (with task_metadata.json) found in {tasks_dir}")
    results = []
    for model_ref in models:
        config = resolve_config(model_ref)
        model: FusionModel | None = None
        for task_path in task_paths:
            out = result_path(settings.results_dir, config.name, task_path.name)
            if out.is_file():
                previous = json.loads(out.read_text())
                if (
                    previous.get("status") == "ok"
                    and previous.get("config_fingerprint") == config.fingerprint()
                    and previous.get("protocol") == settings.protocol()
                ):
                    results.append(previous)
                    continue
            started = time.perf_counter()
            try:
                task = load_task(task_path)
                if model is None:
                    model = FusionModel.from_config(config, device=settings.device, dtype=dtype)
                result = evaluate_task(model, task, settings)
            except Exception as error:  # one failing task must not stop the others
                result = {
                    "model": config.name,
                    "task": task_path.name,
                    "status": "failed",
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(limit=5),
                    "config_fingerprint": config.fingerprint(),
                }
            result.setdefault("timings", {})["total_s"] = time.perf_counter() - started
            _write_json(out, result)
            results.append(result)
    return results


def evaluate_task(model: FusionModel, task: Task, settings: EvaluationSettings) -> dict:
    """Embed, select hyperparameters on the first fold, train and test every fold."""
    from tqdm import tqdm

    started = time.perf_counter()
    splits = {}
    total = sum(len(task.split_labels(s)) for s in task.splits)
    with tqdm(total=total, desc=f"embed {task.name}", unit="clip", disable=not settings.progress) as bar:
        for split in task.splits:
            splits[split] = embed_split(
                model, task, split, settings.cache_dir, batch_seconds=settings.batch_seconds, progress=bar.update
            )
    embed_seconds = time.perf_counter() - started
    data = {split: _labelled(task, split, embeddings) for split, embeddings in splits.items()}
    folds = task.folds()
    grid = hyperparameter_grid(settings.grid_points, settings.seed, max_epochs=settings.max_epochs)
    higher = metrics.METRICS[task.primary_metric].higher_is_better

    started = time.perf_counter()
    candidates = [
        _train_fold(task, folds[0], data, params, settings)
        for params in tqdm(grid, desc=f"grid {task.name}", disable=not settings.progress)
    ]
    ranked = sorted(range(len(candidates)), key=lambda i: -candidates[i].validation_score if higher else candidates[i].validation_score)
    chosen = candidates[ranked[0]]
    grid_seconds = time.perf_counter() - started

    started = time.perf_counter()
    fold_scores: dict[str, list[float]] = {name: [] for name in task.metrics}
    for fold in folds:
        trained = chosen if fold.index == 0 else _train_fold(task, fold, data, chosen.params, settings)
        for name, value in _test_scores(task, fold, data, trained, settings).items():
            fold_scores[name].append(value)
    return {
        "model": model.config.name,
        "task": task.name,
        "status": "ok",
        "metric": task.primary_metric,
        "higher_is_better": higher,
        "test": {
            name: {"mean": float(np.mean(values)), "std": float(np.std(values)) if len(values) > 1 else 0.0,
                   "folds": values}
            for name, values in fold_scores.items()
        },
        "validation_score": chosen.validation_score,
        "selected_hyperparameters": chosen.params.to_dict(),
        "selected_event_postprocessing": chosen.validation_extra.get("postprocessing"),
        "grid": [
            {"params": c.params.to_dict(), "validation_score": c.validation_score, "best_epoch": c.best_epoch}
            for c in candidates
        ],
        "config_fingerprint": model.config.fingerprint(),
        "config": model.config.to_dict(),
        "protocol": settings.protocol(),
        "seed": settings.seed,
        "device": settings.device,
        "timings": {"embed_s": embed_seconds, "grid_s": grid_seconds, "folds_s": time.perf_counter() - started},
    }


@dataclass
class _Labelled:
    x: np.ndarray  # rows (memory-mapped)
    y: np.ndarray  # multi-hot targets per row
    embeddings: SplitEmbeddings
    references: dict  # the split's json


def _labelled(task: Task, split: str, embeddings: SplitEmbeddings) -> _Labelled:
    references = task.split_labels(split)
    index = task.label_to_index
    if task.embedding_type == "scene":
        y = np.zeros((len(embeddings.files), len(index)), dtype=np.float32)
        for row, name in enumerate(embeddings.files):
            y[row, [index[str(label)] for label in references[name]]] = 1.0
    else:
        y = np.concatenate(
            [
                frame_targets(references[name], np.asarray(embeddings.timestamps[start : start + count]), index)
                for name, start, count in zip(embeddings.files, embeddings.starts, embeddings.counts)
            ]
        ) if len(embeddings.files) else np.zeros((0, len(index)), np.float32)
    return _Labelled(embeddings.rows, y, embeddings, references)


def _stack(parts: list[_Labelled]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0].x, parts[0].y
    return np.concatenate([np.asarray(p.x) for p in parts]), np.concatenate([p.y for p in parts])


def _validator(task: Task, part: _Labelled):
    labels = list(task.labels)
    primary = task.primary_metric
    if task.embedding_type == "scene":
        return lambda probabilities: (metrics.score(primary, probabilities, part.y, label_vocabulary=labels), {})
    grid = task.event_postprocessing_grid
    options = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]

    def validate(probabilities: np.ndarray):
        best = None
        for option in options:
            predicted = _events(part, probabilities, labels, option)
            value = metrics.score(primary, predicted, part.references, label_vocabulary=labels)
            value = 0.0 if np.isnan(value) else value
            better = best is None or (value > best[0] if metrics.METRICS[primary].higher_is_better else value < best[0])
            if better:
                best = (value, option)
        return best[0], {"postprocessing": best[1]}

    return validate


def _events(part: _Labelled, probabilities: np.ndarray, labels: list[str], option: dict) -> dict[str, list[dict]]:
    embeddings = part.embeddings
    return {
        name: decode_events(
            probabilities[start : start + count], np.asarray(embeddings.timestamps[start : start + count]), labels, **option
        )
        for name, start, count in zip(embeddings.files, embeddings.starts, embeddings.counts)
    }


def _train_fold(task: Task, fold: Fold, data: dict[str, _Labelled], params: HyperParameters, settings) -> TrainedPredictor:
    x_train, y_train = _stack([data[s] for s in fold.train])
    valid = data[fold.valid]
    return train_predictor(
        x_train,
        y_train,
        valid.x,
        _validator(task, valid),
        params,
        prediction_type="multilabel" if task.embedding_type == "event" else task.prediction_type,
        higher_is_better=metrics.METRICS[task.primary_metric].higher_is_better,
        device=settings.device,
        seed=settings.seed + fold.index,
        progress=settings.progress,
    )


def _test_scores(task: Task, fold: Fold, data: dict[str, _Labelled], trained: TrainedPredictor, settings) -> dict:
    test = data[fold.test]
    labels = list(task.labels)
    prediction_type = "multilabel" if task.embedding_type == "event" else task.prediction_type
    probabilities = trained.predict(test.x, prediction_type, settings.device)
    if task.embedding_type == "scene":
        return {name: metrics.score(name, probabilities, test.y, label_vocabulary=labels) for name in task.metrics}
    predicted = _events(test, probabilities, labels, trained.validation_extra["postprocessing"])
    return {name: metrics.score(name, predicted, test.references, label_vocabulary=labels) for name in task.metrics}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=2, default=float))
    os.replace(partial, path)
