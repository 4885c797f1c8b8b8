"""Evaluate representations on HEAR tasks: embed (cached), train the downstream grid, score, save.

For each task the protocol is the HEAR kit's (:mod:`.protocol`): the probe's candidates (the kit's grid
points, unless the protocol names another registered :class:`~.protocol.Probe`) are searched on the first
data split, the chosen one is fitted on every split (k-fold: fold i tests, fold i+1 validates) and scored
with every metric of the task, and fold scores are aggregated as the kit does.
Embeddings come from the cache (:mod:`.cache`) or, with :func:`evaluate_embeddings`, from a folder
written by heareval's own embedding runner. Results go to ``RESULTS/<model>/<task>.json``, the test
predictions they were scored from beside them (:mod:`.predictions`), and are reused only while their
provenance (:mod:`.provenance`) and protocol hold and their predictions are the ones they were
written with; otherwise they are recomputed and the log says why.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..config import FusionConfig
from ..dtypes import dtype_name, resolve_dtype, warn_if_emulated
from ..errors import UsageError
from ..files import write_text_atomic
from ..fusion.aggregation import LayerAggregation
from ..hear import resolve_config
from ..model import FusionModel
from ..upstream import WeightsNotFoundError
from . import heareval_layout, metrics, predictions, provenance
from .cache import SplitEmbeddings, embed_split_variants, embedding_key
from .events import Postprocessing, choose_postprocessing, decode_events, postprocessing_options
from .protocol import Fitted, ProbeFold, Protocol, Validator, aggregate, uses_scoring_for_early_stopping
from .results import SEEDS_KEY, result_path
from .splits import SplitData, from_cache
from .tasks import Fold, Task, TaskError, filter_tasks, load_task, select_tasks

log = logging.getLogger(__name__)


@dataclass
class EvaluationSettings:
    cache_dir: Path
    results_dir: Path
    device: str = "cpu"
    protocol: Protocol = field(default_factory=Protocol)
    batch_seconds: float = 60.0
    progress: bool = True
    #: Train the chosen candidate under this many seeds (the protocol's, then the next ones) and record
    #: the scores of each (:func:`seed_spread`); the reported score stays the protocol seed's.
    training_seeds: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.training_seeds, bool) or not isinstance(self.training_seeds, int) or self.training_seeds < 1:
            raise UsageError(f"training_seeds (--seeds) must be a positive integer, got {self.training_seeds!r}")


def evaluate(
    models: Sequence[str | FusionConfig],
    tasks_dir: str | Path,
    settings: EvaluationSettings,
    *,
    only: Sequence[str] = (),
    dtype: torch.dtype | str | None = None,
    on_ray: bool = False,
) -> list[dict]:
    """Every model x task; a failing task is recorded as failed and the others go on. ``on_ray``: each
    model x task is a task on the connected Ray cluster (:mod:`hearfuse.cluster`). ``dtype``: the models'
    precision, a name or ``"auto"``, decided here for ``settings.device`` (every worker gets the same)."""
    task_paths = select_tasks(tasks_dir, tuple(only))
    picked = resolve_dtype(dtype, settings.device)
    warn_if_emulated(picked, settings.device)  # said here: on Ray, what the workers log stays with them
    if dtype == "auto":
        log.info("--dtype auto: %s on %s", dtype_name(picked), settings.device)
    requested = dtype_name(picked) if dtype != "auto" else "auto"
    configs = [resolve_config(ref) for ref in models]
    named: dict[str, str | FusionConfig] = {}
    for ref, config in zip(models, configs):
        if config.name in named:  # one results folder per name: each would recompute over the other's results
            raise UsageError(
                f"two models are named {config.name!r} ({_described(named[config.name])} and {_described(ref)}); "
                "their results would overwrite each other: give one config another name"
            )
        named[config.name] = ref
    jobs = [job for config in configs for job in model_jobs(config, task_paths, settings, picked, requested)]
    return execute(jobs, settings, on_ray)


def _described(ref: str | FusionConfig) -> str:
    return ref if isinstance(ref, str) else f"a config named {ref.name!r}"


def model_jobs(
    config: FusionConfig,
    task_paths: list[Path],
    settings: EvaluationSettings,
    dtype: torch.dtype | None,
    dtype_requested: str | None = None,
    compute: Callable[[Task], dict] | None = None,
) -> list[Callable[[], dict]]:
    """One model on every task; run in one process, the jobs share the model, loaded only when some
    result has to be computed. ``compute``: how a result is computed when it must be (default: embed
    with a model built from ``config`` and score). ``dtype_requested``: recorded beside the precision
    used ("auto" when it was picked)."""
    model: FusionModel | None = None
    key = embedding_key(config, dtype)

    def embed_and_score(task: Task) -> dict:
        nonlocal model
        load_task(task.path, read_headers=True)  # every bad audio file named before any work
        if model is None:
            model = FusionModel.from_config(config, device=settings.device, dtype=dtype)
        return {**evaluate_task(model, task, settings), "dtype_requested": dtype_requested or dtype_name(dtype)}

    def identity(task: Task) -> dict:
        return {**key, "task": provenance.task_content(task), "audio": _audio_stamps(task)}

    compute = compute or embed_and_score
    return [functools.partial(_run, config.name, path, settings, load_task, identity, compute) for path in task_paths]


def evaluate_embeddings(
    root: str | Path, settings: EvaluationSettings, *, only: Sequence[str] = (), on_ray: bool = False
) -> list[dict]:
    """Score embeddings written by heareval's embedding runner (``EMBEDDINGS/<module>/``, or one task
    folder in it); the model is named after the module's folder."""
    paths = filter_tasks(heareval_layout.find_embedding_tasks(root), tuple(only), root)

    def compute(task: Task) -> dict:
        data = {split: heareval_layout.read_split(task, split) for split in task.splits}
        return score_task(task, data, settings)

    def identity(task: Task) -> dict:
        return {"embeddings": heareval_layout.stamp(task), "task": provenance.task_content(task)}

    def load(path: Path) -> Task:
        return load_task(path, check_audio=False)

    name = heareval_layout.module_name
    jobs = [functools.partial(_run, name(path), path, settings, load, identity, compute) for path in paths]
    return execute(jobs, settings, on_ray)


