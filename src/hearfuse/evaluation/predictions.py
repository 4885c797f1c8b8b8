"""The test predictions a result's scores were computed from, kept beside the result so that the scores
can be computed again on resamples of the test set afterwards (:mod:`.uncertainty`) without training
anything again.

Per fold (one for a train/valid/test task, k for a k-fold task), the items a bootstrap resamples and
what the task's metrics need of each: a scene task's clips with their class probabilities and 0/1
targets, an event task's audio files with their decoded events and the reference events. Stored as
``<result>.predictions.npz`` (``<model>/<task>.predictions.npz`` beside ``<model>/<task>.json``),
written before its result, and named in the result with the SHA-256 of its bytes: a result uses only
the file it was written with, so a file left by an earlier run, or one whose writer died before its
result, is never read as this result's (:func:`stale`).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_atomic
from .metrics import METRICS

#: The result's key naming its predictions file: ``{"file": name, "sha256": hex}``.
KEY = "test_predictions"
SUFFIX = ".predictions.npz"
_EVENT_FIELDS = ("file", "label", "start", "end")


@dataclass(frozen=True)
class FoldPredictions:
    """One fold's test split as it was scored, items in file-name order."""

    split: str
    files: tuple[str, ...]  # the items: clips (scene) or audio files (event)
    probabilities: np.ndarray | None = None  # scene: (items, labels)
    targets: np.ndarray | None = None  # scene: (items, labels) 0/1
    predicted: dict[str, list[dict]] | None = None  # event: file -> decoded events
    references: dict[str, list[dict]] | None = None  # event: file -> reference events

    def __len__(self) -> int:
        return len(self.files)

    def score(self, metric: str, labels: list[str], items: np.ndarray | None = None) -> float:
        """``metric`` with the task's own function on the items ``items`` (positions, repeats counting
        again: a repeated file is a second file with the same events); every item by default."""
        items = np.arange(len(self)) if items is None else np.asarray(items)
        if self.probabilities is not None:
            return METRICS[metric](self.probabilities[items], self.targets[items], label_vocabulary=labels)
        predicted, references = self._events(items)
        return METRICS[metric](predicted, references, label_vocabulary=labels)

    def item_counts(self, metric: str, labels: list[str]) -> np.ndarray:
        """Each item's counts ``(items, k)`` for a metric of summed counts (:class:`.metrics.Counts`)."""
        if self.probabilities is not None:
            return METRICS[metric].item_counts(self.probabilities, self.targets, label_vocabulary=labels)
        return METRICS[metric].item_counts(*self._events(np.arange(len(self))), label_vocabulary=labels)

    def _events(self, items: np.ndarray) -> tuple[dict, dict]:
        """Predicted and reference events keyed by position in ``items``, so that repeats stay apart."""
        names = [self.files[i] for i in items]
        return (
            {position: self.predicted[name] for position, name in enumerate(names)},
            {position: self.references.get(name, []) for position, name in enumerate(names)},
        )

    def in_file_order(self) -> FoldPredictions:
        """The same fold, items sorted by file name: the order every model's items take, so that one
        draw of positions picks the same clips for each (their scores do not depend on the order)."""
        order = sorted(range(len(self.files)), key=self.files.__getitem__)
        if self.probabilities is None:
            return FoldPredictions(
                self.split, tuple(self.files[i] for i in order), predicted=self.predicted, references=self.references
            )
        return FoldPredictions(
            self.split, tuple(self.files[i] for i in order), self.probabilities[order], self.targets[order]
        )


