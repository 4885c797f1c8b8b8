"""Reading back what ``hearfuse embed`` wrote, without glue code.

:func:`open_embeddings` reads an output folder through its manifests (``manifest.jsonl`` and the
``manifest-shard-*`` files of ``--shard`` jobs) and keeps the *current* records only: the latest
record of each input, embedded (status ``ok``) by one config. Records of other configs are stale
(counted, never mixed in); failed inputs and aliases are listed with their reasons.

>>> folder = hearfuse.open_embeddings("emb/")                       # doctest: +SKIP
>>> paths, X = folder.scene_matrix()                                # (N, D), no frame sequence read
>>> loader = DataLoader(folder.frames(), batch_size=8, collate_fn=collate_frames)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import FusionConfig
from .corpus import Manifest, record_store_dtype, stored_array
from .errors import UsageError


@dataclass(frozen=True)
class EmbeddingRecord:
    """One embedded input: where its arrays are and what the manifest says of it."""

    path: str  # the input's path relative to what was embedded (the manifest's key)
    source: str  # the input file as it was named when embedded
    file: Path  # its .npz
    duration: float | None  # seconds
    kinds: tuple[str, ...]
    store_dtype: str
    dtype: np.dtype | None = None  # what the arrays are returned as (None: as stored)

    def arrays(self, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The named arrays of the ``.npz`` (default: all); a member not asked for is never read."""
        try:
            with np.load(self.file) as npz:
                arrays = {name: npz[name] for name in (names or npz.files)}
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: its embeddings {self.file} are gone; embed it again") from None
        except KeyError as error:
            raise UsageError(f"{self.path}: embedded without {error} (kinds: {', '.join(self.kinds)})") from None
        return arrays if self.dtype is None else {name: stored_array(name, a, self.dtype) for name, a in arrays.items()}

    def scene_embedding(self) -> np.ndarray:
        """``(D,)``."""
        return self.arrays(["scene_embedding"])["scene_embedding"]

    def timestamp_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(T, D)`` embeddings and their ``(T,)`` frame centres in ms."""
        arrays = self.arrays(["timestamp_embeddings", "timestamps"])
        return arrays["timestamp_embeddings"], arrays["timestamps"]


class EmbeddingFolder:
    """The current embeddings of one output folder, in a stable order (sorted by input path).

    Index it by position, by input path (as in the manifest, e.g. ``"speech/a.wav"``), by the source
    path it was embedded from, or by an alias of an embedded file.
    """

    def __init__(
        self,
        root: Path,
        records: list[EmbeddingRecord],
        fingerprint: str | None,
        model: str | None,
        *,
        failed: dict[str, str],
        aliases: dict[str, str],
        stale: int,
        dtype: np.dtype | None = None,
    ):
        self.root = root
        self.dtype = dtype  # what arrays are returned as (None: as stored)
        self.records = records
        self.fingerprint = fingerprint
        self.model = model
        self.failed = failed  # input path -> why it could not be embedded
        self.aliases = aliases  # input path -> the path it is embedded under
        self.stale = stale  # embedded records of other configs, not returned
        self._by_path = {record.path: record for record in records}
        self._by_source = {record.source: record for record in records}

    def __repr__(self) -> str:
        dtypes = "/".join(sorted({record.store_dtype for record in self.records})) or "-"
        what = f"{self.model} {self.fingerprint}" if self.fingerprint else "nothing embedded"
        return (
            f"EmbeddingFolder({str(self.root)!r}: {what}, {len(self)} files, stored {dtypes}; "
            f"{len(self.failed)} failed, {len(self.aliases)} aliases, {self.stale} stale)"
        )

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EmbeddingRecord]:
        return iter(self.records)

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return False
        return True

    def __getitem__(self, key: int | str | Path) -> EmbeddingRecord:
        if isinstance(key, (int, np.integer)):
            return self.records[key]
        if not isinstance(key, (str, Path)):
            raise TypeError(f"index by position or input path, got {type(key).__name__}")
        text = str(key)
        text = self.aliases.get(text, text)
        found = self._by_path.get(text) or self._by_source.get(text)
        if found is None:
            why = f": it failed ({self.failed[text]})" if text in self.failed else ""
            raise KeyError(f"{text!r} has no current embedding in {self.root}{why}")
        return found

    @property
    def paths(self) -> list[str]:
        return [record.path for record in self.records]

    @property
    def config(self) -> FusionConfig:
        """The fusion config the embeddings were made with (``config-<fingerprint>.json``)."""
        if self.fingerprint is None:
            raise UsageError(f"{self.root}: nothing is embedded there")
        return FusionConfig.load(self.root / f"config-{self.fingerprint}.json")

    @property
    def dim(self) -> int:
        """The embedding width, read from the first record's scene or frame array header."""
        if not self.records:
            raise UsageError(f"{self.root}: nothing is embedded there")
        record = self.records[0]
        name = "scene_embedding" if "scene" in record.kinds else "timestamp_embeddings"
        return int(record.arrays([name])[name].shape[-1])

    def scene_matrix(self, dtype: str | np.dtype | None = None) -> tuple[list[str], np.ndarray]:
        """Input paths and their scene embeddings stacked ``(N, D)``, reading only the scene array of
        each file (memory: the matrix, whatever the frame sequences hold)."""
        missing = [record.path for record in self.records if "scene" not in record.kinds]
        if missing:
            raise UsageError(
                f"{len(missing)} files of {self.root} were embedded without scene embeddings (first: {missing[0]}); "
                "embed them with --kind scene or both"
            )
        target = np.dtype(dtype or self.dtype or _common_dtype(self.records))
        if not self.records:
            return [], np.zeros((0, 0), dtype=target)
        matrix = np.empty((len(self.records), self.dim), dtype=target)
        for row, record in enumerate(self.records):
            embedding = record.scene_embedding()
            if embedding.shape != matrix.shape[1:]:
                raise ValueError(
                    f"{record.path}: scene embedding of shape {embedding.shape}, expected {matrix.shape[1:]}"
                )
            matrix[row] = embedding
        return self.paths, matrix

    def frames(self, dtype: str | np.dtype | None = None) -> "FrameDataset":
        """A :class:`torch.utils.data.Dataset` of every file's frame sequence (see :func:`collate_frames`)."""
        missing = [record.path for record in self.records if "timestamp" not in record.kinds]
        if missing:
            raise UsageError(
                f"{len(missing)} files of {self.root} were embedded without timestamp embeddings "
                f"(first: {missing[0]}); embed them with --kind timestamp or both"
            )
        return FrameDataset(self.records, None if dtype is None else np.dtype(dtype))


