"""Embedding cache: every split of a task embedded once per representation, memory-mapped, resumable.

Per (embedding key, task, split) the cache holds::

    rows.f32        float32 rows, appended: one per clip (scene) or per frame (event, scene frames)
    timestamps.f32  the frame time of each row, ms (event tasks, scene frames)
    index.jsonl     one line per clip: {"file", "start", "count"}; its length is what is done
    meta.json       width, kind and what the rows were computed from (the split's audio stamp)

A scene task's *scene frames* (the fused frames a model's scene embeddings pool, on its scene frame grid,
before pooling; what ``hearfuse plan`` keeps of every member state) are cached like an event task's
frames, under the embedding key with ``rows: "scene frames"`` added (:func:`rows_key`).

The embedding key (:func:`embedding_key`) covers the config's numeric content (not its name), the
dtype and the embedding code; the audio stamp covers the split's files. A split whose audio changed is embedded
again, and the log says why. Clips are stored in the kit's memmap order (:meth:`Task.kit_file_order`),
which is the order training batches read them in.

Crash safety: each batch's rows reach the disk (flushed and fsynced) before its index lines are
written, so the index never names rows that are not there; a resumed run keeps only the index
entries whose rows are complete on disk and truncates the data files to them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..audio import AudioError, audio_info, load_audio
from ..batching import consecutive_batches
from ..config import FusionConfig
from ..dtypes import dtype_name
from ..files import write_text_atomic
from ..fusion.aggregation import LayerAggregation
from ..identity import EmbeddingIdentity
from ..model import FusionModel
from .provenance import digest, files_stamp
from .tasks import Task

log = logging.getLogger(__name__)


class EmbeddingError(RuntimeError):
    """Embedding a task failed (missing audio, model output of the wrong size, ...)."""


@dataclass
class SplitEmbeddings:
    """A split's embeddings as rows, with the clip each run of rows belongs to."""

    rows: np.ndarray  # (n_rows, D), memory-mapped
    files: list[str]  # clip of each row group, in order
    starts: np.ndarray  # first row of each clip
    counts: np.ndarray  # rows of each clip
    timestamps: np.ndarray | None  # (n_rows,) ms, event tasks


def embedding_key(config: FusionConfig, dtype: torch.dtype | None = None) -> dict:
    """What a cached embedding of ``config`` under autocast ``dtype`` depends on besides its audio: the
    identity rule every reuse of embeddings follows (:mod:`hearfuse.identity`)."""
    return EmbeddingIdentity(config.fingerprint(), dtype_name(dtype)).cache_key()


def rows_key(config: FusionConfig, dtype: torch.dtype | None = None, *, scene_frames: bool = False) -> dict:
    """The key a split's rows are cached under: the embedding key, marked when the rows are scene frames."""
    key = embedding_key(config, dtype)
    return {**key, "rows": "scene frames"} if scene_frames else key


def split_dir(cache_root: Path, key: dict, task: Task, split: str) -> Path:
    return Path(cache_root) / digest(key) / task.name / split


