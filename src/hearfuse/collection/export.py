"""``hearfuse export``: an output folder of ``hearfuse embed`` as Parquet files or WebDataset shards.

Parquet (``DEST/part-00000.parquet`` ...), one row per input: ``path``, ``duration`` (s),
``scene_embedding`` (a fixed-size list of D values), ``timestamp_embeddings`` (a list of frames, each
a fixed-size list of D values) and ``timestamps`` (ms); row groups of about
:data:`ROW_GROUP_BYTES`, so that readers stream them (``datasets.load_dataset("parquet",
data_files=..., streaming=True)``, ``pyarrow.parquet.ParquetFile.iter_batches``).

WebDataset (``DEST/shard-000000.tar`` ...), one sample per input: ``<key>.timestamp_embeddings.npy``,
``<key>.timestamps.npy``, ``<key>.scene_embedding.npy`` and ``<key>.json`` (the input's path,
duration, model, config fingerprint, compute precision and code version); the key is the input's
position in the export, because WebDataset splits names at their first dot and input paths hold dots.

Shards are planned from the records before anything is written, so a rerun plans the same shards.
Each is written under a temporary name and renamed when complete; ``DEST/export.json`` lists the
plan. A killed export leaves complete shards and temporary files only; rerunning it removes the
temporary files, keeps the shards whose contents are still those planned, and writes the rest. At
the end the rows in the shards are counted against the records. An input whose ``.npz`` is damaged,
gone or unreadable is recorded with its reason (``export.json``) and the export goes on without it.
Input names that are not UTF-8 are written with ``\\xNN`` escapes (Parquet strings must be UTF-8).
Exports into one folder take turns (a lock), so two never remove each other's files.

A format is one :class:`Format` in :data:`FORMATS`: its shard names, the writer of one shard and the
counter of a written shard's rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import UsageError
from ..files import PARTIAL_SUFFIX, write_partial, write_text_atomic
from .layout import arrays_of
from .reader import EmbeddingFolder, EmbeddingRecord

INDEX_NAME = "export.json"
LOCK_NAME = ".export.lock"
#: Target size of a Parquet row group: large enough for fast scans, small enough to stream.
ROW_GROUP_BYTES = 64 * 2**20
#: Member times of the tar shards: fixed, so that the same export writes the same bytes.
_TAR_MTIME = 946684800  # 2000-01-01
#: What reading one input's ``.npz`` may raise when the file is gone, cut short or not an npz at all.
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, UsageError)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Shard:
    name: str
    first: int  # position of its first record in the export
    records: tuple[EmbeddingRecord, ...]
    stats: tuple[os.stat_result, ...]  # of each record's .npz, taken once when planning

    def digest(self, identity: dict) -> str:
        """What the shard's bytes depend on: the export's settings and each input's embedding file."""
        state = hashlib.sha256(json.dumps({**identity, "first": self.first}, sort_keys=True).encode())
        for record, stat in zip(self.records, self.stats):
            state.update(f"{record.path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return state.hexdigest()[:16]


@dataclass
class _Writing:
    """What one shard's writer needs and tells: the arrays to write, the outputs' metadata, the progress
    bar, and the inputs it could not read (path -> why)."""

    names: list[str]
    meta: dict
    advance: Callable[[int], None]
    failed: dict[str, str] = field(default_factory=dict)

    def readable(self, shard: _Shard) -> Iterator[tuple[int, EmbeddingRecord, dict[str, np.ndarray]]]:
        """Each record's position in the export, the record and its arrays; a record that cannot be read is
        noted in ``failed`` and skipped."""
        for offset, record in enumerate(shard.records):
            try:
                arrays = record.arrays(self.names)
            except _DAMAGED as error:
                self.failed[record.path] = f"its embeddings cannot be read: {error}"
                self.advance(1)
                continue
            yield shard.first + offset, record, arrays


@dataclass(frozen=True)
class Format:
    """One export format: its shard names, how a shard is written and how its rows are counted."""

    name: str
    shard_pattern: str  # formatted with the shard's number
    module: str  # the library it needs (the ``export`` extra installs it)
    write: Callable[[io.BufferedWriter, _Shard, _Writing], int]  # returns the rows written
    count: Callable[[Path], int]


@dataclass
class ExportSummary:
    files: int = 0
    shards: int = 0
    kept_shards: int = 0  # complete shards of an earlier run of the same export, not written again
    stale_shards: int = 0  # shards of an earlier run removed: their inputs, or the plan, changed
    bytes: int = 0  # of the shards written now
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)  # inputs left out, and why

    def line(self) -> str:
        rate = self.seconds or float("inf")
        return (
            f"exported {self.files} files into {self.shards} shards ({self.kept_shards} kept from an earlier run"
            + (f", {self.stale_shards} of it replaced: their inputs or the plan changed" if self.stale_shards else "")
            + "); "
            f"wrote {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({self.files / rate:.1f} files/s, {self.bytes / 1e6 / rate:.1f} MB/s)"
            + (f"; failed {len(self.failed)}" if self.failed else "")
        )


