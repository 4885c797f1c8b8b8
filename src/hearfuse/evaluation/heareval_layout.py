"""Embeddings as heareval's embedding runner writes them, so they can be scored here.

``heareval.embeddings.runner MODULE`` writes, per task, ``EMBEDDINGS/<module>/<task>/`` holding
copies of ``task_metadata.json``, ``labelvocabulary.csv`` and ``<split>.json``, and per split
``<split>.embeddings.npy`` (a raw float32 memmap, not an .npy file), ``<split>.embedding-dimensions.json``
(``[rows, width]``), ``<split>.target-labels.pkl`` (each row's labels) and, for event tasks,
``<split>.filename-timestamps.json`` (each row's ``[file path, timestamp ms]``). Rows are in the
kit's shuffled file order, so training here reads them in exactly the kit's batch order; a scene
row's clip is known from that order alone (checked against the row's labels).

The label pickle is read with :mod:`pickle`: score only embedding folders you trust.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from .provenance import files_stamp
from .splits import SplitData
from .tasks import Task, TaskError


def is_embedding_task(path: Path) -> bool:
    return (path / "task_metadata.json").is_file() and any(path.glob("*.embeddings.npy"))


def find_embedding_tasks(root: str | Path) -> list[Path]:
    """Task folders with embeddings under ``root`` (one module's folder), or ``root`` itself."""
    root = Path(root)
    if not root.is_dir():
        raise TaskError(f"embedding folder {root} does not exist")
    if is_embedding_task(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_embedding_task(p))
    if not found:
        raise TaskError(
            f"no heareval embeddings in {root}: expected <task>/task_metadata.json and <task>/<split>.embeddings.npy "
            "as `python -m heareval.embeddings.runner MODULE` writes them (pass the folder named after the module)"
        )
    return found


def module_name(task_dir: Path) -> str:
    """The embedding module's name: the folder the runner named after it."""
    return task_dir.resolve().parent.name


def _split_files(task: Task, split: str) -> list[str]:
    names = [f"{split}.embeddings.npy", f"{split}.embedding-dimensions.json", f"{split}.target-labels.pkl"]
    if task.embedding_type == "event":
        names.append(f"{split}.filename-timestamps.json")
    missing = [name for name in names if not (task.path / name).is_file()]
    if missing:
        raise TaskError(f"embeddings of task {task.name}, split {split!r}: missing {', '.join(missing)} in {task.path}")
    return names


def stamp(task: Task) -> dict[str, str]:
    """Per split, the sizes and modification times of its embedding files (for result provenance)."""
    return {split: files_stamp(task.path, _split_files(task, split)) for split in task.splits}


def _scene_files(task: Task, split: str, labels: list, references: dict, where: str) -> list[str]:
    """The clip of each row: the kit writes a scene split's rows in its shuffled file order
    (:meth:`.tasks.Task.kit_file_order`); checked against each row's labels, since the test predictions
    a result keeps (:mod:`.predictions`) name their clips."""
    files = task.kit_file_order()[split]
    if len(files) != len(labels) or any(
        sorted(map(str, row)) != sorted(map(str, references[name])) for row, name in zip(labels, files)
    ):
        raise TaskError(
            f"{where}: its rows are not the split file's {len(files)} clips in the kit's shuffled order "
            "(heareval's task_embeddings writes them so)"
        )
    return files


def read_split(task: Task, split: str):
    """One split's rows (memory-mapped), multi-hot targets, row groups per file and timestamps."""
    _split_files(task, split)
    where = f"embeddings of task {task.name}, split {split!r}"
    rows_count, width = json.loads((task.path / f"{split}.embedding-dimensions.json").read_text())
    path = task.path / f"{split}.embeddings.npy"
    if path.stat().st_size != rows_count * width * 4:
        raise TaskError(
            f"{where}: {path.name} holds {path.stat().st_size} bytes, expected {rows_count} x {width} float32"
        )
    rows = np.memmap(path, dtype=np.float32, mode="r", shape=(rows_count, width))
    with open(task.path / f"{split}.target-labels.pkl", "rb") as handle:
        labels = pickle.load(handle)
    if len(labels) != rows_count:
        raise TaskError(f"{where}: {len(labels)} target labels for {rows_count} rows")
    index = task.label_to_index
    y = np.zeros((rows_count, len(index)), dtype=np.float32)
    for row, row_labels in enumerate(labels):
        try:
            y[row, [index[str(label)] for label in row_labels]] = 1.0
        except KeyError as error:
            raise TaskError(f"{where}: row {row} has label {error.args[0]!r}, not in labelvocabulary.csv") from None
    references = task.split_labels(split)
    if task.embedding_type == "scene":
        files = _scene_files(task, split, labels, references, where)
        ones = np.ones(rows_count, np.int64)
        return SplitData(rows, y, files, np.arange(rows_count, dtype=np.int64), ones, None, references)
    pairs = json.loads((task.path / f"{split}.filename-timestamps.json").read_text())
    if len(pairs) != rows_count:
        raise TaskError(f"{where}: {len(pairs)} filename-timestamps for {rows_count} rows")
    names = [Path(name).name for name, _ in pairs]  # the kit keys events by the file's name (its "slug")
    timestamps = np.array([float(t) for _, t in pairs], dtype=np.float64)
    boundaries = [0] + [i for i in range(1, len(names)) if names[i] != names[i - 1]]
    files = [names[i] for i in boundaries]
    if len(set(files)) != len(files):
        raise TaskError(f"{where}: the rows of one file are not contiguous")
    starts = np.array(boundaries, dtype=np.int64)
    counts = np.diff(np.r_[starts, rows_count]).astype(np.int64)
    return SplitData(rows, y, files, starts, counts, timestamps, references)