def execute(jobs: list[Callable[[], dict]], settings: EvaluationSettings, on_ray: bool) -> list[dict]:
    """Run the model x task jobs here, in order, or as Ray tasks (each with a GPU when training runs on
    CUDA, else one CPU), results in the same order. Paths in ``settings`` must then be absolute and on
    a filesystem every machine shares."""
    if not on_ray:
        return [job() for job in jobs]
    import ray
    from tqdm import tqdm

    from ..cluster import Placement

    remote = ray.remote(max_retries=2, **Placement(settings.device).options())(_call)
    pending = {remote.remote(job): index for index, job in enumerate(jobs)}
    results: list[dict] = [{}] * len(jobs)
    with tqdm(total=len(jobs), desc="model x task", unit="run", disable=not settings.progress) as bar:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            try:
                results[pending.pop(ready)] = ray.get(ready)
            except ray.exceptions.RayTaskError as error:  # a user's mistake met on a worker: its one line
                if isinstance(error.cause, UsageError):
                    raise error.cause from None
                raise
            bar.update(1)
    return results


def _call(job: Callable[[], dict]) -> dict:
    return job()


def _run(
    model_name: str,
    task_path: Path,
    settings: EvaluationSettings,
    load: Callable[[Path], Task],
    identity: Callable[[Task], dict],
    compute: Callable[[Task], dict],
) -> dict:
    """One model x task: reuse the stored result if its provenance holds and its test predictions are
    stored, else compute and store both (the predictions first: a result never names a file that is
    not there)."""
    out = result_path(settings.results_dir, model_name, task_path.name, settings.protocol.probe)
    started = time.perf_counter()
    current: dict = {"protocol": settings.protocol.to_dict()}
    try:
        task = load(task_path)
        current = {**identity(task), **current}
        previous = json.loads(out.read_text()) if out.is_file() else None
        if previous is not None and previous.get("status") == "ok":
            reasons = provenance.changes(previous.get("provenance"), current)
            missing = predictions.stale(out, previous) if "test" in previous else None  # validation only: none
            reasons += [missing] if missing else []
            if len((previous.get(SEEDS_KEY) or {}).get("seeds", [None])) < settings.training_seeds:
                reasons.append(f"the spread across {settings.training_seeds} training seeds was asked")
            if not reasons:
                return previous
            log.info("recomputing %s on %s: %s", model_name, task_path.name, "; ".join(reasons))
        reason = settings.protocol.not_applicable(task.embedding_type)
        origin = {"task_suite": task.metadata.get("suite"), "task_sources": task.metadata.get("sources", [])}
        if reason is not None:  # said, and the other tasks go on
            result = {"model": model_name, "task": task_path.name, "status": "skipped", "reason": reason, **origin}
        else:
            result = {"model": model_name, "task": task_path.name, "status": "ok", **origin, **compute(task)}
            tested = result.pop(predictions.KEY, None)
            if tested is not None:
                result[predictions.KEY] = predictions.write(out, tested)
        result["probe"] = settings.protocol.probe
    except WeightsNotFoundError:  # the model's problem, not the task's: no other task would fare better
        raise
    except (TaskError, ValueError, OSError, RuntimeError) as error:  # one failing task must not stop the others
        result = {
            "model": model_name,
            "task": task_path.name,
            "status": "failed",
            "error": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(limit=5),
        }
    result["provenance"] = current
    result.setdefault("timings", {})["total_s"] = time.perf_counter() - started
    result = _json_safe(result)
    write_text_atomic(out, json.dumps(result, indent=2))
    return result