@dataclass(frozen=True)
class Predictions:
    """Every fold's test predictions of one result."""

    embedding_type: str  # "scene" | "event"
    labels: tuple[str, ...]
    folds: tuple[FoldPredictions, ...]

    def score(self, metric: str) -> list[float]:
        """``metric`` on every fold's whole test split: the result's fold scores."""
        return [fold.score(metric, list(self.labels)) for fold in self.folds]

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "embedding_type": np.array(self.embedding_type),
            "labels": np.array(self.labels, dtype=str),
        }
        for index, fold in enumerate(self.folds):
            prefix = f"fold{index}/"
            arrays[prefix + "split"] = np.array(fold.split)
            arrays[prefix + "files"] = np.array(fold.files, dtype=str)
            if fold.probabilities is not None:
                arrays[prefix + "probabilities"] = np.asarray(fold.probabilities)
                arrays[prefix + "targets"] = np.asarray(fold.targets, dtype=np.uint8)
                continue
            for name, events in (("predicted", fold.predicted), ("references", fold.references)):
                for field, column in zip(_EVENT_FIELDS, _event_columns(fold.files, events)):
                    arrays[f"{prefix}{name}/{field}"] = column
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Predictions:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            arrays = dict(stored)
        embedding_type = str(arrays["embedding_type"])
        folds = []
        for index in range(sum(name.endswith("/split") for name in arrays)):
            prefix = f"fold{index}/"
            files = tuple(str(name) for name in arrays[prefix + "files"])
            split = str(arrays[prefix + "split"])
            if embedding_type == "scene":
                fold = FoldPredictions(split, files, arrays[prefix + "probabilities"], arrays[prefix + "targets"])
            else:
                predicted, references = (
                    _events_by_file(files, *(arrays[f"{prefix}{name}/{field}"] for field in _EVENT_FIELDS))
                    for name in ("predicted", "references")
                )
                fold = FoldPredictions(split, files, predicted=predicted, references=references)
            folds.append(fold)
        return cls(embedding_type, tuple(str(label) for label in arrays["labels"]), tuple(folds))


def _event_columns(files: tuple[str, ...], events: dict[str, list[dict]]) -> list[np.ndarray]:
    """Events of the files as columns: file position, label (as text, as the metrics read it), start
    and end (ms)."""
    rows = [
        (position, str(e["label"]), float(e["start"]), float(e["end"]))
        for position, name in enumerate(files)
        for e in events.get(name, [])
    ]
    position, label, start, end = zip(*rows) if rows else ((), (), (), ())
    return [
        np.array(position, dtype=np.int64),
        np.array(label, dtype=str),
        np.array(start, dtype=np.float64),
        np.array(end, dtype=np.float64),
    ]


def _events_by_file(files, position, label, start, end) -> dict[str, list[dict]]:
    events: dict[str, list[dict]] = {name: [] for name in files}
    for p, text, a, b in zip(position.tolist(), label.tolist(), start.tolist(), end.tolist()):
        events[files[p]].append({"label": text, "start": a, "end": b})
    return events


def path_for(result_file: Path) -> Path:
    """Where a result's predictions live: ``<task>.json`` -> ``<task>.predictions.npz``."""
    return result_file.with_suffix(SUFFIX)


def write(result_file: Path, predictions: Predictions) -> dict:
    """Store ``predictions`` beside ``result_file`` (atomically) and return what the result records of
    them (:data:`KEY`)."""
    data = predictions.to_bytes()
    path = path_for(result_file)
    write_atomic(path, lambda handle: handle.write(data))
    return {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}


def stale(result_file: Path, record: dict) -> str | None:
    """Why ``record`` (stored at ``result_file``) has no usable predictions, in words; None when it has."""
    return _stored(result_file, record)[1]


def read(result_file: Path, record: dict) -> Predictions:
    """The predictions ``record`` was written with; ``ValueError`` saying why when it has none."""
    data, reason = _stored(result_file, record)
    if data is None:
        raise ValueError(reason)
    return Predictions.from_bytes(data)


def load(result_file: Path) -> Predictions:
    """The test predictions of the result stored at ``result_file`` (``<model>/<task>[.<probe>].json``);
    ``ValueError`` saying why when it has none that can be used."""
    record = json.loads(Path(result_file).read_text())
    if record.get("status") != "ok":
        raise ValueError(f"{result_file} holds no score (status {record.get('status')!r})")
    return read(Path(result_file), record)


def _stored(result_file: Path, record: dict) -> tuple[bytes | None, str | None]:
    """The bytes of ``record``'s predictions file when they are the ones it was written with, else why not."""
    reference = record.get(KEY)
    if not isinstance(reference, dict) or not isinstance(reference.get("file"), str):
        return None, "its test predictions are not stored (it was written before hearfuse kept them)"
    path = result_file.parent / reference["file"]
    if not path.is_file():
        return None, f"its test predictions file {path.name} is missing"
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != reference.get("sha256"):
        return None, f"its test predictions file {path.name} is not the one it was written with"
    return data, None