def cached_clips(directory: Path, task: Task, split: str, files: list[str], *, scene_frames: bool = False) -> int:
    """How many of ``files`` (in order) a cached split holds, computed from the audio there now (0 when it
    was computed from other files): what a fill would not embed again."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return 0
    stored = json.loads(meta_path.read_text())
    expected = _meta(_rows_kind(task, scene_frames), stored.get("width"), files, task.audio_dir(split))
    if stored != expected:
        return 0
    done = 0
    for expected_file, entry in zip(files, _read_index(directory)):
        if entry.get("file") != expected_file:
            break
        done += 1
    return done


def embed_split(model: FusionModel, task: Task, split: str, cache_root: str | Path, **options) -> SplitEmbeddings:
    """Embed a split into the cache (resuming if partly done) and return it memory-mapped; ``options``
    (``files``, ``batch_seconds``, ``progress``) as for :func:`embed_split_variants`."""
    return embed_split_variants(model, {}, task, split, cache_root, **options)[0]


def embed_split_variants(
    model: FusionModel,
    variants: Mapping[str, Sequence[LayerAggregation]],
    task: Task,
    split: str,
    cache_root: str | Path,
    *,
    files: list[str] | None = None,
    batch_seconds: float = 60.0,
    progress=None,
    scene_frames: bool = False,
) -> list[SplitEmbeddings]:
    """:func:`embed_split` for each variant of ``model`` (:meth:`FusionModel.embed_variants`), from one
    pass per clip: each variant is cached under its own config's key, exactly where a model built
    from that config would cache it, and only variants not yet complete are computed.

    ``files``: the split's clips in storage order (default: the kit's memmap order);
    ``progress``: called with the number of clips after each batch; ``scene_frames`` (scene tasks): cache
    the frames the scene embeddings would pool instead (:func:`rows_key`).
    """
    kind = _rows_kind(task, scene_frames)
    if scene_frames:
        model = model.on_scene_frames()
    frames = kind != "scene"
    width = model.timestamp_embedding_size if frames else model.scene_embedding_size
    files = files if files is not None else task.kit_file_order()[split]
    audio_dir = task.audio_dir(split, model.sample_rate)
    meta = _meta(kind, width, files, audio_dir)
    configs = variant_configs(model.config, variants)
    caches = [
        _SplitCache(
            split_dir(Path(cache_root), rows_key(config, model.autocast_dtype, scene_frames=scene_frames), task, split),
            meta,
            files,
        )
        for config in configs
    ]
    try:
        position = min(cache.done for cache in caches)
        mix_up_to = model.mixed_batch_limit / model.sample_rate
        for batch in _batches(audio_dir, files[position:], batch_seconds, mix_up_to):
            active = [k for k, cache in enumerate(caches) if cache.done < position + len(batch)]
            clips = [torch.from_numpy(_load(audio_dir / name, model.sample_rate)) for name in batch]
            chosen = {name: [each[k] for k in active] for name, each in variants.items()}
            results = model.embed_each_variants(clips, chosen, timestamp=frames, scene=not frames)
            for k, per_clip in zip(active, results):
                skip = caches[k].done - position  # clips of this batch the variant's cache already holds
                rows, times = [], []
                for result in per_clip[skip:]:
                    embeddings = result.timestamp_embeddings if frames else result.scene_embeddings[None]
                    if embeddings.shape[-1] != width:
                        raise EmbeddingError(
                            f"model returned embeddings of size {embeddings.shape[-1]}, expected {width}"
                        )
                    rows.append(embeddings.float().cpu().numpy())
                    times.append(result.timestamps.cpu().numpy() if frames else np.zeros(1))
                caches[k].append(batch[skip:], rows, times)
            position += len(batch)
            if progress is not None:
                progress(len(batch))
    finally:
        for cache in caches:
            cache.close()
    return [read_split(cache.directory) for cache in caches]


def _rows_kind(task: Task, scene_frames: bool) -> str:
    if scene_frames and task.embedding_type != "scene":
        raise ValueError(f"task {task.name}: scene frames are cached for scene tasks only")
    return "scene frames" if scene_frames else task.embedding_type


def _meta(kind: str, width: int | None, files: list[str], audio_dir: Path) -> dict:
    """What a cached split's rows were computed from (its ``meta.json``)."""
    return {"kind": kind, "width": width, "files": digest(files), "audio": _audio_stamp(audio_dir, files)}


def variant_configs(config: FusionConfig, variants: Mapping[str, Sequence[LayerAggregation]]) -> list[FusionConfig]:
    """The config of each variant of :meth:`FusionModel.embed_variants` (one, ``config``, without variants)."""
    count = max((len(each) for each in variants.values()), default=1)
    return [config.with_aggregations({name: each[k] for name, each in variants.items()}) for k in range(count)]