def _audio_stamps(task: Task) -> dict[str, str]:
    return {
        split: provenance.files_stamp(task.audio_dir(split), list(task.split_labels(split))) for split in task.splits
    }


def embed_task(
    model: FusionModel,
    task: Task,
    settings: EvaluationSettings,
    variants: Mapping[str, Sequence[LayerAggregation]] | None = None,
    *,
    scene_frames: bool = False,
) -> dict[str, list[SplitEmbeddings]]:
    """Every split of ``task`` into the cache, in the kit's memmap order, with a progress bar: for
    ``model``, or for each of its variants (:func:`.cache.embed_split_variants`) from one pass; a scene
    task's scene frames instead of its embeddings with ``scene_frames``."""
    from tqdm import tqdm

    order = task.kit_file_order()
    count = max((len(each) for each in (variants or {}).values()), default=1)
    with tqdm(
        total=sum(len(files) for files in order.values()),
        desc=f"embed {task.name}" + (f", {count} variants" if variants else ""),
        unit="clip",
        disable=not settings.progress,
    ) as bar:
        return {
            split: embed_split_variants(
                model,
                variants or {},
                task,
                split,
                settings.cache_dir,
                files=order[split],
                batch_seconds=settings.batch_seconds,
                progress=bar.update,
                scene_frames=scene_frames,
            )
            for split in task.splits
        }


def evaluate_task(model: FusionModel, task: Task, settings: EvaluationSettings) -> dict:
    """Embed every split (cached), then :func:`score_task`."""
    started = time.perf_counter()
    embedded = embed_task(model, task, settings)
    data = {split: from_cache(task, split, embeddings) for split, (embeddings,) in embedded.items()}
    embed_seconds = time.perf_counter() - started
    result = score_task(task, data, settings)
    result["timings"]["embed_s"] = embed_seconds
    return {
        **result,
        "config_fingerprint": model.config.fingerprint(),
        "config": model.config.to_dict(),
        "embedding_key": embedding_key(model.config, model.autocast_dtype),
    }


