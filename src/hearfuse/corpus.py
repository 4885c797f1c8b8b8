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
import errno
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
from .errors import UsageError
from .files import write_atomic
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


@dataclass(frozen=True)
class Unusable:
    """A path a scan found that is not embedded, with why: ``failed`` (it cannot be read) or ``alias``
    (another path names the same file, which is embedded under that path)."""

    relative: PurePosixPath
    source: str
    status: str  # "failed" | "alias"
    reason: str


@dataclass
class Discovery:
    files: list[InputFile]
    unusable: list[Unusable]


def discover(inputs: Sequence[str | Path]) -> Discovery:
    """Files named, audio files found recursively in folders, and glob matches, in a stable order.

    A folder's files are placed relative to the folder; a glob's relative to its fixed prefix; a named
    file by its name. Nothing a folder scan finds is dropped without a word: broken symbolic links,
    link loops, unreadable files and folders, and linked folders (not followed) are listed as
    ``unusable`` with the reason. Aliases: paths that resolve to the same file are embedded once,
    under the path that is not a symbolic link (else the first in order); the others are listed as
    aliases of it. A named input that does not exist, and two inputs that would be written to the
    same output, are usage errors.
    """
    candidates: list[tuple[Path, PurePosixPath]] = []
    unusable: list[Unusable] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            found, problems = _scan_folder(path)
            candidates += found
            unusable += problems
        elif path.is_file():
            candidates.append((path, PurePosixPath(path.name)))
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True)) if Path(m).is_file()]
            if not matches:
                raise UsageError(f"input pattern {text!r} matches no file")
            candidates += [(m, PurePosixPath(m.relative_to(root).as_posix())) for m in matches]
        else:
            raise UsageError(f"input {text!r} does not exist")
    by_target: dict[Path, list[tuple[Path, PurePosixPath]]] = {}
    for file, relative in candidates:
        by_target.setdefault(file.resolve(), []).append((file, relative))
    files = []
    for target, paths in by_target.items():
        unique = list(dict.fromkeys(paths))
        chosen = min(unique, key=lambda pair: (pair[0].is_symlink(), str(pair[1])))
        files.append(InputFile(target, chosen[1]))
        unusable += [
            Unusable(relative, str(file), "alias", f"alias of {chosen[1]} (the same file), embedded there")
            for file, relative in unique
            if (file, relative) != chosen and relative != chosen[1]
        ]
    by_output: dict[PurePosixPath, InputFile] = {}
    for item in files:
        other = by_output.setdefault(item.relative, item)
        if other is not item:
            raise UsageError(
                f"{other.path} and {item.path} would both be written as {item.relative}; "
                "pass their common parent folder"
            )
    return Discovery(
        sorted(files, key=lambda item: str(item.relative)), sorted(unusable, key=lambda u: str(u.relative))
    )


def _scan_folder(folder: Path) -> tuple[list[tuple[Path, PurePosixPath]], list[Unusable]]:
    """Audio files below ``folder`` and, with their reasons, the entries that cannot be used."""
    found, problems = [], []

    def unusable(path: Path, reason: str) -> None:
        problems.append(Unusable(PurePosixPath(path.relative_to(folder).as_posix()), str(path), "failed", reason))

    def unreadable_folder(error: OSError) -> None:
        unusable(Path(error.filename), f"folder cannot be read: {error.strerror}")

    for directory, folders, names in os.walk(folder, onerror=unreadable_folder):
        folders.sort()
        for name in folders:
            if (Path(directory) / name).is_symlink():
                unusable(Path(directory) / name, "symbolic link to a folder: not followed (name it as an input)")
        for name in sorted(names):
            path = Path(directory) / name
            if path.suffix.lower() not in AUDIO_EXTENSIONS or name.startswith("."):
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as error:
                if path.is_symlink() and error.errno == errno.ELOOP:
                    unusable(path, "symbolic link loop")
                elif path.is_symlink() and error.errno == errno.ENOENT:
                    unusable(path, f"broken symbolic link to {os.readlink(path)}")
                else:
                    unusable(path, f"cannot be read: {error.strerror}")
                continue
            found.append((path, PurePosixPath(path.relative_to(folder).as_posix())))
    return found, problems


def _glob_root(pattern: str) -> Path:
    """The fixed folder a glob starts from (``data/**/*.wav`` -> ``data``)."""
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), Path(pattern).expanduser().parts))
    return Path(*fixed) if fixed else Path(".")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (1-based)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise UsageError(f"shard {text!r}: need 1 <= I <= N")
    return index, count