class _SplitCache:
    """One cached split being written: checked against what it was computed from, resumed, appended."""

    def __init__(self, directory: Path, meta: dict, files: list[str]):
        self.directory = directory
        meta_path = directory / "meta.json"
        if meta_path.is_file():
            stored = json.loads(meta_path.read_text())
            if stored != meta:
                changed = [key for key in meta if stored.get(key) != meta[key]]
                log.info("re-embedding %s: %s changed since it was cached", directory, ", ".join(changed))
                shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text_atomic(meta_path, json.dumps(meta))
        done = _resume(directory, files, meta["width"])
        self.done = len(done)
        self.rows_done = sum(entry["count"] for entry in done)
        self.rows_file = open(directory / "rows.f32", "ab")
        self.times_file = open(directory / "timestamps.f32", "ab")
        self.index_file = open(directory / "index.jsonl", "a")

    def append(self, names: list[str], embeddings: list[np.ndarray], times: list[np.ndarray]) -> None:
        """Each clip's rows ``(rows, D)`` and row times; the data is on disk before any index line names it."""
        lines = []
        for name, rows, row_times in zip(names, embeddings, times, strict=True):
            self.rows_file.write(np.ascontiguousarray(rows, np.float32).tobytes())
            self.times_file.write(np.ascontiguousarray(row_times, np.float32).tobytes())
            lines.append(json.dumps({"file": name, "start": self.rows_done, "count": len(rows)}) + "\n")
            self.rows_done += len(rows)
        for handle in (self.rows_file, self.times_file):
            _sync(handle)
        self.index_file.write("".join(lines))
        _sync(self.index_file)
        self.done += len(names)

    def close(self) -> None:
        for handle in (self.rows_file, self.times_file, self.index_file):
            handle.close()


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
    if meta["kind"] != "scene" and total:
        timestamps = np.memmap(directory / "timestamps.f32", dtype=np.float32, mode="r", shape=(total,))
    return SplitEmbeddings(
        rows=rows,
        files=[entry["file"] for entry in index],
        starts=np.array([entry["start"] for entry in index], dtype=np.int64),
        counts=np.array([entry["count"] for entry in index], dtype=np.int64),
        timestamps=timestamps,
    )


def _audio_stamp(audio_dir: Path, files: list[str]) -> str:
    try:
        return files_stamp(audio_dir, files)
    except OSError as error:
        raise EmbeddingError(f"audio file {error.filename}: {error.strerror}") from None


def _resume(directory: Path, files: list[str], width: int) -> list[dict]:
    """The index entries whose rows are complete on disk (in order, for the expected files); the
    index and the data files are trimmed to them."""
    entries = _read_index(directory)
    rows_size = _size(directory / "rows.f32")
    times_size = _size(directory / "timestamps.f32")
    kept, end = [], 0
    for expected, entry in zip(files, entries):
        complete = (end + entry.get("count", 0)) * width * 4 <= rows_size and (end + entry["count"]) * 4 <= times_size
        if entry.get("file") != expected or entry.get("start") != end or not complete:
            break
        kept.append(entry)
        end += entry["count"]
    index_text = "".join(json.dumps(e) + "\n" for e in kept)
    if len(kept) != len(entries):
        log.info(
            "cache %s: keeping %d of %d indexed clips (the rest is not complete on disk)",
            directory,
            len(kept),
            len(entries),
        )
    if _read_text(directory / "index.jsonl") != index_text:  # also drops a line cut short
        write_text_atomic(directory / "index.jsonl", index_text)
    _truncate(directory / "rows.f32", end * width * 4)
    _truncate(directory / "timestamps.f32", end * 4)
    return kept


def _read_index(directory: Path) -> list[dict]:
    path = directory / "index.jsonl"
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a killed run: everything after it is redone
    return entries


def _read_text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _sync(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


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


def _batches(audio_dir: Path, names: list[str], batch_seconds: float, mix_up_to_seconds: float):
    """Consecutive clips in storage order (:func:`~hearfuse.batching.consecutive_batches`)."""

    def with_info():
        for name in names:
            try:
                yield name, audio_info(audio_dir / name)
            except (AudioError, OSError) as error:
                raise EmbeddingError(f"{audio_dir / name}: {error}") from None

    for batch in consecutive_batches(with_info(), batch_seconds, mix_up_to_seconds):
        yield [name for name, _ in batch]