def score_task(task: Task, data: dict[str, SplitData], settings: EvaluationSettings) -> dict:
    """Search the probe's candidates on the first split, fit the chosen one on every other split, test,
    aggregate. The result holds every fold's test predictions (:class:`.predictions.Predictions`) under
    :data:`.predictions.KEY`; storing the result replaces them by the file they are written to."""
    protocol = settings.protocol
    probe = protocol.registered_probe
    folds = task.folds()
    chosen, candidates, grid_seconds = select_on_validation(task, data, settings)

    started = time.perf_counter()
    fold_scores: dict[str, list[float]] = {name: [] for name in task.metrics}
    trained_folds = []
    tested = []
    for fold in folds:
        trained = probe.fit(_probe_fold(task, fold, data, settings), chosen.params, protocol) if fold.index else chosen
        trained_folds.append(
            {
                "test": fold.test,
                "valid": fold.valid,
                "train": list(fold.train),
                "validation_score": trained.validation_score,
                "best_epoch": trained.best_epoch,
                "epochs_run": trained.epochs_run,
            }
        )
        scores, fold_predictions = _test_scores(task, fold.test, data[fold.test], trained, settings.device)
        for name, value in scores.items():
            fold_scores[name].append(value)
        tested.append(fold_predictions)
    result = selection_record(task, chosen, candidates, settings, grid_seconds)
    result["test"] = {name: aggregate(values) for name, values in fold_scores.items()}
    result[predictions.KEY] = predictions.Predictions(task.embedding_type, task.labels, tuple(tested))
    result["folds"] = trained_folds
    result["timings"]["folds_s"] = time.perf_counter() - started
    if settings.training_seeds > 1:
        started = time.perf_counter()
        result[SEEDS_KEY] = seed_spread(task, data, settings, chosen, fold_scores)
        result["timings"]["seeds_s"] = time.perf_counter() - started
    return result


def select_on_validation(
    task: Task, data: Mapping[str, SplitData], settings: EvaluationSettings
) -> tuple[Fitted, list[Fitted], float]:
    """The probe's candidates searched on the first split (only its training and validation splits are
    read), the one chosen on validation, and the seconds the search took."""
    primary = metrics.METRICS[task.primary_metric]
    started = time.perf_counter()
    candidates = settings.protocol.registered_probe.search(
        _probe_fold(task, task.folds()[0], data, settings), settings.protocol
    )
    # sort_grid_points: best validation value first, the earlier candidate on ties (a stable sort)
    chosen = max(enumerate(candidates), key=lambda pair: (_rank(pair[1], primary), -pair[0]))[1]
    return chosen, candidates, time.perf_counter() - started


def selection_record(
    task: Task, chosen: Fitted, candidates: list[Fitted], settings: EvaluationSettings, grid_seconds: float
) -> dict:
    """What a result says about the choice on validation (a test adds its scores and folds)."""
    probe = settings.protocol.registered_probe
    return {
        "metric": task.primary_metric,
        "higher_is_better": metrics.METRICS[task.primary_metric].higher_is_better,
        "validation_score": chosen.validation_score,
        "monitor": chosen.monitor,
        "selected_hyperparameters": chosen.params.to_dict(),
        "selected_event_postprocessing": chosen.postprocessing.to_dict() if chosen.postprocessing else None,
        "grid": [probe.describe(candidate) for candidate in candidates],
        "protocol": settings.protocol.to_dict(),
        "device": settings.device,
        "timings": {"grid_s": grid_seconds},
    }


def seed_spread(
    task: Task, data: dict[str, SplitData], settings: EvaluationSettings, chosen: Fitted, scores: dict[str, list]
) -> dict:
    """The chosen candidate trained again on every fold under ``settings.training_seeds - 1`` more seeds
    (the protocol's seed + 1, + 2, ...) and tested: how much of a score is the luck of training's seed
    (initialisation, dropout), which the test-set bootstrap does not see. ``scores``: the protocol
    seed's fold scores per metric. Records each seed's score (the mean over folds) per metric."""
    protocol = settings.protocol
    by_seed = {name: [aggregate(values)["mean"]] for name, values in scores.items()}
    seeds = [protocol.seed + offset for offset in range(settings.training_seeds)]
    for seed in seeds[1:]:
        seeded = replace(protocol, seed=seed)
        fold_scores: dict[str, list[float]] = {name: [] for name in task.metrics}
        for fold in task.folds():
            trained = protocol.registered_probe.fit(_probe_fold(task, fold, data, settings), chosen.params, seeded)
            for name, value in _test_scores(task, fold.test, data[fold.test], trained, settings.device)[0].items():
                fold_scores[name].append(value)
        for name, values in fold_scores.items():
            by_seed[name].append(aggregate(values)["mean"])
    return {"seeds": seeds, "test": by_seed}


