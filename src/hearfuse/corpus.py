"""Embedding collections of audio files: resumable, shardable, robust to bad files.

Layout of an output directory::

    OUT/
      manifest.jsonl                 one JSON record per processed input (append-only)
      manifest-shard-2-of-4.jsonl    the same, per shard, when --shard is used
      config-<fingerprint>.json      the fusion config the embeddings were made with
      <input tree>/<name>.<ext>.npz  per input: timestamp_embeddings (T, D), timestamps (T,) ms,
                                     scene_embedding (D,)

Each output is written under a temporary name and renamed, then its manifest record is
appended and flushed, so a run killed at any point (even SIGKILL) leaves only complete
outputs; rerunning the same command skips every input whose record says it is done with
the same config and the same source size and mtime.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from .audio import AUDIO_EXTENSIONS, AudioError, AudioInfo, audio_info, load_audio
from .model import FusionModel

KINDS = ("timestamp", "scene")
T = TypeVar("T")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path  # absolute
    relative: PurePosixPath  # mirrors the input tree under the output directory

    @property
    def output(self) -> PurePosixPath:
        """``a/b.wav`` -> ``a/b.wav.npz`` (keeps ``b.wav`` and ``b.flac`` apart)."""
        return self.relative.with_name(self.relative.name + ".npz")


def discover(inputs: Sequence[str | Path]) -> list[InputFile]:
    """Files named, audio files found recursively in folders, and glob matches, in a stable order.

    A folder's files are placed relative to the folder; a glob's relative to its fixed prefix;
    a named file by its name. Two inputs that would map to the same output are an error.
    """
    found: dict[Path, InputFile] = {}
    for raw in inputs:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            candidates = [(p, p.relative_to(path)) for p in sorted(path.rglob("*")) if _is_audio_file(p)]
        elif path.is_file():
            candidates = [(path, Path(path.name))]
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            candidates = [
                (Path(m), Path(m).relative_to(root)) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()
            ]
            if not candidates:
                raise FileNotFoundError(f"input pattern {text!r} matches no file")
        else:
            raise FileNotFoundError(f"input {text!r} does not exist")
        for file, relative in candidates:
            found.setdefault(file.resolve(), InputFile(file.resolve(), PurePosixPath(relative.as_posix())))
    by_output: dict[PurePosixPath, InputFile] = {}
    for item in found.values():
        other = by_output.setdefault(item.relative, item)
        if other is not item:
            raise ValueError(
                f"{other.path} and {item.path} would both be written as {item.relative}; pass their common parent folder"
            )
    return sorted(found.values(), key=lambda item: str(item.relative))


def _is_audio_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def _glob_root(pattern: str) -> Path:
    """The fixed folder a glob starts from (``data/**/*.wav`` -> ``data``)."""
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), Path(pattern).expanduser().parts))
    return Path(*fixed) if fixed else Path(".")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (1-based)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"shard {text!r}: need 1 <= I <= N")
    return index, count


def in_shard(item: InputFile, shard: tuple[int, int]) -> bool:
    """Stable assignment by a hash of the relative path: shards never overlap and cover everything."""
    index, count = shard
    digest = int(hashlib.sha1(str(item.relative).encode()).hexdigest(), 16)
    return digest % count == index - 1


@dataclass
class Failure:
    relative: str
    reason: str


@dataclass
class RunSummary:
    embedded: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"embedded {self.embedded} files ({self.audio_seconds / 3600:.3f} h of audio, {speed:.2f}x real time) "
            f"in {self.wall_seconds:.1f} s; skipped {self.skipped} already done; failed {len(self.failures)}"
        )


class Manifest:
    """Append-only JSON-lines log of processed inputs; the latest record of each input wins."""

    def __init__(self, out_dir: Path, shard: tuple[int, int] | None):
        name = "manifest.jsonl" if shard is None else f"manifest-shard-{shard[0]}-of-{shard[1]}.jsonl"
        self.path = out_dir / name
        self._handle = None

    @staticmethod
    def load(out_dir: Path) -> dict[str, dict]:
        """Latest record per relative input path across every manifest in ``out_dir``."""
        records: dict[str, dict] = {}
        for path in sorted(out_dir.glob("manifest*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    records[record["path"]] = record
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut short by a killed run
        return records

    def append(self, record: dict) -> None:
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _is_done(record: dict | None, item: InputFile, stat: os.stat_result, fingerprint: str, kinds, out_dir) -> bool:
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("config_fingerprint") == fingerprint
        and set(kinds) <= set(record.get("kinds", []))
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (out_dir / record.get("output", "")).is_file()
    )


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(partial, path)


def consecutive_batches(items: Iterable[tuple[T, AudioInfo]], batch_seconds: float) -> Iterator[list[tuple[T, AudioInfo]]]:
    """Group consecutive clips of identical length and rate, up to ``batch_seconds`` of audio a batch.

    Group-norm front ends (wav2vec2 Base) normalise over the whole input, so padding a clip
    would change its embedding; equal-length clips, common in benchmarks, batch exactly.
    Lazy, so ``items`` may read each clip's header only when its batch is formed.
    """
    batch: list[tuple[T, AudioInfo]] = []
    for pair in items:
        info = pair[1]
        if batch and (
            (batch[0][1].frames, batch[0][1].sample_rate) != (info.frames, info.sample_rate)
            or (len(batch) + 1) * info.duration > batch_seconds
        ):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch


def plan_batches(items: list[tuple[InputFile, AudioInfo]], batch_seconds: float) -> list[list[tuple[InputFile, AudioInfo]]]:
    """:func:`consecutive_batches` after sorting by length, so equal lengths anywhere in the input share batches."""
    ordered = sorted(items, key=lambda pair: (pair[1].frames, pair[1].sample_rate, str(pair[0].relative)))
    return list(consecutive_batches(ordered, batch_seconds))


def embed_files(
    model: FusionModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = KINDS,
    batch_seconds: float = 60.0,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Embed every input file into ``out_dir`` (see the module docstring for the layout)."""
    from tqdm import tqdm

    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {KINDS}, got {list(kinds)}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    fingerprint = config.fingerprint()
    (out_dir / f"config-{fingerprint}.json").write_text(json.dumps(config.to_dict(), indent=2))
    files = [item for item in discover(inputs) if shard is None or in_shard(item, shard)]
    previous = Manifest.load(out_dir)
    manifest = Manifest(out_dir, shard)
    summary = RunSummary()

    def record(item: InputFile, stat: os.stat_result, status: str, info: AudioInfo | None = None, error: str = ""):
        manifest.append(
            {
                "path": str(item.relative),
                "source": str(item.path),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "duration": info.duration if info else None,
                "sample_rate": info.sample_rate if info else None,
                "channels": info.channels if info else None,
                "model": config.name,
                "config_fingerprint": fingerprint,
                "kinds": sorted(kinds),
                "output": str(item.output) if status == "ok" else None,
                "status": status,
                "error": error,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        if status != "ok":
            summary.failures.append(Failure(str(item.relative), error))

    todo: list[tuple[InputFile, AudioInfo]] = []
    stats: dict[InputFile, os.stat_result] = {}
    for item in files:
        stat = stats[item] = item.path.stat()
        if _is_done(previous.get(str(item.relative)), item, stat, fingerprint, kinds, out_dir):
            summary.skipped += 1
            continue
        try:
            todo.append((item, audio_info(item.path)))
        except (AudioError, OSError) as error:
            record(item, stat, "failed", error=str(error))

    bar = tqdm(total=len(todo), unit="file", desc="embedding", disable=not progress, dynamic_ncols=True)
    try:
        for batch in plan_batches(todo, batch_seconds):
            _embed_batch(model, batch, out_dir, kinds, stats, record, summary)
            bar.update(len(batch))
            elapsed = time.perf_counter() - started
            bar.set_postfix(audio_h_per_s=f"{summary.audio_seconds / 3600 / elapsed:.4f}",
                            realtime=f"{summary.audio_seconds / elapsed:.1f}x")
    finally:
        bar.close()
        manifest.close()
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _embed_batch(model, batch, out_dir, kinds, stats, record, summary) -> None:
    loaded = []
    for item, info in batch:
        try:
            loaded.append((item, info, load_audio(item.path, model.sample_rate)))
        except (AudioError, OSError) as error:
            record(item, stats[item], "failed", info, str(error))
    if not loaded:
        return
    try:
        results = model.embed(
            torch.from_numpy(np.stack([audio for _, _, audio in loaded])),
            timestamp="timestamp" in kinds,
            scene="scene" in kinds,
        )
    except (RuntimeError, ValueError) as error:
        if len(loaded) > 1:  # e.g. out of memory: retry one by one
            for item, info, _ in loaded:
                _embed_batch(model, [(item, info)], out_dir, kinds, stats, record, summary)
            return
        item, info, _ = loaded[0]
        record(item, stats[item], "failed", info, f"embedding failed: {error}")
        return
    for index, (item, info, _) in enumerate(loaded):
        arrays = {}
        if results.timestamp_embeddings is not None:
            arrays["timestamp_embeddings"] = results.timestamp_embeddings[index].cpu().numpy()
            arrays["timestamps"] = results.timestamps[index].cpu().numpy()
        if results.scene_embeddings is not None:
            arrays["scene_embedding"] = results.scene_embeddings[index].cpu().numpy()
        _write_atomically(out_dir / item.output, arrays)
        record(item, stats[item], "ok", info)
        summary.embedded += 1
        summary.audio_seconds += info.duration
