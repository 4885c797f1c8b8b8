"""``hearfuse export``: an output folder of ``hearfuse embed`` as Parquet files or WebDataset shards.

Parquet (``DEST/part-00000.parquet`` ...), one row per input: ``path``, ``duration`` (s),
``scene_embedding`` (a fixed-size list of D values), ``timestamp_embeddings`` (a list of frames, each
a fixed-size list of D values) and ``timestamps`` (ms); row groups of about
:data:`ROW_GROUP_BYTES`, so that readers stream them (``datasets.load_dataset("parquet",
data_files=..., streaming=True)``, ``pyarrow.parquet.ParquetFile.iter_batches``).

WebDataset (``DEST/shard-000000.tar`` ...), one sample per input: ``<key>.timestamp_embeddings.npy``,
``<key>.timestamps.npy``, ``<key>.scene_embedding.npy`` and ``<key>.json`` (the input's path,
duration, model and config fingerprint); the key is the input's position in the export, because
WebDataset splits names at their first dot and input paths hold dots.

Shards are planned from the records before anything is written, so a rerun plans the same shards.
Each is written under a temporary name and renamed when complete; ``DEST/export.json`` lists the
plan. A killed export leaves complete shards and temporary files only; rerunning it removes the
temporary files, keeps the shards whose contents are still those planned, and writes the rest. At
the end the rows in the shards are counted against the records.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .corpus import KIND_ARRAYS, KINDS
from .embeddings import EmbeddingFolder, EmbeddingRecord
from .errors import UsageError
from .files import PARTIAL_SUFFIX, write_partial, write_text_atomic

FORMATS = ("parquet", "webdataset")
INDEX_NAME = "export.json"
#: Target size of a Parquet row group: large enough for fast scans, small enough to stream.
ROW_GROUP_BYTES = 64 * 2**20
#: Member times of the tar shards: fixed, so that the same export writes the same bytes.
_TAR_MTIME = 946684800  # 2000-01-01


@dataclass
class ExportSummary:
    files: int = 0
    shards: int = 0
    kept_shards: int = 0  # complete shards of an earlier run of the same export, not written again
    stale_shards: int = 0  # shards of an earlier run removed: their inputs, or the plan, changed
    bytes: int = 0  # of the shards written now
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.seconds or float("inf")
        return (
            f"exported {self.files} files into {self.shards} shards ({self.kept_shards} kept from an earlier run"
            + (f", {self.stale_shards} of it replaced: their inputs or the plan changed" if self.stale_shards else "")
            + "); "
            f"wrote {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s "
            f"({self.files / rate:.1f} files/s, {self.bytes / 1e6 / rate:.1f} MB/s)"
        )


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


def parse_size(text: str) -> int:
    """``"512MB"``, ``"1G"``, ``"2GiB"``, ``"1500000"`` -> bytes (K, M, G, T decimal; KiB ... binary)."""
    value = text.strip().upper()
    base = 1024 if value.endswith("IB") else 1000
    value = value.removesuffix("IB").removesuffix("B")
    power = "KMGT".find(value[-1:]) + 1 if value[-1:] in ("K", "M", "G", "T") else 0
    try:
        size = float(value[: len(value) - bool(power)]) * base**power
    except ValueError:
        raise UsageError(f"size {text!r}: expected a number of bytes such as 500MB or 1GB") from None
    if size < 1:
        raise UsageError(f"size {text!r}: must be at least one byte")
    return int(size)


def plan_shards(records: Sequence[EmbeddingRecord], to: str, shard_bytes: int, shard_files: int | None) -> list[_Shard]:
    """Consecutive records, a shard closed when it reaches ``shard_bytes`` (by the size of the
    inputs' ``.npz`` files) or ``shard_files`` records."""
    pattern = "part-{:05d}.parquet" if to == "parquet" else "shard-{:06d}.tar"
    shards: list[_Shard] = []
    current: list[tuple[EmbeddingRecord, os.stat_result]] = []
    size, first = 0, 0

    def close() -> None:
        records, stats = zip(*current)
        shards.append(_Shard(pattern.format(len(shards)), first, records, stats))

    for position, record in enumerate(records):
        stat = record.file.stat()
        current.append((record, stat))
        size += stat.st_size
        if size >= shard_bytes or (shard_files is not None and len(current) >= shard_files):
            close()
            current, size, first = [], 0, position + 1
    if current:
        close()
    return shards


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
    from tqdm import tqdm

    if to not in FORMATS:
        raise UsageError(f"export format must be one of {', '.join(FORMATS)}, got {to!r}")
    write_shard = _writer(to)
    started = time.perf_counter()
    dest = Path(dest).expanduser()
    previous = _previous_index(dest, to)
    identity = {
        "format": to,
        "fingerprint": folder.fingerprint,
        "dtype": None if folder.dtype is None else str(folder.dtype),
        "shard_bytes": shard_bytes,
        "shard_files": shard_files,
    }
    shards = plan_shards(folder.records, to, shard_bytes, shard_files)
    digests = {shard.name: shard.digest(identity) for shard in shards}
    kept = {name for name, digest in previous.items() if digests.get(name) == digest and (dest / name).is_file()}
    stale = [name for name in sorted(set(previous) - kept) if (dest / name).is_file()]
    for name in stale:  # shards of another plan, or whose inputs changed since
        (dest / name).unlink()
    for leftover in dest.glob(f".*{PARTIAL_SUFFIX}"):  # a killed run's half-written shards
        leftover.unlink()
    index = {
        **identity,
        "source": str(folder.root.resolve()),
        "model": folder.model,
        "files": len(folder.records),
        "complete": False,
        "shards": [
            {"name": shard.name, "files": len(shard.records), "first": shard.first, "digest": digests[shard.name]}
            for shard in shards
        ],
    }
    write_text_atomic(dest / INDEX_NAME, json.dumps(index, indent=1))
    summary = ExportSummary(shards=len(shards), kept_shards=len(kept), stale_shards=len(stale))
    meta = {"model": folder.model, "config_fingerprint": folder.fingerprint}
    names = exported_arrays(folder.records)
    with tqdm(total=len(folder.records), unit="file", desc=f"export {to}", disable=not progress) as bar:
        for shard in shards:
            if shard.name in kept:
                bar.update(len(shard.records))
                continue
            write = functools.partial(write_shard, shard=shard, names=names, meta=meta, advance=bar.update)
            partial = write_partial(dest / shard.name, write)
            summary.bytes += partial.stat().st_size
            os.replace(partial, dest / shard.name)
            bar.set_postfix(MB_per_s=f"{summary.bytes / 1e6 / (time.perf_counter() - started):.1f}")
    counted = {shard.name: (_count(to, dest / shard.name), len(shard.records)) for shard in shards}
    wrong = {name: rows for name, rows in counted.items() if rows[0] != rows[1]}
    if wrong or sum(rows for rows, _ in counted.values()) != len(folder.records):
        raise RuntimeError(f"exported rows (found, planned) differ from the {len(folder.records)} records: {wrong}")
    write_text_atomic(dest / INDEX_NAME, json.dumps({**index, "complete": True}, indent=1))
    summary.files = len(folder.records)
    summary.seconds = time.perf_counter() - started
    return summary


def exported_arrays(records: Sequence[EmbeddingRecord]) -> list[str]:
    """The arrays every record holds (a folder may mix ``--kind`` runs of one config)."""
    kinds = set.intersection(*(set(record.kinds) for record in records)) if records else set()
    return [name for kind in KINDS if kind in kinds for name in KIND_ARRAYS[kind]]


def _previous_index(dest: Path, to: str) -> dict[str, str]:
    """The shards (name -> digest) an earlier export into ``dest`` planned; a folder that holds other
    things is refused rather than written into."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"export destination {dest} is a file; expected a folder")
    dest.mkdir(parents=True, exist_ok=True)
    index_path = dest / INDEX_NAME
    if not index_path.is_file():
        others = [path.name for path in dest.iterdir() if not path.name.endswith(PARTIAL_SUFFIX)]
        if others:
            raise UsageError(f"export destination {dest} holds other files ({others[0]}, ...); give an empty folder")
        return {}
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{index_path}: cannot be read ({error}); remove it or give another folder") from None
    if index.get("format") != to:
        raise UsageError(f"export destination {dest} holds a {index.get('format')} export; give another folder")
    return {shard["name"]: shard["digest"] for shard in index.get("shards", [])}


def _writer(to: str) -> Callable:
    """The shard writer of a format, importing its library (a usage error naming the extra if absent)."""
    try:
        if to == "parquet":
            import pyarrow  # noqa: F401

            return _write_parquet
        import webdataset  # noqa: F401

        return _write_webdataset
    except ImportError as error:
        raise UsageError(f"export --to {to} needs {error.name}: pip install 'hearfuse[export]'") from None


def _write_parquet(handle, shard: _Shard, names: list[str], meta: dict, advance: Callable[[int], None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    group: list[tuple[EmbeddingRecord, dict[str, np.ndarray]]] = []
    size = 0
    for record in shard.records:
        arrays = record.arrays(names)
        group.append((record, arrays))
        size += sum(array.nbytes for array in arrays.values())
        if size >= ROW_GROUP_BYTES:
            writer = _write_row_group(pa, pq, handle, writer, group, names, meta)
            advance(len(group))
            group, size = [], 0
    if group:
        writer = _write_row_group(pa, pq, handle, writer, group, names, meta)
        advance(len(group))
    writer.close()  # a shard holds at least one record, so a writer was opened


def _write_row_group(pa, pq, handle, writer, group: list[tuple[EmbeddingRecord, dict]], names: list[str], meta: dict):
    """One row group of ``group``'s inputs (the writer is opened with the first group's schema)."""
    columns = {
        "path": pa.array([record.path for record, _ in group], pa.string()),
        "duration": pa.array([record.duration for record, _ in group], pa.float64()),
    }
    for name in names:
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
        schema = table.schema.with_metadata({"hearfuse": json.dumps(meta)})
        writer = pq.ParquetWriter(handle, schema, use_dictionary=False)
    writer.write_table(table, row_group_size=len(group))
    return writer


def _write_webdataset(handle, shard: _Shard, names: list[str], meta: dict, advance: Callable[[int], None]) -> None:
    import webdataset

    with webdataset.TarWriter(handle, mtime=_TAR_MTIME) as sink:
        for offset, record in enumerate(shard.records):
            sample = {"__key__": f"{shard.first + offset:09d}"}
            for name, array in record.arrays(names).items():
                buffer = io.BytesIO()
                np.save(buffer, array)
                sample[f"{name}.npy"] = buffer.getvalue()
            sample["json"] = json.dumps({"path": record.path, "duration": record.duration, **meta}).encode()
            sink.write(sample)
            advance(1)


def _count(to: str, path: Path) -> int:
    """Rows of a written shard: Parquet's footer, or a tar's distinct sample keys."""
    if to == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    import tarfile

    with tarfile.open(path) as tar:
        return len({member.name.split(".", 1)[0] for member in tar if member.isfile()})
