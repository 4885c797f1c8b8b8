"""Reading back what ``hearfuse embed`` wrote, without glue code.

:func:`open_embeddings` reads an output folder through its manifests (``manifest.jsonl`` and the
``manifest-shard-*`` files of ``--shard`` jobs) and keeps the *current* records only: the latest
record of each input, embedded (status ``ok``) the same way (:mod:`hearfuse.identity`: one config,
one compute precision, one code version, one store precision). Records made another way are stale
(counted, never mixed in unless asked); failed inputs and aliases are listed with their reasons.

Importing it does not import torch; :class:`FrameDataset` hands out tensors, importing torch then.

>>> folder = hearfuse.open_embeddings("emb/")                       # doctest: +SKIP
>>> paths, X = folder.scene_matrix()                                # (N, D), no frame sequence read
>>> loader = DataLoader(folder.frames(), batch_size=8, collate_fn=collate_frames)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

import numpy as np

from ..config import FusionConfig
from ..errors import UsageError
from ..identity import EmbeddingIdentity
from .layout import MANIFEST_GLOB, ManifestRecord, config_file, read_manifests, stored_array

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EmbeddingRecord:
    """One embedded input: where its arrays are and what the manifest says of it."""

    path: str  # the input's path relative to what was embedded (the manifest's key)
    source: str  # the input file as it was named when embedded
    file: Path  # its .npz
    duration: float | None  # seconds
    identity: EmbeddingIdentity  # how its embeddings were made and stored
    dtype: np.dtype | None = None  # what the arrays are returned as (None: as stored)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.identity.kinds

    @property
    def store_dtype(self) -> str:
        return self.identity.store_dtype

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
        self.stale = stale  # embedded records made another way, not returned
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
        return FusionConfig.load(config_file(self.root, self.fingerprint))

    @property
    def identity(self) -> EmbeddingIdentity | None:
        """How the selection's embeddings were made and stored (kinds aside); None when ``mix=True`` took
        several ways (each record's ``identity`` says its own)."""
        ways = {record.identity.way for record in self.records}
        return next(iter(ways)) if len(ways) == 1 else None

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
        import torch

        return torch.arange(self.embeddings.shape[1])[None, :] < self.lengths[:, None]


class FrameDataset:
    """Item ``i``: ``(timestamp_embeddings (T, D), timestamps (T,) ms, input path)`` of the i-th file: a
    map-style dataset for :class:`torch.utils.data.DataLoader`."""

    def __init__(self, records: Sequence[EmbeddingRecord], dtype: np.dtype | None = None):
        self.records = [record if dtype is None else dataclasses.replace(record, dtype=dtype) for record in records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        import torch

        record = self.records[index]
        embeddings, timestamps = record.timestamp_embeddings()
        return torch.from_numpy(embeddings), torch.from_numpy(timestamps), record.path


def collate_frames(items: Sequence[tuple[torch.Tensor, torch.Tensor, str]]) -> FrameBatch:
    """``DataLoader(..., collate_fn=collate_frames)``: sequences of different lengths padded with zeros."""
    import torch

    lengths = torch.tensor([len(embeddings) for embeddings, _, _ in items], dtype=torch.int64)
    embeddings = torch.nn.utils.rnn.pad_sequence([item[0] for item in items], batch_first=True)
    timestamps = torch.nn.utils.rnn.pad_sequence([item[1] for item in items], batch_first=True)
    return FrameBatch(embeddings, timestamps, lengths, [path for _, _, path in items])


def open_embeddings(
    out_dir: str | Path,
    *,
    config: str | FusionConfig | None = None,
    compute_dtype: str | None = None,
    mix: bool = False,
    dtype: str | np.dtype | None = None,
) -> EmbeddingFolder:
    """The current embeddings in ``out_dir`` (a folder written by ``hearfuse embed``).

    A selection holds embeddings made one way only (:mod:`hearfuse.identity`). ``config`` chooses among
    the configs a folder holds (a fingerprint or its first characters, a model name, or a
    :class:`FusionConfig`), ``compute_dtype`` among the precisions they were computed in; a folder that
    holds several ways is an error naming each, unless one is chosen or ``mix=True`` takes every way of
    the one config (each record still says how it was made). ``dtype``: return arrays in this precision
    (default: as stored, the widest when records were stored in several; timestamps are float32 either way).
    """
    root = Path(out_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"{out_dir}: no such folder; expected the --out folder of hearfuse embed")
    if not any(root.glob(MANIFEST_GLOB)):
        raise UsageError(f"{out_dir}: no manifest.jsonl there; expected the --out folder of hearfuse embed")
    latest = read_manifests(root)
    embedded = [record for record in latest.values() if record.embedded]
    chosen = _choose(root, embedded, config, compute_dtype, mix)
    target = None if dtype is None else np.dtype(dtype)
    records = sorted(
        (
            EmbeddingRecord(
                path=record.path,
                source=str(record.source or record.path),
                file=root / str(record.output),
                duration=record.duration,
                identity=record.identity,
                dtype=target,
            )
            for record in chosen
        ),
        key=lambda record: record.path,
    )
    return EmbeddingFolder(
        root,
        records,
        chosen[0].config_fingerprint if chosen else None,
        chosen[0].model if chosen else None,
        failed={path: r.error for path, r in sorted(latest.items()) if r.status == "failed"},
        aliases={path: r.alias_of for path, r in sorted(latest.items()) if r.status == "alias" and r.alias_of},
        stale=len(embedded) - len(records),
        dtype=target,
    )


def _choose(
    root: Path,
    embedded: list[ManifestRecord],
    config: str | FusionConfig | None,
    compute_dtype: str | None,
    mix: bool,
) -> list[ManifestRecord]:
    """The records of the one way (or, with ``mix``, the one config) chosen."""
    models = {record.config_fingerprint: record.model for record in embedded}
    ways = collections.Counter(record.identity.way for record in embedded)
    held = "; ".join(f"{way.describe()} ({models[way.config]}, {count} files)" for way, count in ways.most_common())
    if isinstance(config, FusionConfig):
        config = config.fingerprint()
    if config is not None:
        matches = {fp for fp in models if fp is not None and (fp.startswith(config) or models[fp] == config)}
        if len(matches) != 1:
            why = "matches none" if not matches else "matches several"
            raise UsageError(f"config {config!r} {why} of the configs embedded in {root}: {held or 'none'}")
        embedded = [record for record in embedded if record.config_fingerprint in matches]
    if compute_dtype is not None:
        embedded = [record for record in embedded if record.dtype == compute_dtype]
        if not embedded:
            raise UsageError(f"nothing in {root} was computed in {compute_dtype}: {held or 'nothing embedded'}")
    remaining = collections.Counter(record.identity.way for record in embedded)
    configs = {way.config for way in remaining}
    if len(configs) > 1 or (len(remaining) > 1 and not mix):
        kind = "configs" if len(configs) > 1 else "ways"
        count = len(configs) if len(configs) > 1 else len(remaining)
        raise UsageError(
            f"{root} holds embeddings of {count} {kind}: {held}; choose one (config=..., compute_dtype=...)"
            + ("" if len(configs) > 1 else " or take them together with mix=True")
        )
    return embedded