def parse_size(text: str) -> int:
    """``"512MB"``, ``"1G"``, ``"2GiB"``, ``"1500000"`` -> bytes (K, M, G, T decimal; KiB ... binary)."""
    value = text.strip().upper()
    base = 1024 if value.endswith("IB") else 1000
    value = value.removesuffix("IB").removesuffix("B")
    power = "KMGT".find(value[-1:]) + 1 if value[-1:] in ("K", "M", "G", "T") else 0
    try:
        size = float(value[: len(value) - bool(power)]) * base**power
    except ValueError:
        size = math.nan
    if not math.isfinite(size):
        raise UsageError(f"size {text!r}: expected a number of bytes such as 500MB or 1GB")
    if size < 1:
        raise UsageError(f"size {text!r}: must be at least one byte")
    return int(size)


def plan_shards(
    records: Sequence[EmbeddingRecord], pattern: str, shard_bytes: int, shard_files: int | None
) -> tuple[list[_Shard], dict[str, str]]:
    """Consecutive records, a shard closed when it reaches ``shard_bytes`` (by the size of the inputs'
    ``.npz`` files) or ``shard_files`` records; and the inputs whose ``.npz`` cannot be examined, with why."""
    shards: list[_Shard] = []
    missing: dict[str, str] = {}
    current: list[tuple[EmbeddingRecord, os.stat_result]] = []
    size, first = 0, 0

    def close() -> None:
        records, stats = zip(*current)
        shards.append(_Shard(pattern.format(len(shards)), first, records, stats))

    position = 0
    for record in records:
        try:
            stat = record.file.stat()
        except OSError as error:
            missing[record.path] = f"its embeddings {record.file} cannot be examined: {error.strerror or error}"
            continue
        current.append((record, stat))
        size += stat.st_size
        position += 1
        if size >= shard_bytes or (shard_files is not None and len(current) >= shard_files):
            close()
            current, size, first = [], 0, position
    if current:
        close()
    return shards, missing


def export(
    folder: EmbeddingFolder,
    dest: str | Path,
    *,
    to: str,
    shard_bytes: int = 10**9,
    shard_files: int | None = None,
    progress: bool = True,
) -> ExportSummary:
    """Write ``folder``'s current embeddings into ``dest`` as ``to`` (see the module docstring)."""
    fmt = _format(to)
    names = exported_arrays(folder.records)
    if folder.records and not names:
        raise UsageError(
            f"{folder.root}: its files hold no kind of embedding in common (some scene only, some timestamp "
            "only); embed them again with --kind both"
        )
    dest = Path(dest).expanduser()
    with _turn(dest):
        return _export(folder, dest, fmt, names, shard_bytes, shard_files, progress)