def _probe_fold(task: Task, fold: Fold, data: Mapping[str, SplitData], settings: EvaluationSettings) -> ProbeFold:
    """A fold as every probe sees it: its training rows, its validation split, and how a fit is judged
    there (the primary score, or the validation loss where the task turns scoring off)."""
    scoring = uses_scoring_for_early_stopping(task.metadata)
    options = postprocessing_options(task.event_postprocessing_grid) if task.embedding_type == "event" else []
    if task.embedding_type == "event" and not scoring and len(options) != 1:
        raise TaskError(
            f"task {task.name}: use_scoring_for_early_stopping is false, so event_postprocessing_grid must hold "
            "exactly one setting (the kit asserts this in epoch_best_postprocessing_or_default); "
            f"it holds {len(options)}"
        )
    primary = metrics.METRICS[task.primary_metric]
    x_train, y_train = _stack([data[split] for split in fold.train])
    valid = data[fold.valid]
    return ProbeFold(
        task=task,
        index=fold.index,
        x_train=x_train,
        y_train=y_train,
        valid=valid,
        prediction_type=_prediction_type(task),
        monitor="score" if scoring else "loss",
        validate=_validator(task, valid, options),
        primary=primary,
        rank=primary.rank if scoring else metrics.VALIDATION_LOSS.rank,
        loss_postprocessing=None if scoring or not options else options[0],
        device=settings.device,
        progress=settings.progress,
    )


def _rank(trained: Fitted, primary: metrics.Metric) -> float:
    return (primary if trained.monitor == "score" else metrics.VALIDATION_LOSS).rank(trained.validation_score)


def _stack(parts: list[SplitData]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0].x, parts[0].y
    return np.concatenate([np.asarray(p.x) for p in parts]), np.concatenate([p.y for p in parts])


def _prediction_type(task: Task) -> str:
    return "multilabel" if task.embedding_type == "event" else task.prediction_type


def _events(part: SplitData, probabilities: np.ndarray, labels: list[str], setting: Postprocessing) -> dict:
    return {name: decode_events(p, t, labels, setting) for name, p, t in part.per_file(probabilities)}


def _validator(task: Task, part: SplitData, options: list[Postprocessing]) -> Validator:
    labels = list(task.labels)
    primary = task.primary_metric
    if task.embedding_type == "scene":
        return lambda probabilities: (metrics.score(primary, probabilities, part.y, label_vocabulary=labels), None)

    def validate(probabilities: np.ndarray) -> tuple[float, Postprocessing]:
        def score(option: Postprocessing) -> float:
            return metrics.score(
                primary, _events(part, probabilities, labels, option), part.references, label_vocabulary=labels
            )

        option, value = choose_postprocessing(options, score, primary)
        return value, option

    return validate


def _test_scores(
    task: Task, split: str, test: SplitData, trained: Fitted, device: str
) -> tuple[dict[str, float], predictions.FoldPredictions]:
    """Every metric of the task on the test split, and the predictions they were computed from."""
    probabilities = trained.predict(test.x, _prediction_type(task), device)
    if task.embedding_type == "scene":
        tested = predictions.FoldPredictions(split, tuple(test.files), probabilities, test.y)
    else:
        predicted = _events(test, probabilities, list(task.labels), trained.postprocessing)
        references = {name: test.references.get(name, []) for name in test.files}
        tested = predictions.FoldPredictions(split, tuple(test.files), predicted=predicted, references=references)
    return {name: tested.score(name, list(task.labels)) for name in task.metrics}, tested


def _json_safe(value):
    """NaN (no value: a score undefined on this data) as null; infinities stay (a perfect d_prime is inf)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
