"""Embedding collections of audio files: resumable, shardable, robust to bad files.

Layout of an output directory::

    OUT/
      manifest.jsonl                 one JSON record per processed input (append-only)
      manifest-shard-2-of-4.jsonl    the same, per shard, when --shard is used
      config-<fingerprint>.json      the fusion config the embeddings were made with
      <input tree>/<name>.<ext>.npz  per input: timestamp_embeddings (T, D), timestamps (T,) ms,
                                     scene_embedding (D,); embeddings in the run's store dtype
                                     (float32, or float16 with --store-dtype), timestamps float32

Each output is written under a temporary name and renamed, then its manifest record is
appended and flushed, so a run killed at any point (even SIGKILL) leaves only complete
outputs; rerunning the same command skips every input whose record says it is done with
the same config, the same store dtype and the same source size and mtime. :mod:`hearfuse.embeddings`
reads such a folder back.
"""

from __future__ import annotations

import collections
import datetime
import errno
import fcntl
import glob
import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISREG
from typing import Sequence

import numpy as np
import torch

from .audio import AUDIO_EXTENSIONS, AudioError, AudioInfo, audio_info, load_each
from .batching import plan_batches
from .config import FusionConfig
from .dtypes import STORE_DTYPES, dtype_name, resolve_dtype, warn_if_emulated
from .errors import UsageError
from .files import PARTIAL_SUFFIX, write_partial, write_text_atomic
from .model import FusionModel

KINDS = ("timestamp", "scene")
#: The arrays of each kind in an output ``.npz``.
KIND_ARRAYS = {"timestamp": ("timestamp_embeddings", "timestamps"), "scene": ("scene_embedding",)}
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
    alias_of: PurePosixPath | None = None  # an alias: the path it is embedded under


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
        try:
            kind = _kind(path)
        except OSError as error:  # it may exist: recorded with the reason, not a usage error
            unusable.append(Unusable(PurePosixPath(path.name), text, "failed", _cannot_examine(path, error)))
            continue
        if kind == "folder":
            found, problems = _scan_folder(path)
            candidates += found
            unusable += problems
        elif kind == "file":
            candidates.append((path, PurePosixPath(path.name)))
        elif kind == "other":
            unusable.append(Unusable(PurePosixPath(path.name), text, "failed", "not a regular file or a folder"))
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            matched = False
            for match in map(Path, sorted(glob.glob(text, recursive=True))):
                relative = PurePosixPath(match.relative_to(root).as_posix())
                try:
                    if _kind(match) != "file":
                        continue
                except OSError as error:
                    unusable.append(Unusable(relative, str(match), "failed", _cannot_examine(match, error)))
                else:
                    candidates.append((match, relative))
                matched = True
            if not matched:
                raise UsageError(f"input pattern {text!r} matches no file")
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
            Unusable(relative, str(file), "alias", f"alias of {chosen[1]} (the same file), embedded there", chosen[1])
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


