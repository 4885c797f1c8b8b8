"""HEAR tasks on disk: reading, validating, and the fold rotation of the protocol.

Layout (as HEAR's preprocessing writes it)::

    <name>-<version>-<mode>/
      task_metadata.json     embedding_type, prediction_type, split_mode, splits, evaluation, ...
      labelvocabulary.csv    idx,label
      <split>.json           scene: {file: [labels]}   event: {file: [{label, start, end}]} (ms)
      <sample_rate>/<split>/<file>
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio import AudioError, audio_info
from ..errors import UsageError
from .events import DEFAULT_POSTPROCESSING_GRID
from .metrics import METRICS

EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "presplit_kfold", "new_split_kfold")


class TaskError(UsageError):
    """A malformed task directory; the message lists every problem found."""


@dataclass(frozen=True)
class Fold:
    """One train/valid/test assignment of splits."""

    index: int
    train: tuple[str, ...]
    valid: str
    test: str


@dataclass(frozen=True)
class Task:
    path: Path
    name: str
    embedding_type: str
    prediction_type: str
    split_mode: str
    splits: tuple[str, ...]
    metrics: tuple[str, ...]
    labels: tuple[str, ...]
    sample_rates: tuple[int, ...]
    evaluation_params: dict
    metadata: dict

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def label_to_index(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.labels)}

    @property
    def event_postprocessing_grid(self) -> dict[str, list[float]]:
        return dict(self.evaluation_params.get("event_postprocessing_grid", DEFAULT_POSTPROCESSING_GRID))

    def folds(self) -> list[Fold]:
        """trainvaltest: one fold. k-fold (``data_splits_from_folds``): folds sorted, fold i tests,
        fold i+1 (mod k) validates, the rest train in sorted order."""
        if self.split_mode == "trainvaltest":
            return [Fold(0, ("train",), "valid", "test")]
        ordered = sorted(self.splits)
        count = len(ordered)
        return [
            Fold(
                i,
                tuple(s for j, s in enumerate(ordered) if j not in (i, (i + 1) % count)),
                ordered[(i + 1) % count],
                ordered[i],
            )
            for i in range(count)
        ]

    def kit_file_order(self) -> dict[str, list[str]]:
        """Each split's files in the order of the kit's embedding memmap, which is the order its
        training batches come in: the split file's keys shuffled by one ``random.Random(0)`` that
        goes through the splits in metadata order (``task_embeddings`` / ``memmap_embeddings``)."""
        prng = random.Random(0)
        order = {}
        for split in self.splits:
            files = list(self.split_labels(split))
            prng.shuffle(files)
            order[split] = files
        return order

    def split_labels(self, split: str) -> dict[str, Any]:
        """The ``<split>.json`` mapping of file name to labels (scene) or events (event)."""
        return json.loads((self.path / f"{split}.json").read_text())

    def audio_dir(self, split: str, sample_rate: int = 16000) -> Path:
        """Audio of a split at ``sample_rate`` if present, else at the closest rate above it."""
        rates = sorted(self.sample_rates, key=lambda r: (r < sample_rate, abs(r - sample_rate)))
        return self.path / str(rates[0]) / split


def load_task(path: str | Path, *, check_audio: bool = True, read_headers: bool = False) -> Task:
    """Read and validate a task directory; :class:`TaskError` says exactly what is malformed.

    Problems are reported once per root cause: when the metadata itself is broken, the split files
    are not checked against it. ``check_audio`` checks that every listed audio file exists;
    ``read_headers`` also reads each file's header (empty, truncated-to-nothing or non-audio files).
    """
    path = Path(path)
    problems: list[str] = []
    if not path.is_dir():
        raise TaskError(f"task directory {path} does not exist")
    metadata = _read_json(path / "task_metadata.json", problems)
    if not isinstance(metadata, dict):
        raise TaskError(_format(path, problems or ["task_metadata.json must hold a JSON object"]))

    def field(name: str, allowed: tuple[str, ...] | None = None):
        value = metadata.get(name)
        if value is None:
            problems.append(f"task_metadata.json: missing {name!r}")
        elif allowed and value not in allowed:
            problems.append(f"task_metadata.json: {name}={value!r} is not one of {list(allowed)}")
        return value

    embedding_type = field("embedding_type", EMBEDDING_TYPES)
    prediction_type = field("prediction_type", PREDICTION_TYPES)
    split_mode = field("split_mode", SPLIT_MODES)
    metrics = metadata.get("evaluation")
    if not isinstance(metrics, list) or not metrics:
        problems.append("task_metadata.json: 'evaluation' must be a non-empty list of metric names")
        metrics = []
    for metric in metrics:
        if metric not in METRICS:
            problems.append(f"task_metadata.json: unknown metric {metric!r} (known: {', '.join(METRICS)})")
    splits = metadata.get("splits")
    if splits is None and split_mode == "trainvaltest":
        splits = ["train", "valid", "test"]
    if not isinstance(splits, list) or not splits:
        problems.append("task_metadata.json: 'splits' must be a non-empty list")
        splits = []
    splits = [s["name"] if isinstance(s, dict) else str(s) for s in splits]
    if split_mode == "trainvaltest" and sorted(splits) != ["test", "train", "valid"]:
        problems.append(f"split_mode trainvaltest needs splits train, valid, test; got {splits}")
    if split_mode in ("presplit_kfold", "new_split_kfold") and len(splits) < 3:
        problems.append(f"split_mode {split_mode} needs at least 3 folds; got {splits}")
    evaluation_params = metadata.get("evaluation_params") or {}
    if not isinstance(evaluation_params, dict):
        problems.append("task_metadata.json: 'evaluation_params' must be an object")
        evaluation_params = {}

    labels = _read_vocabulary(path / "labelvocabulary.csv", problems)
    if problems:  # the split files cannot be judged against broken metadata: one line per root cause
        raise TaskError(_format(path, problems))
    sample_rates = tuple(sorted(int(p.name) for p in path.iterdir() if p.is_dir() and p.name.isdigit()))
    if check_audio and not sample_rates:
        problems.append("no audio folder <sample_rate>/ (e.g. 16000/) in the task directory")
    task = Task(
        path=path,
        name=path.name,
        embedding_type=embedding_type,
        prediction_type=prediction_type,
        split_mode=split_mode,
        splits=tuple(splits),
        metrics=tuple(metrics),
        labels=tuple(labels),
        sample_rates=sample_rates,
        evaluation_params=evaluation_params,
        metadata=metadata,
    )
    known = set(labels)
    for split in splits:
        content = _read_json(path / f"{split}.json", problems)
        if content is None:
            continue
        if not isinstance(content, dict):
            problems.append(f"{split}.json must map file names to labels")
            continue
        if not content:
            problems.append(f"{split}.json: split {split!r} lists no files")
            continue
        _check_split(task, split, content, known, problems)
        if check_audio and sample_rates:
            audio_dir = task.audio_dir(split)
            missing = [name for name in content if not (audio_dir / name).is_file()]
            if missing:
                problems.append(
                    f"{len(missing)} audio files of split {split!r} missing in {audio_dir}, e.g. {missing[:3]}"
                )
            if read_headers:
                for name in content:
                    if name not in missing:
                        try:
                            audio_info(audio_dir / name)
                        except (AudioError, OSError) as error:
                            problems.append(f"split {split!r}: audio file {audio_dir / name}: {error}")
    if problems:
        raise TaskError(_format(path, problems))
    return task


def _check_split(task: Task, split: str, content: dict, known: set[str], problems: list[str]) -> None:
    for name, value in content.items():
        if task.embedding_type == "scene":
            if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
                problems.append(f"{split}.json: {name!r} must map to a list of labels")
                continue
            labels = [str(v) for v in value]
            if task.prediction_type == "multiclass" and len(labels) != 1:
                problems.append(f"{split}.json: multiclass file {name!r} has {len(labels)} labels, expected 1")
        else:
            if not isinstance(value, list):
                problems.append(f"{split}.json: {name!r} must map to a list of events")
                continue
            labels = []
            for event in value:
                if not isinstance(event, dict) or not {"label", "start", "end"} <= set(event):
                    problems.append(f"{split}.json: {name!r} has an event without label/start/end: {event}")
                    continue
                if not 0 <= float(event["start"]) <= float(event["end"]):
                    problems.append(f"{split}.json: {name!r} has an event with start > end or < 0: {event}")
                labels.append(str(event["label"]))
        unknown = sorted(set(labels) - known)
        if unknown:
            problems.append(f"{split}.json: {name!r} uses labels not in labelvocabulary.csv: {unknown}")


def _read_json(path: Path, problems: list[str]):
    if not path.is_file():
        problems.append(f"missing {path.name}")
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        problems.append(f"{path.name} is not valid JSON: {error}")
        return None


def _read_vocabulary(path: Path, problems: list[str]) -> list[str]:
    if not path.is_file():
        problems.append("missing labelvocabulary.csv")
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"idx", "label"} <= set(rows[0]):
        problems.append("labelvocabulary.csv needs columns idx,label and at least one row")
        return []
    try:
        by_index = {int(row["idx"]): str(row["label"]) for row in rows}
    except ValueError:
        problems.append("labelvocabulary.csv: idx must be integers")
        return []
    if sorted(by_index) != list(range(len(rows))):
        problems.append("labelvocabulary.csv: idx must be 0..n-1, each once")
        return []
    labels = [by_index[i] for i in range(len(rows))]
    if len(set(labels)) != len(labels):
        problems.append("labelvocabulary.csv: labels must be unique")
    return labels


def _format(path: Path, problems: list[str]) -> str:
    """One line for one problem; a list, one problem a line, for several."""
    if len(problems) == 1:
        return f"malformed task {path}: {problems[0]}"
    return f"malformed task {path}:\n  - " + "\n  - ".join(problems)


def find_tasks(root: str | Path) -> list[Path]:
    """Task directories under ``root`` (or ``root`` itself when it is one)."""
    root = Path(root)
    if (root / "task_metadata.json").is_file():
        return [root]
    return sorted(p.parent for p in root.glob("*/task_metadata.json"))


def select_tasks(root: str | Path, only: tuple[str, ...] = ()) -> list[Path]:
    """Task directories under ``root``, filtered by name (``gm_pitch`` or ``gm_pitch-v1-ci``); a root
    without tasks, or a filter matching none of them, is a :class:`TaskError` naming what exists."""
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"task folder {root} does not exist")
    paths = find_tasks(root)
    if not paths:
        raise TaskError(f"no task directories (folders holding task_metadata.json) in {root}")
    return filter_tasks(paths, only, root)


def filter_tasks(paths: list[Path], only: tuple[str, ...], root: str | Path) -> list[Path]:
    """The ``paths`` named in ``only`` (all when empty); a name matching none is a :class:`TaskError`."""

    def matches(path: Path, name: str) -> bool:
        return name in (path.name, path.name.split("-")[0])

    unmatched = [name for name in only if not any(matches(p, name) for p in paths)]
    if unmatched:
        names = ", ".join(p.name for p in paths)
        raise TaskError(f"--task {', '.join(unmatched)} matches none of the tasks in {root} ({names})")
    return [p for p in paths if not only or any(matches(p, name) for name in only)]
