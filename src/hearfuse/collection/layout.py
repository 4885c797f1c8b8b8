"""The layout of an output folder of ``hearfuse embed``: what it holds, the manifest record, and the
array rules. The writer, the reader and export share it; it imports neither torch nor the model, so
that reading a folder costs no more than numpy.

::

    OUT/
      manifest.jsonl                 one JSON record per processed input (append-only)
      manifest-shard-2-of-4.jsonl    the same, per shard, when --shard is used
      config-<fingerprint>.json      the fusion config the embeddings were made with
      <input tree>/<name>.<ext>.npz  per input: timestamp_embeddings (T, D), timestamps (T,) ms,
                                     scene_embedding (D,); embeddings in the run's store precision
                                     (float32, or float16 with --store-dtype), timestamps float32

Records from every manifest are ordered by when they were written (``time_ns``), never by file name:
a shard job's record written after a plain run's is the current one, whatever the files are called.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import UsageError
from ..identity import UNVERSIONED, EmbeddingIdentity

KINDS = ("timestamp", "scene")
#: The arrays of each kind in an output ``.npz``.
KIND_ARRAYS = {"timestamp": ("timestamp_embeddings", "timestamps"), "scene": ("scene_embedding",)}

MANIFEST_GLOB = "manifest*.jsonl"


def manifest_name(shard: tuple[int, int] | None) -> str:
    return "manifest.jsonl" if shard is None else f"manifest-shard-{shard[0]}-of-{shard[1]}.jsonl"


def config_file(out_dir: Path, fingerprint: str) -> Path:
    return out_dir / f"config-{fingerprint}.json"


def stored_array(name: str, array: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """An output array in ``dtype``: embeddings are cast (no copy when they already are), timestamps
    stay float32."""
    return array if name == "timestamps" else array.astype(dtype, copy=False)


def arrays_of(kinds: Iterable[str]) -> list[str]:
    """The ``.npz`` members of ``kinds``, in the layout's order."""
    return [name for kind in KINDS if kind in set(kinds) for name in KIND_ARRAYS[kind]]


@dataclasses.dataclass(frozen=True)
class ManifestRecord:
    """One line of a manifest: an input, what became of it, and how its embeddings were made.

    Fields missing from records written by older versions read as what they were then: stored and
    computed in float32 (the only choices before ``--store-dtype`` and ``dtype`` were recorded), by code
    of version :data:`~hearfuse.identity.UNVERSIONED`.
    """

    path: str  # relative to what was embedded: the key, and the output's place under OUT
    status: str  # "ok" | "failed" | "alias"
    source: str | None = None  # the input file as it was named
    size: int | None = None
    mtime_ns: int | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    model: str | None = None
    config_fingerprint: str | None = None
    kinds: tuple[str, ...] = ()
    store_dtype: str = "float32"
    dtype: str = "float32"  # compute precision
    dtype_requested: str | None = None  # what was asked for ("auto" when it was picked)
    embedding_version: int = UNVERSIONED
    reused_under_version: int | None = None  # kept by --reuse-other-code under this code version
    hearfuse_version: str | None = None
    output: str | None = None  # the .npz, relative to OUT
    error: str = ""
    alias_of: str | None = None
    time: str | None = None  # UTC, seconds: for people
    time_ns: int | None = None  # for ordering records of several manifests

    @property
    def identity(self) -> EmbeddingIdentity:
        """How its embeddings were made and stored; the code version is the one it was kept under when
        ``--reuse-other-code`` kept it."""
        code = self.embedding_version if self.reused_under_version is None else self.reused_under_version
        return EmbeddingIdentity(self.config_fingerprint, self.dtype, code, self.store_dtype, self.kinds)

    @property
    def embedded(self) -> bool:
        return self.status == "ok" and bool(self.output)

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["kinds"] = list(self.kinds)
        return json.dumps(fields)  # "path" first: parse_record finds a record glued onto a torn line by it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ManifestRecord:
        known = {field.name for field in dataclasses.fields(cls)}
        values = {name: value for name, value in data.items() if name in known and value is not None}
        values["kinds"] = tuple(values.get("kinds") or ())
        return cls(**values)

    def written_at(self) -> int:
        """Nanoseconds since the epoch: ``time_ns``, else the seconds of ``time`` (older records)."""
        if self.time_ns is not None:
            return self.time_ns
        if self.time:
            try:
                return int(datetime.datetime.fromisoformat(self.time).timestamp()) * 10**9
            except ValueError:
                pass
        return 0


def now() -> dict[str, Any]:
    """The ``time`` and ``time_ns`` of a record written now."""
    stamp = time.time_ns()
    when = datetime.datetime.fromtimestamp(stamp / 1e9, datetime.timezone.utc).isoformat(timespec="seconds")
    return {"time": when, "time_ns": stamp}


def parse_record(line: str) -> ManifestRecord | None:
    """A manifest line's record; a line cut short yields nothing, and a record glued onto a cut line
    (by a writer that did not start on a new line) is still found."""
    for start in (0, line.rfind('{"path": ')):
        if start < 0:
            continue
        try:
            data = json.loads(line[start:])
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("path"), str) and isinstance(data.get("status"), str):
            try:
                return ManifestRecord.from_dict(data)
            except (TypeError, ValueError):
                return None
    return None


def read_manifests(out_dir: Path) -> dict[str, ManifestRecord]:
    """The latest record of each input across every manifest in ``out_dir``, latest by when it was
    written (records of one file keep their order). An unreadable manifest is a usage error naming it."""
    written: list[tuple[int, int, ManifestRecord]] = []
    for path in out_dir.glob(MANIFEST_GLOB):
        try:
            text = path.read_text(errors="surrogateescape")
        except OSError as error:
            raise UsageError(f"{path}: cannot be read ({error.strerror or error})") from None
        for line_number, line in enumerate(text.splitlines()):
            record = parse_record(line)
            if record is not None:
                written.append((record.written_at(), line_number, record))
    latest: dict[str, ManifestRecord] = {}
    for _, _, record in sorted(written, key=lambda entry: entry[:2]):
        latest[record.path] = record
    return latest


class Manifest:
    """Append-only JSON-lines log of processed inputs.

    Several processes may append to one manifest (runs side by side, a Ray driver): each batch of
    records is one write under an exclusive lock, and starts on a new line even when an earlier writer
    was cut off mid-line (a full disk, a crashed NFS client), so a torn line never swallows the next.
    """

    def __init__(self, out_dir: Path, shard: tuple[int, int] | None):
        self.path = out_dir / manifest_name(shard)
        self._handle = None

    def append(self, records: list[ManifestRecord]) -> None:
        """Append ``records`` in one write and one fsync (a batch's records cost one disk flush)."""
        if not records:
            return
        if self._handle is None:
            self._handle = open(self.path, "a+b")
        text = "".join(record.to_json() + "\n" for record in records).encode("utf-8", "surrogateescape")
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