def _kind(path: Path) -> str:
    """``folder``, ``file``, ``other`` or ``missing``. Raises the OSError of a path that may exist but
    cannot be examined (a parent that cannot be entered, a name too long, a symbolic link loop), where
    ``Path.is_dir`` would raise some of these and quietly say False to others."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    return "folder" if S_ISDIR(mode) else "file" if S_ISREG(mode) else "other"


def _cannot_examine(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot be examined: {error.strerror or error}"


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
    """Append-only JSON-lines log of processed inputs; the latest record of each input wins.

    Several processes may append to one manifest (runs side by side, a Ray driver): each record is
    one write under an exclusive lock, and starts on a new line even when an earlier writer was cut
    off mid-line (a full disk, a crashed NFS client), so a torn line never swallows the next record.
    """

    def __init__(self, out_dir: Path, shard: tuple[int, int] | None):
        name = "manifest.jsonl" if shard is None else f"manifest-shard-{shard[0]}-of-{shard[1]}.jsonl"
        self.path = out_dir / name
        self._handle = None

    @staticmethod
    def load(out_dir: Path) -> dict[str, dict]:
        """Latest record per relative input path across every manifest in ``out_dir``."""
        records: dict[str, dict] = {}
        for path in sorted(out_dir.glob("manifest*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                record = _parse_record(line)
                if record is not None:
                    records[record["path"]] = record
        return records

    def append(self, records: list[dict]) -> None:
        """Append ``records`` in one write and one fsync (a batch's records cost one disk flush)."""
        if not records:
            return
        if self._handle is None:
            self._handle = open(self.path, "a+b")
        text = "".join(json.dumps(record) + "\n" for record in records).encode()
        fcntl.flock(self._handle, fcntl.LOCK_EX)
        try:
            end = self._handle.seek(0, os.SEEK_END)
            if end:
                self._handle.seek(end - 1)
                if self._handle.read(1) != b"\n":
                    text = b"\n" + text
            self._handle.write(text)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        finally:
            fcntl.flock(self._handle, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _parse_record(line: str) -> dict | None:
    """A manifest line's record; a line cut short yields nothing, and a record glued onto a cut line
    (by a writer that did not start on a new line) is still found."""
    for start in (0, line.rfind('{"path": ')):
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str):
            return record
    return None


def _is_done(record: dict | None, stat: os.stat_result, run: "_Run") -> bool:
    """Whether a manifest record shows this source (same size and mtime) already embedded, by the same
    config, in the same store dtype, for every kind asked for, with its output still there."""
    return (
        record is not None
        and record.get("status") == "ok"
        and record.get("config_fingerprint") == run.fingerprint
        and record_store_dtype(record) == run.store_dtype
        and set(run.kinds) <= set(record.get("kinds", []))
        and record.get("size") == stat.st_size
        and record.get("mtime_ns") == stat.st_mtime_ns
        and (run.out_dir / record.get("output", "")).is_file()
    )


def record_store_dtype(record: dict) -> str:
    """The precision a record's embeddings were stored in (records written before ``--store-dtype``
    existed hold float32)."""
    return record.get("store_dtype", "float32")


def embed_clips(model: FusionModel, clips: list[np.ndarray], kinds: Sequence[str]) -> list[dict[str, np.ndarray] | str]:
    """The output arrays of each clip (any lengths: :meth:`FusionModel.embed_each`), or why it failed;
    a batch that fails (e.g. out of memory) is retried clip by clip."""
    try:
        results = model.embed_each(
            [torch.from_numpy(clip) for clip in clips], timestamp="timestamp" in kinds, scene="scene" in kinds
        )
    except (RuntimeError, ValueError) as error:
        if len(clips) > 1:
            return [output for clip in clips for output in embed_clips(model, [clip], kinds)]
        return [f"embedding failed: {error}"]
    outputs: list[dict[str, np.ndarray] | str] = []
    for result in results:
        arrays = {}
        if result.timestamp_embeddings is not None:
            arrays["timestamp_embeddings"] = result.timestamp_embeddings.cpu().numpy()
            arrays["timestamps"] = result.timestamps.cpu().numpy()
        if result.scene_embeddings is not None:
            arrays["scene_embedding"] = result.scene_embeddings.cpu().numpy()
        outputs.append(arrays)
    return outputs


def write_output(path: Path, arrays: dict[str, np.ndarray], tag: str = "", store_dtype: str = "float32") -> Path:
    """Write one input's arrays under a temporary name beside ``path``, the embeddings cast to
    ``store_dtype``; committing renames it."""
    stored = {name: stored_array(name, array, store_dtype) for name, array in arrays.items()}
    return write_partial(path, lambda handle: np.savez(handle, **stored), tag=tag)


def stored_array(name: str, array: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """An output array in ``dtype``: embeddings are cast (no copy when they already are), timestamps
    stay float32 (milliseconds of an hour-long file exceed float16's range)."""
    return array if name == "timestamps" else array.astype(dtype, copy=False)


def embed_decoded(
    model: FusionModel, decoded: list[np.ndarray | str], kinds: Sequence[str]
) -> list[dict[str, np.ndarray] | str]:
    """One batch, from :func:`~hearfuse.audio.load_each`'s result to each clip's arrays, or why it
    failed (decoding or embedding)."""
    results: list[dict[str, np.ndarray] | str] = list(decoded)  # decoding errors stay as they are
    good = [index for index, clip in enumerate(decoded) if not isinstance(clip, str)]
    if good:
        for index, output in zip(good, embed_clips(model, [decoded[index] for index in good], kinds)):
            results[index] = output
    return results


def write_each(
    embedded: list[dict[str, np.ndarray] | str], outputs: list[Path], tag: str = "", store_dtype: str = "float32"
) -> list[Path | str]:
    """Each clip's arrays written to a temporary file beside its output path (returned), or why it failed."""
    return [
        result if isinstance(result, str) else write_output(path, result, tag, store_dtype)
        for result, path in zip(embedded, outputs)
    ]


def embed_and_write(
    model: FusionModel,
    decoded: list[np.ndarray | str],
    kinds: Sequence[str],
    outputs: list[Path],
    tag: str = "",
    store_dtype: str = "float32",
) -> list[Path | str]:
    """:func:`embed_decoded` then :func:`write_each`: what a Ray model worker does with one batch."""
    return write_each(embed_decoded(model, decoded, kinds), outputs, tag, store_dtype)


@dataclass
class _Run:
    """One embedding run as its driver sees it: where outputs go, what is embedded, and its manifest
    and summary. Outputs are committed (renamed into place, then recorded) only here."""

    model_name: str
    fingerprint: str  # the model config's, computed once per run
    out_dir: Path
    kinds: tuple[str, ...]
    store_dtype: str
    dtype: str  # the compute precision the model runs in
    dtype_requested: str  # what the user asked for: the same, or "auto"
    manifest: Manifest
    summary: RunSummary = field(default_factory=RunSummary)
    stats: dict[InputFile, os.stat_result] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)

    def record(
        self,
        item: InputFile,
        status: str,
        info: AudioInfo | None = None,
        error: str = "",
        alias_of: PurePosixPath | None = None,
    ) -> None:
        stat = self.stats.get(item)
        self.pending.append(
            {
                "path": str(item.relative),
                "source": str(item.path),
                "size": stat.st_size if stat else None,
                "mtime_ns": stat.st_mtime_ns if stat else None,
                "duration": info.duration if info else None,
                "sample_rate": info.sample_rate if info else None,
                "channels": info.channels if info else None,
                "model": self.model_name,
                "config_fingerprint": self.fingerprint,
                "kinds": sorted(self.kinds),
                "store_dtype": self.store_dtype,
                "dtype": self.dtype,
                "dtype_requested": self.dtype_requested,
                "output": str(item.output) if status == "ok" else None,
                "status": status,
                "error": error,
                **({"alias_of": str(alias_of)} if alias_of is not None else {}),
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            }
        )
        if status == "failed":
            self.summary.failures.append(Failure(str(item.relative), error))
        elif status == "alias":
            self.summary.aliases += 1

    def flush(self) -> None:
        """Write the records made since the last flush: once per batch, so the manifest costs one disk
        flush per batch, not per file. An output renamed into place but not yet recorded when the run
        is killed is simply embedded again by the next run."""
        self.manifest.append(self.pending)
        self.pending = []

    def close(self) -> None:
        self.flush()
        self.manifest.close()

    def commit(self, item: InputFile, info: AudioInfo, partial: Path) -> None:
        os.replace(partial, self.out_dir / item.output)
        self.record(item, "ok", info)
        self.summary.embedded += 1
        self.summary.audio_seconds += info.duration

    def settle(self, batch: list[tuple[InputFile, AudioInfo]], results: list[Path | str]) -> None:
        """Commit each clip's written output, or record why it failed (:func:`embed_and_write`'s
        results), then write the batch's records."""
        for (item, info), result in zip(batch, results):
            if isinstance(result, str):
                self.record(item, "failed", info, result)
            else:
                self.commit(item, info, result)
        self.flush()


def _prepare(
    config: FusionConfig,
    inputs: Sequence[str | Path],
    out_dir: Path,
    kinds: Sequence[str],
    shard: tuple[int, int] | None,
    store_dtype: str,
    dtype: str,
    dtype_requested: str,
) -> tuple[_Run, list[tuple[InputFile, AudioInfo]]]:
    """Everything a run does before embedding: find the inputs, record the unusable ones, skip what a
    manifest shows done, read the headers of the rest."""
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise UsageError(f"kinds must be some of {KINDS}, got {list(kinds)}")
    if store_dtype not in STORE_DTYPES:
        raise UsageError(f"store dtype must be one of {', '.join(STORE_DTYPES)}, got {store_dtype!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = config.fingerprint()
    write_text_atomic(out_dir / f"config-{fingerprint}.json", json.dumps(config.to_dict(), indent=2))
    discovery = discover(inputs)
    previous = Manifest.load(out_dir)
    manifest = Manifest(out_dir, shard)
    run = _Run(config.name, fingerprint, out_dir, tuple(kinds), store_dtype, dtype, dtype_requested, manifest)
    for entry in discovery.unusable:  # reported, never silently dropped
        if shard is None or in_shard(entry.relative, shard):
            run.record(
                InputFile(Path(entry.source), entry.relative), entry.status, error=entry.reason, alias_of=entry.alias_of
            )
    todo: list[tuple[InputFile, AudioInfo]] = []
    for item in discovery.files:
        if shard is not None and not in_shard(item.relative, shard):
            continue
        stat = run.stats[item] = item.path.stat()
        if _is_done(previous.get(str(item.relative)), stat, run):
            run.summary.skipped += 1
            continue
        try:
            todo.append((item, audio_info(item.path)))
        except (AudioError, OSError) as error:
            run.record(item, "failed", error=str(error))
    run.flush()
    return run, todo


def _batches(
    todo: list[tuple[InputFile, AudioInfo]], batch_seconds: float, mixed_batch_limit: int
) -> list[list[tuple[InputFile, AudioInfo]]]:
    """Length buckets of the clips to embed; ``mixed_batch_limit``: the model's, in samples."""
    mix_up_to = mixed_batch_limit / FusionModel.sample_rate
    return plan_batches(todo, batch_seconds, name=lambda item: str(item.relative), mix_up_to_seconds=mix_up_to)


#: Batches whose files are decoding while the model embeds the current one (and batches whose
#: outputs may be waiting to be written).
_DECODE_AHEAD = 2


def _decode_threads() -> int:
    """Threads decoding files beside the model: libsndfile and soxr release the GIL, so decoding and
    resampling overlap the model instead of adding to its time (it matters on a GPU)."""
    return max(1, min(8, (os.cpu_count() or 1) // 2))


def _decoded_ahead(decoder: ThreadPoolExecutor, batches: list[list[tuple[InputFile, AudioInfo]]]):
    """Each batch with the futures of its files' decoding (:func:`~hearfuse.audio.load_each` of one
    file each), submitted ``_DECODE_AHEAD`` batches before the model needs them."""
    pending: collections.deque = collections.deque()
    for batch in batches:
        pending.append(
            (batch, [decoder.submit(load_each, [str(item.path)], FusionModel.sample_rate) for item, _ in batch])
        )
        if len(pending) > _DECODE_AHEAD:
            yield pending.popleft()
    yield from pending


class _Progress:
    """The driver's progress bar: files done, audio hours per second, real-time factor."""

    def __init__(self, run: _Run, total: int, enabled: bool):
        from tqdm import tqdm

        self.run, self.started = run, time.perf_counter()
        self.bar = tqdm(total=total, unit="file", desc="embedding", disable=not enabled, dynamic_ncols=True)

    def update(self, files: int) -> None:
        self.bar.update(files)
        elapsed = time.perf_counter() - self.started
        self.bar.set_postfix(
            audio_h_per_s=f"{self.run.summary.audio_seconds / 3600 / elapsed:.4f}",
            realtime=f"{self.run.summary.audio_seconds / elapsed:.1f}x",
        )

    def close(self) -> None:
        self.bar.close()


def embed_files(
    model: FusionModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    kinds: Sequence[str] = KINDS,
    batch_seconds: float = 60.0,
    shard: tuple[int, int] | None = None,
    store_dtype: str = "float32",
    progress: bool = True,
) -> RunSummary:
    """Embed every input file into ``out_dir`` in this process (see the module docstring for the layout)."""
    started = time.perf_counter()
    dtype = dtype_name(model.autocast_dtype)
    run, todo = _prepare(model.config, inputs, Path(out_dir), kinds, shard, store_dtype, dtype, model.dtype_requested)
    bar = _Progress(run, len(todo), progress)

    def write_and_settle(batch: list[tuple[InputFile, AudioInfo]], embedded: list) -> None:
        outputs = [run.out_dir / item.output for item, _ in batch]
        run.settle(batch, write_each(embedded, outputs, store_dtype=run.store_dtype))
        bar.update(len(batch))

    try:
        # Decoding threads run ahead of the model and one writer thread behind it (writes and commits
        # stay in order), so neither adds to the model's time; only the writer touches the run.
        with ThreadPoolExecutor(_decode_threads()) as decoder, ThreadPoolExecutor(1) as writer:
            writing: collections.deque = collections.deque()
            for batch, decoding in _decoded_ahead(decoder, _batches(todo, batch_seconds, model.mixed_batch_limit)):
                decoded = [clip for future in decoding for clip in future.result()]
                writing.append(writer.submit(write_and_settle, batch, embed_decoded(model, decoded, run.kinds)))
                while len(writing) > _DECODE_AHEAD or (writing and writing[0].done()):
                    writing.popleft().result()  # a failed write stops the run here
            while writing:
                writing.popleft().result()
    finally:
        bar.close()
        run.close()
    run.summary.wall_seconds = time.perf_counter() - started
    return run.summary


#: Batches queued at each model worker, so it never waits for the driver; more only holds decoded
#: audio in the object store.
_QUEUED_PER_WORKER = 2


class _EmbedWorker:
    """A Ray actor: builds the model once, embeds batches of decoded clips, writes each output under a
    temporary name, and returns the names for the driver to commit (or why a clip failed)."""

    def __init__(
        self,
        config: FusionConfig,
        device: str,
        dtype: str | None,
        threads: int,
        kinds: tuple[str, ...],
        store_dtype: str,
    ):
        torch.set_num_threads(threads)
        self.model = FusionModel.from_config(config, device=device, dtype=dtype)
        self.kinds, self.store_dtype = kinds, store_dtype

    def mixed_batch_limit(self) -> int:
        return self.model.mixed_batch_limit

    def embed(self, outputs: list[Path], decoded: list[np.ndarray | str], tag: str) -> list[Path | str]:
        """:func:`embed_and_write` of one batch. ``decoded`` is its decoding task's result (Ray resolves
        it before the call; if that task died more often than Ray retries, so does this call)."""
        return embed_and_write(self.model, decoded, self.kinds, outputs, tag, self.store_dtype)


def embed_files_on_ray(
    config: FusionConfig,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    workers: int | None = None,
    worker_cpus: int = 1,
    kinds: Sequence[str] = KINDS,
    batch_seconds: float = 60.0,
    shard: tuple[int, int] | None = None,
    store_dtype: str = "float32",
    progress: bool = True,
) -> RunSummary:
    """:func:`embed_files` on the connected Ray cluster (see :mod:`hearfuse.cluster`).

    The driver (this process) finds the inputs, plans the same batches as a single process, and is
    the only one to commit outputs and write the manifest. Decoding runs in CPU tasks; each model
    worker is an actor that loads the model once. A worker that dies is restarted and its batch
    retried; a batch that keeps killing its worker is split, and a clip that still does is recorded
    as failed, so the run always ends.
    """
    import ray

    from .cluster import DECODE_CPUS, Placement

    started = time.perf_counter()
    requested = dtype or "float32"
    dtype = dtype_name(resolve_dtype(requested, device))  # auto is decided here, for every worker alike
    warn_if_emulated(dtype, device)  # said here: what the workers log stays on their machines
    run, todo = _prepare(config, inputs, Path(out_dir).resolve(), kinds, shard, store_dtype, dtype, requested)
    placement = Placement(device, worker_cpus)
    decode = ray.remote(num_cpus=DECODE_CPUS, max_retries=3)(load_each)
    worker_class = ray.remote(max_restarts=-1, max_task_retries=2, **placement.options())(_EmbedWorker)
    count = placement.workers(workers) if todo else 0  # nothing left to do: no model is loaded
    threads = placement.options()["num_cpus"]  # the CPUs each worker holds are the threads it uses
    pool = [worker_class.remote(config, device, dtype, threads, run.kinds, store_dtype) for _ in range(count)]
    try:  # the batches a single process would plan, which needs the model's own limit
        mixed_batch_limit = ray.get(pool[0].mixed_batch_limit.remote()) if pool else 0
    except ray.exceptions.RayError:  # the model cannot load: each batch will record why
        mixed_batch_limit = 0
    waiting = collections.deque(_batches(todo, batch_seconds, mixed_batch_limit))
    queued = dict.fromkeys(pool, 0)
    in_flight: dict = {}
    tag = _driver_tag(os.getpid())
    bar = _Progress(run, len(todo), progress)
    try:
        while waiting or in_flight:
            while waiting and min(queued.values()) < _QUEUED_PER_WORKER:
                worker = min(queued, key=queued.get)
                batch = waiting.popleft()
                decoded = decode.remote([str(item.path) for item, _ in batch], FusionModel.sample_rate)
                outputs = [run.out_dir / item.output for item, _ in batch]
                in_flight[worker.embed.remote(outputs, decoded, tag)] = (worker, batch)
                queued[worker] += 1
            (ready,), _ = ray.wait(list(in_flight), num_returns=1)
            worker, batch = in_flight.pop(ready)
            queued[worker] -= 1
            try:
                results = ray.get(ready)
            except ray.exceptions.RayError as error:  # its worker (or decoding task) died every time it was retried
                if len(batch) > 1:
                    waiting.extendleft([pair] for pair in reversed(batch))
                    continue
                results = [f"the Ray work decoding or embedding it kept failing ({type(error).__name__})"]
            run.settle(batch, results)
            bar.update(len(batch))
    finally:
        bar.close()
        run.close()
        for worker in pool:
            ray.kill(worker)
        _remove_leftovers(run.out_dir, tag)
    run.summary.wall_seconds = time.perf_counter() - started
    return run.summary


def _driver_tag(pid: int) -> str:
    """Names the temporary files written for one driver: its machine and process id."""
    return f"ray{hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]}.{pid}-"


def _remove_leftovers(out_dir: Path, tag: str) -> None:
    """Temporary files of this run's workers that died mid-write, and of drivers on this machine that
    are gone (a killed driver's workers may finish a write after it died; Ray stops them only later).
    Another live driver's files, here or elsewhere, are never touched."""
    host = tag.split(".")[0]
    for leftover in out_dir.rglob(f".*.{host}.*{PARTIAL_SUFFIX}"):
        owner = leftover.name.split(f".{host}.", 1)[1].split("-", 1)[0]
        if f"{host}.{owner}-" == tag or (owner.isdigit() and not _alive(int(owner))):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