def _export(folder, dest: Path, fmt: Format, names, shard_bytes, shard_files, progress) -> ExportSummary:
    from tqdm import tqdm

    started = time.perf_counter()
    previous = _previous_index(dest, fmt.name)
    made = folder.identity
    identity = {
        "format": fmt.name,
        "fingerprint": folder.fingerprint,
        "made": made.describe() if made else "mixed",
        "dtype": None if folder.dtype is None else str(folder.dtype),
        "shard_bytes": shard_bytes,
        "shard_files": shard_files,
    }
    shards, missing = plan_shards(folder.records, fmt.shard_pattern, shard_bytes, shard_files)
    digests = {shard.name: shard.digest(identity) for shard in shards}
    kept = {name for name, entry in previous.items() if entry["digest"] == digests.get(name) and _present(dest, entry)}
    stale = [name for name in sorted(set(previous) - kept) if (dest / name).is_file()]
    for name in stale:  # shards of another plan, or whose inputs changed since
        (dest / name).unlink()
    for leftover in dest.glob(f".*{PARTIAL_SUFFIX}"):  # a killed run's half-written shards (we hold the lock)
        leftover.unlink()
    # as planned: what a kept shard holds, and what the others will hold unless an input cannot be read
    entries = {shard.name: _entry(shard, digests[shard.name], len(shard.records), {}) for shard in shards}
    index = _index(identity, folder, entries, missing, complete=False)
    write_text_atomic(dest / INDEX_NAME, json.dumps(index, indent=1))
    summary = ExportSummary(shards=len(shards), kept_shards=len(kept), stale_shards=len(stale))
    meta = {"model": folder.model, "config_fingerprint": folder.fingerprint, **_made_meta(made)}
    with tqdm(total=len(folder.records), unit="file", desc=f"export {fmt.name}", disable=not progress) as bar:
        bar.update(len(missing))
        for shard in shards:
            if shard.name in kept:
                bar.update(len(shard.records))
                continue
            writing = _Writing(names, meta, bar.update)
            rows, written = _write_shard(dest, fmt, shard, writing)
            entries[shard.name] = _entry(shard, digests[shard.name], rows, writing.failed)
            summary.bytes += written
            bar.set_postfix(MB_per_s=f"{summary.bytes / 1e6 / (time.perf_counter() - started):.1f}")
    _check_rows(dest, fmt, shards, entries)
    index = _index(identity, folder, entries, missing, complete=True)
    write_text_atomic(dest / INDEX_NAME, json.dumps(index, indent=1))
    summary.failed = {**missing, **{p: why for entry in entries.values() for p, why in entry["failed"].items()}}
    summary.files = len(folder.records) - len(summary.failed)
    summary.seconds = time.perf_counter() - started
    return summary


def _write_shard(dest: Path, fmt: Format, shard: _Shard, writing: _Writing) -> tuple[int, int]:
    """One shard written and renamed into place (or, when none of its inputs could be read, no file): its
    rows and bytes."""
    rows = 0

    def write(handle) -> None:
        nonlocal rows
        rows = fmt.write(handle, shard, writing)

    partial = write_partial(dest / shard.name, write)
    written = partial.stat().st_size
    if rows:
        os.replace(partial, dest / shard.name)
    else:
        partial.unlink()
        written = 0
    return rows, written


def _entry(shard: _Shard, digest: str, files: int, failed: dict[str, str]) -> dict:
    """A shard as ``export.json`` lists it: the inputs it holds and those it left out, with why."""
    return {"name": shard.name, "files": files, "first": shard.first, "digest": digest, "failed": failed}


def _index(identity, folder, entries: dict[str, dict], missing, *, complete: bool) -> dict:
    return {
        **identity,
        "source": str(folder.root.resolve()),
        "model": folder.model,
        "files": len(folder.records),
        "complete": complete,
        "failed": missing,
        "shards": list(entries.values()),
    }


def _present(dest: Path, entry: dict) -> bool:
    """A shard an earlier export completed with every input (its file is renamed into place only then); one
    that left inputs out is written again, which finds them out again."""
    return (dest / entry["name"]).is_file() and not entry.get("failed")


def _check_rows(dest: Path, fmt: Format, shards: list[_Shard], entries: dict) -> None:
    counted = {
        shard.name: (fmt.count(dest / shard.name) if entries[shard.name]["files"] else 0, entries[shard.name]["files"])
        for shard in shards
    }
    wrong = {name: rows for name, rows in counted.items() if rows[0] != rows[1]}
    if wrong:
        raise RuntimeError(f"exported rows (found, written) differ in {dest}: {wrong}")


def _made_meta(made) -> dict:
    return {} if made is None else {"compute_dtype": made.dtype, "embedding_version": made.code}


def exported_arrays(records: Sequence[EmbeddingRecord]) -> list[str]:
    """The arrays every record holds (a folder may mix ``--kind`` runs of one config)."""
    kinds = set.intersection(*(set(record.kinds) for record in records)) if records else set()
    return arrays_of(kinds)