def in_shard(relative: PurePosixPath, shard: tuple[int, int]) -> bool:
    """Stable assignment by a hash of the relative path: shards never overlap and cover everything."""
    index, count = shard
    digest = int(hashlib.sha1(str(relative).encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return digest % count == index - 1


@dataclass
class Failure:
    relative: str
    reason: str


@dataclass
class RunSummary:
    embedded: int = 0
    skipped: int = 0
    aliases: int = 0
    failures: list[Failure] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"embedded {self.embedded} files ({self.audio_seconds / 3600:.3f} h of audio, {speed:.2f}x real time) "
            f"in {self.wall_seconds:.1f} s; skipped {self.skipped} already done"
            + (f", {self.aliases} aliases of other inputs" if self.aliases else "")
            + f"; failed {len(self.failures)}"
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


def _is_done(record: dict | None, stat: os.stat_result, fingerprint: str, kinds: Sequence[str], out_dir: Path) -> bool:
    """Whether a manifest record shows this source (same size and mtime) already embedded, by the same
    config, for every kind asked for, with its output still there."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("config_fingerprint") == fingerprint
        and set(kinds) <= set(record.get("kinds", []))
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (out_dir / record.get("output", "")).is_file()
    )


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def consecutive_batches(
    items: Iterable[tuple[T, AudioInfo]], batch_seconds: float
) -> Iterator[list[tuple[T, AudioInfo]]]:
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


def plan_batches(
    items: list[tuple[InputFile, AudioInfo]], batch_seconds: float
) -> list[list[tuple[InputFile, AudioInfo]]]:
    """:func:`consecutive_batches` after sorting by length, so equal lengths anywhere in the input share batches."""
    ordered = sorted(items, key=lambda pair: (pair[1].frames, pair[1].sample_rate, str(pair[0].relative)))
    return list(consecutive_batches(ordered, batch_seconds))


@dataclass
class _Run:
    """One ``embed_files`` run: where outputs go, what is embedded, and its manifest and summary."""

    model: FusionModel
    fingerprint: str  # the model config's, computed once per run
    out_dir: Path
    kinds: tuple[str, ...]
    manifest: Manifest
    summary: RunSummary = field(default_factory=RunSummary)
    stats: dict[InputFile, os.stat_result] = field(default_factory=dict)

    def record(self, item: InputFile, status: str, info: AudioInfo | None = None, error: str = "") -> None:
        stat = self.stats.get(item)
        self.manifest.append(
            {
                "path": str(item.relative),
                "source": str(item.path),
                "size": stat.st_size if stat else None,
                "mtime_ns": stat.st_mtime_ns if stat else None,
                "duration": info.duration if info else None,
                "sample_rate": info.sample_rate if info else None,
                "channels": info.channels if info else None,
                "model": self.model.config.name,
                "config_fingerprint": self.fingerprint,
                "kinds": sorted(self.kinds),
                "output": str(item.output) if status == "ok" else None,
                "status": status,
                "error": error,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        if status == "failed":
            self.summary.failures.append(Failure(str(item.relative), error))
        elif status == "alias":
            self.summary.aliases += 1

    def embed_batch(self, batch: list[tuple[InputFile, AudioInfo]]) -> None:
        """Embed clips of equal length together; one that fails is recorded, the others go on."""
        loaded = []
        for item, info in batch:
            try:
                loaded.append((item, info, load_audio(item.path, self.model.sample_rate)))
            except (AudioError, OSError) as error:
                self.record(item, "failed", info, str(error))
        if not loaded:
            return
        try:
            results = self.model.embed(
                torch.from_numpy(np.stack([audio for _, _, audio in loaded])),
                timestamp="timestamp" in self.kinds,
                scene="scene" in self.kinds,
            )
        except (RuntimeError, ValueError) as error:
            if len(loaded) > 1:  # e.g. out of memory: retry one by one
                for item, info, _ in loaded:
                    self.embed_batch([(item, info)])
                return
            item, info, _ = loaded[0]
            self.record(item, "failed", info, f"embedding failed: {error}")
            return
        for index, (item, info, _) in enumerate(loaded):
            arrays = {}
            if results.timestamp_embeddings is not None:
                arrays["timestamp_embeddings"] = results.timestamp_embeddings[index].cpu().numpy()
                arrays["timestamps"] = results.timestamps[index].cpu().numpy()
            if results.scene_embeddings is not None:
                arrays["scene_embedding"] = results.scene_embeddings[index].cpu().numpy()
            _write_arrays(self.out_dir / item.output, arrays)
            self.record(item, "ok", info)
            self.summary.embedded += 1
            self.summary.audio_seconds += info.duration


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
        raise UsageError(f"kinds must be some of {KINDS}, got {list(kinds)}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = model.config.fingerprint()
    (out_dir / f"config-{fingerprint}.json").write_text(json.dumps(model.config.to_dict(), indent=2))
    discovery = discover(inputs)
    previous = Manifest.load(out_dir)
    run = _Run(model, fingerprint, out_dir, tuple(kinds), Manifest(out_dir, shard))
    for entry in discovery.unusable:  # reported, never silently dropped
        if shard is None or in_shard(entry.relative, shard):
            run.record(InputFile(Path(entry.source), entry.relative), entry.status, error=entry.reason)
    todo: list[tuple[InputFile, AudioInfo]] = []
    for item in discovery.files:
        if shard is not None and not in_shard(item.relative, shard):
            continue
        stat = run.stats[item] = item.path.stat()
        if _is_done(previous.get(str(item.relative)), stat, fingerprint, kinds, out_dir):
            run.summary.skipped += 1
            continue
        try:
            todo.append((item, audio_info(item.path)))
        except (AudioError, OSError) as error:
            run.record(item, "failed", error=str(error))

    bar = tqdm(total=len(todo), unit="file", desc="embedding", disable=not progress, dynamic_ncols=True)
    try:
        for batch in plan_batches(todo, batch_seconds):
            run.embed_batch(batch)
            bar.update(len(batch))
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                audio_h_per_s=f"{run.summary.audio_seconds / 3600 / elapsed:.4f}",
                realtime=f"{run.summary.audio_seconds / elapsed:.1f}x",
            )
    finally:
        bar.close()
        run.manifest.close()
    run.summary.wall_seconds = time.perf_counter() - started
    return run.summary
