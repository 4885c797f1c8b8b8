"""One split ready for the downstream model: rows, targets, and which rows belong to which file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cache import SplitEmbeddings
from .events import frame_targets
from .tasks import Task


@dataclass
class SplitData:
    x: np.ndarray  # (rows, D), may be memory-mapped
    y: np.ndarray  # (rows, labels) multi-hot targets
    files: list[str]  # event tasks: the file of each run of rows
    starts: np.ndarray  # first row of each file
    counts: np.ndarray  # rows of each file
    timestamps: np.ndarray | None  # (rows,) ms, event tasks
    references: dict[str, Any]  # the split file: labels (scene) or events (event) per file

    def per_file(self, values: np.ndarray):
        """(file, its rows of ``values``, its timestamps) for every file."""
        for name, start, count in zip(self.files, self.starts, self.counts):
            yield name, values[start : start + count], np.asarray(self.timestamps[start : start + count])


def from_cache(task: Task, split: str, embeddings: SplitEmbeddings) -> SplitData:
    """Targets for cached embeddings: scene labels per clip, or frame labels from the events."""
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
        )
    return SplitData(
        embeddings.rows, y, embeddings.files, embeddings.starts, embeddings.counts, embeddings.timestamps, references
    )
