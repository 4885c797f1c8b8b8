"""Embedding cache: every split of a task embedded once per model config, memory-mapped, resumable.

Per (config fingerprint, task, split) the cache holds::

    rows.f32        float32 rows, appended: one per clip (scene) or per frame (event)
    timestamps.f32  the frame time of each row, ms (event tasks)
    index.jsonl     one line per clip: {"file", "start", "count"}; its length is what is done
    meta.json       width and kind, written first

Rows are appended before the clip's index line, and a resumed run truncates ``rows.f32``
to what the index accounts for, so a killed run loses at most the batch in flight. Reading
maps the rows with ``numpy.memmap``: a task of 100k clips never needs to fit in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import AudioError, audio_info, load_audio
from ..corpus import consecutive_batches
from ..model import FusionModel
from .tasks import Task


class EmbeddingError(RuntimeError):
    """Embedding a task failed (missing audio, model output of the wrong size, ...)."""


@dataclass
class SplitEmbeddings:
    """A split's embeddings as rows, with the clip each row belongs to."""

    rows: np.ndarray  # (n_rows, D), memory-mapped
    files: list[str]  # clip of each row's group, in order
    starts: np.ndarray  # first row of each clip
    counts: np.ndarray  # rows of each clip
    timestamps: np.ndarray | None  # (n_rows,) ms, event tasks

    @property
    def row_files(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.files)), self.counts)


def split_dir(cache_root: Path, fingerprint: str, task: Task, split: str) -> Path:
    return Path(cache_root) / fingerprint / task.name / split


def embed_split(
    model: FusionModel,
    task: Task,
    split: str,
    cache_root: str | Path,
    *,
    batch_seconds: float = 60.0,
    progress=None,
) -> SplitEmbeddings:
    """Embed a split into the cache (resuming if partly done) and return it memory-mapped."""
    kind = task.embedding_type
    width = model.timestamp_embedding_size if kind == "event" else model.scene_embedding_size
    directory = split_dir(Path(cache_root), model.config.fingerprint(), task, split)
    directory.mkdir(parents=True, exist_ok=True)
    meta_path = directory / "meta.json"
    meta = {"kind": kind, "width": width, "config": model.config.name}
    if meta_path.is_file() and json.loads(meta_path.read_text()) != meta:
        raise EmbeddingError(f"cache {directory} holds other embeddings ({meta_path.read_text()}); delete it")
    meta_path.write_text(json.dumps(meta))

    files = sorted(task.split_labels(split))
    done = _read_index(directory)
    if [entry["file"] for entry in done] != files[: len(done)]:
        raise EmbeddingError(f"cache {directory} does not match split {split!r} of {task.name}; delete it")
    rows_done = sum(entry["count"] for entry in done)
    _truncate(directory / "rows.f32", rows_done * width * 4)
    _truncate(directory / "timestamps.f32", rows_done * 4)

    audio_dir = task.audio_dir(split, model.sample_rate)
    todo = files[len(done) :]
    with open(directory / "rows.f32", "ab") as rows_file, open(directory / "timestamps.f32", "ab") as times_file, open(
        directory / "index.jsonl", "a"
    ) as index_file:
        for batch in _batches(audio_dir, todo, batch_seconds):
            audio = torch.from_numpy(np.stack([_load(audio_dir / name, model.sample_rate) for name in batch]))
            result = model.embed(audio, timestamp=kind == "event", scene=kind == "scene")
            embeddings = result.timestamp_embeddings if kind == "event" else result.scene_embeddings[:, None]
            if embeddings.shape[-1] != width:
                raise EmbeddingError(f"model returned embeddings of size {embeddings.shape[-1]}, expected {width}")
            embeddings = embeddings.cpu().numpy().astype(np.float32)
            times = (
                result.timestamps.cpu().numpy().astype(np.float32)
                if kind == "event"
                else np.zeros(embeddings.shape[:2], np.float32)
            )
            for clip, name in enumerate(batch):
                rows_file.write(embeddings[clip].tobytes())
                times_file.write(times[clip].tobytes())
                index_file.write(json.dumps({"file": name, "start": rows_done, "count": embeddings.shape[1]}) + "\n")
                rows_done += embeddings.shape[1]
            for handle in (rows_file, times_file, index_file):  # rows reach disk before their index lines
                handle.flush()
                os.fsync(handle.fileno())
            if progress is not None:
                progress(len(batch))
    return read_split(directory)


def read_split(directory: Path) -> SplitEmbeddings:
    meta = json.loads((directory / "meta.json").read_text())
    index = _read_index(directory)
    total = sum(entry["count"] for entry in index)
    width = meta["width"]
    rows = (
        np.memmap(directory / "rows.f32", dtype=np.float32, mode="r", shape=(total, width))
        if total
        else np.zeros((0, width), np.float32)
    )
    timestamps = None
    if meta["kind"] == "event" and total:
        timestamps = np.memmap(directory / "timestamps.f32", dtype=np.float32, mode="r", shape=(total,))
    return SplitEmbeddings(
        rows=rows,
        files=[entry["file"] for entry in index],
        starts=np.array([entry["start"] for entry in index], dtype=np.int64),
        counts=np.array([entry["count"] for entry in index], dtype=np.int64),
        timestamps=timestamps,
    )


def _read_index(directory: Path) -> list[dict]:
    path = directory / "index.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a killed run: everything after it is redone
    if len(entries) != len(lines):
        path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return entries


def _truncate(path: Path, size: int) -> None:
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def _load(path: Path, sample_rate: int) -> np.ndarray:
    if not path.is_file():
        raise EmbeddingError(f"missing audio file {path}")
    try:
        return load_audio(path, sample_rate)
    except AudioError as error:
        raise EmbeddingError(f"{path}: {error}") from None


def _batches(audio_dir: Path, names: list[str], batch_seconds: float):
    """Consecutive clips of equal length (no padding), up to ``batch_seconds`` of audio."""

    def with_info():
        for name in names:
            try:
                yield name, audio_info(audio_dir / name)
            except (AudioError, OSError) as error:
                raise EmbeddingError(f"{audio_dir / name}: {error}") from None

    for batch in consecutive_batches(with_info(), batch_seconds):
        yield [name for name, _ in batch]