@contextlib.contextmanager
def _turn(dest: Path):
    """Hold ``dest``'s export lock: a second export into the same folder waits for the first to finish."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"export destination {dest} is a file; expected a folder")
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another export is writing into %s; waiting for it to finish", dest)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _previous_index(dest: Path, to: str) -> dict[str, dict]:
    """The shards (name -> entry) an earlier export into ``dest`` planned; a folder that holds other
    things is refused rather than written into."""
    index_path = dest / INDEX_NAME
    if not index_path.is_file():
        others = [
            path.name for path in dest.iterdir() if not path.name.endswith(PARTIAL_SUFFIX) and path.name != LOCK_NAME
        ]
        if others:
            raise UsageError(f"export destination {dest} holds other files ({others[0]}, ...); give an empty folder")
        return {}
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"{index_path}: cannot be read ({error}); remove it or give another folder") from None
    if index.get("format") != to:
        raise UsageError(f"export destination {dest} holds a {index.get('format')} export; give another folder")
    return {shard["name"]: shard for shard in index.get("shards", [])}


def _format(to: str) -> Format:
    """A format by name, its library imported (a usage error naming the extra if absent)."""
    if to not in FORMATS:
        raise UsageError(f"export format must be one of {', '.join(FORMATS)}, got {to!r}")
    fmt = FORMATS[to]
    try:
        __import__(fmt.module)
    except ImportError as error:
        raise UsageError(f"export --to {to} needs {error.name}: pip install 'hearfuse[export]'") from None
    return fmt


def utf8_path(path: str) -> str:
    """An input path as UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _write_parquet(handle, shard: _Shard, writing: _Writing) -> int:
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    group: list[tuple[EmbeddingRecord, dict[str, np.ndarray]]] = []
    size = rows = 0
    for _, record, arrays in writing.readable(shard):
        group.append((record, arrays))
        size += sum(array.nbytes for array in arrays.values())
        if size >= ROW_GROUP_BYTES:
            writer = _write_row_group(handle, writer, group, writing)
            rows, group, size = rows + len(group), [], 0
    if group:
        writer = _write_row_group(handle, writer, group, writing)
        rows += len(group)
    if writer is not None:
        writer.close()
    return rows


def _write_row_group(handle, writer, group: list[tuple[EmbeddingRecord, dict]], writing: _Writing):
    """One row group of ``group``'s inputs (the writer is opened with the first group's schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "path": pa.array([utf8_path(record.path) for record, _ in group], pa.string()),
        "duration": pa.array([record.duration for record, _ in group], pa.float64()),
    }
    for name in writing.names:
        arrays = [arrays[name] for _, arrays in group]
        flat = pa.array(np.concatenate([array.reshape(-1) for array in arrays]))
        if name == "scene_embedding":
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, arrays[0].shape[-1])
            continue
        values = pa.FixedSizeListArray.from_arrays(flat, arrays[0].shape[-1]) if arrays[0].ndim == 2 else flat
        offsets = pa.array(np.concatenate([[0], np.cumsum([len(array) for array in arrays])]), pa.int32())
        columns[name] = pa.ListArray.from_arrays(offsets, values)
    table = pa.table(columns)
    if writer is None:
        # No dictionary encoding: paths are unique and embedding values almost so, and trying it cost
        # 1.1 of 1.7 s writing 100 CREPE files (benchmarks.storage export); snappy stays (it shrinks
        # CREPE's embeddings to 52 %).
        schema = table.schema.with_metadata({"hearfuse": json.dumps(writing.meta)})
        writer = pq.ParquetWriter(handle, schema, use_dictionary=False)
    writer.write_table(table, row_group_size=len(group))
    writing.advance(len(group))
    return writer


def _write_webdataset(handle, shard: _Shard, writing: _Writing) -> int:
    import webdataset

    rows = 0
    with webdataset.TarWriter(handle, mtime=_TAR_MTIME) as sink:
        for position, record, arrays in writing.readable(shard):
            sample = {"__key__": f"{position:09d}"}
            for name, array in arrays.items():
                buffer = io.BytesIO()
                np.save(buffer, array)
                sample[f"{name}.npy"] = buffer.getvalue()
            info = {"path": utf8_path(record.path), "duration": record.duration, **writing.meta}
            sample["json"] = json.dumps(info).encode()
            sink.write(sample)
            writing.advance(1)
            rows += 1
    return rows


def _count_parquet(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _count_webdataset(path: Path) -> int:
    """A tar's distinct sample keys."""
    import tarfile

    with tarfile.open(path) as tar:
        return len({member.name.split(".", 1)[0] for member in tar if member.isfile()})


FORMATS: dict[str, Format] = {
    "parquet": Format("parquet", "part-{:05d}.parquet", "pyarrow", _write_parquet, _count_parquet),
    "webdataset": Format("webdataset", "shard-{:06d}.tar", "webdataset", _write_webdataset, _count_webdataset),
}