def _common_dtype(records: Sequence[EmbeddingRecord]) -> np.dtype:
    """The stored precision, or the widest when runs stored several (a rerun killed midway)."""
    stored = {record.store_dtype for record in records} or {"float32"}
    return np.result_type(*(np.dtype(name) for name in stored))


class FrameBatch(NamedTuple):
    """A padded batch of frame sequences: rows past ``lengths[i]`` are zeros."""

    embeddings: torch.Tensor  # (B, T_max, D)
    timestamps: torch.Tensor  # (B, T_max) ms
    lengths: torch.Tensor  # (B,) int64
    paths: list[str]

    @property
    def mask(self) -> torch.Tensor:
        """``(B, T_max)`` True on real frames."""
        return torch.arange(self.embeddings.shape[1])[None, :] < self.lengths[:, None]


class FrameDataset(Dataset):
    """Item ``i``: ``(timestamp_embeddings (T, D), timestamps (T,) ms, input path)`` of the i-th file."""

    def __init__(self, records: Sequence[EmbeddingRecord], dtype: np.dtype | None = None):
        self.records = [record if dtype is None else dataclasses.replace(record, dtype=dtype) for record in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        record = self.records[index]
        embeddings, timestamps = record.timestamp_embeddings()
        return torch.from_numpy(embeddings), torch.from_numpy(timestamps), record.path


def collate_frames(items: Sequence[tuple[torch.Tensor, torch.Tensor, str]]) -> FrameBatch:
    """``DataLoader(..., collate_fn=collate_frames)``: sequences of different lengths padded with zeros."""
    lengths = torch.tensor([len(embeddings) for embeddings, _, _ in items], dtype=torch.int64)
    embeddings = torch.nn.utils.rnn.pad_sequence([item[0] for item in items], batch_first=True)
    timestamps = torch.nn.utils.rnn.pad_sequence([item[1] for item in items], batch_first=True)
    return FrameBatch(embeddings, timestamps, lengths, [path for _, _, path in items])


def open_embeddings(
    out_dir: str | Path, *, config: str | FusionConfig | None = None, dtype: str | np.dtype | None = None
) -> EmbeddingFolder:
    """The current embeddings in ``out_dir`` (a folder written by ``hearfuse embed``).

    ``config`` chooses among the configs a folder holds embeddings of (a fingerprint or its first
    characters, a model name, or a :class:`FusionConfig`); a folder holding several is an error that
    names them unless one is chosen. ``dtype``: return arrays in this precision (default: as stored;
    timestamps are float32 either way).
    """
    root = Path(out_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"{out_dir}: no such folder; expected the --out folder of hearfuse embed")
    if not any(root.glob("manifest*.jsonl")):
        raise UsageError(f"{out_dir}: no manifest.jsonl there; expected the --out folder of hearfuse embed")
    latest = Manifest.load(root)
    embedded = [record for record in latest.values() if record.get("status") == "ok" and record.get("output")]
    counts = collections.Counter(record.get("config_fingerprint") for record in embedded)
    models = {record.get("config_fingerprint"): record.get("model") for record in embedded}
    chosen = _choose(root, counts, models, config)
    target = None if dtype is None else np.dtype(dtype)
    records = sorted(
        (
            EmbeddingRecord(
                path=record["path"],
                source=str(record.get("source") or record["path"]),
                file=root / record["output"],
                duration=record.get("duration"),
                kinds=tuple(record.get("kinds") or ()),
                store_dtype=record_store_dtype(record),
                dtype=target,
            )
            for record in embedded
            if record.get("config_fingerprint") == chosen
        ),
        key=lambda record: record.path,
    )
    return EmbeddingFolder(
        root,
        records,
        chosen,
        models.get(chosen),
        failed={path: r.get("error", "") for path, r in sorted(latest.items()) if r.get("status") == "failed"},
        aliases={
            path: r["alias_of"]
            for path, r in sorted(latest.items())
            if r.get("status") == "alias" and r.get("alias_of")
        },
        stale=len(embedded) - len(records),
        dtype=target,
    )


def _choose(root: Path, counts: collections.Counter, models: dict, config: str | FusionConfig | None) -> str | None:
    """The fingerprint whose records are current."""
    if isinstance(config, FusionConfig):
        config = config.fingerprint()
    held = ", ".join(
        f"{fingerprint} ({models[fingerprint]}, {count} files)" for fingerprint, count in counts.most_common()
    )
    if config is None:
        if len(counts) > 1:
            raise UsageError(f"{root} holds embeddings of {len(counts)} configs: {held}; choose one (config=...)")
        return next(iter(counts), None)
    matches = [fp for fp in counts if fp.startswith(config) or models[fp] == config]
    if len(matches) != 1:
        why = "matches none" if not matches else "matches several"
        raise UsageError(f"config {config!r} {why} of the configs embedded in {root}: {held or 'none'}")
    return matches[0]
