"""One embedding run as its driver sees it, whichever writer embeds (one process or Ray): what to embed
and what is already done by the identity rule, the manifest records, the summary and the progress bar.
Outputs are committed (renamed into place, then recorded) only here."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from .. import __version__
from ..audio import AudioError, AudioInfo, audio_info
from ..config import FusionConfig
from ..dtypes import STORE_DTYPES
from ..errors import UsageError
from ..files import write_text_atomic
from ..identity import EMBEDDING_VERSION, EmbeddingIdentity
from .discovery import InputFile, discover, in_shard
from .layout import KINDS, Manifest, ManifestRecord, config_file, now, read_manifests

log = logging.getLogger(__name__)


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
    again: dict[str, int] = field(default_factory=dict)  # why files done before are embedded again -> files
    reused: int = 0  # kept from another code version (--reuse-other-code)

    def line(self) -> str:
        speed = self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0
        return (
            f"embedded {self.embedded} files ({self.audio_seconds / 3600:.3f} h of audio, {speed:.2f}x real time) "
            f"in {self.wall_seconds:.1f} s; skipped {self.skipped} already done"
            + (f" ({self.reused} made by another code version, kept as asked)" if self.reused else "")
            + (f", {self.aliases} aliases of other inputs" if self.aliases else "")
            + f"; failed {len(self.failures)}"
        )


@dataclass
class Run:
    """Where outputs go, the embeddings wanted, and the run's manifest and summary."""

    model_name: str
    out_dir: Path
    wanted: EmbeddingIdentity
    dtype_requested: str
    manifest: Manifest
    summary: RunSummary = field(default_factory=RunSummary)
    stats: dict[InputFile, os.stat_result] = field(default_factory=dict)
    pending: list[ManifestRecord] = field(default_factory=list)

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.wanted.kinds

    @property
    def store_dtype(self) -> str:
        return self.wanted.store_dtype

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
            ManifestRecord(
                path=str(item.relative),
                status=status,
                source=str(item.path),
                size=stat.st_size if stat else None,
                mtime_ns=stat.st_mtime_ns if stat else None,
                duration=info.duration if info else None,
                sample_rate=info.sample_rate if info else None,
                channels=info.channels if info else None,
                model=self.model_name,
                config_fingerprint=self.wanted.config,
                kinds=self.wanted.kinds,
                store_dtype=self.wanted.store_dtype,
                dtype=self.wanted.dtype,
                dtype_requested=self.dtype_requested,
                embedding_version=self.wanted.code,
                hearfuse_version=__version__,
                output=str(item.output) if status == "ok" else None,
                error=error,
                alias_of=str(alias_of) if alias_of is not None else None,
                **now(),
            )
        )
        if status == "failed":
            self.summary.failures.append(Failure(str(item.relative), error))
        elif status == "alias":
            self.summary.aliases += 1

    def keep(self, record: ManifestRecord) -> None:
        """Record that a file made by another code version stands for this one (``--reuse-other-code``)."""
        self.pending.append(dataclasses.replace(record, reused_under_version=self.wanted.code, **now()))
        self.summary.reused += 1

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
        """Commit each clip's written output, or record why it failed, then write the batch's records."""
        for (item, info), result in zip(batch, results):
            if isinstance(result, str):
                self.record(item, "failed", info, result)
            else:
                self.commit(item, info, result)
        self.flush()


def why_again(record: ManifestRecord | None, stat: os.stat_result, run: Run, reuse_other_code: bool) -> list[str]:
    """Why an input must be embedded (again): empty when its record shows it done as wanted, from the
    same source file, with its output still there. ``None`` record: never embedded, no reason to say."""
    if record is None or not record.embedded:
        return [] if record is None or record.status != "ok" else ["its record names no output"]
    reasons = record.identity.why_not_reusable_for(run.wanted, any_code=reuse_other_code)
    if (record.size, record.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
        reasons.append("the audio file changed (size or modification time)")
    if not (run.out_dir / str(record.output)).is_file():
        reasons.append("its output file is gone")
    return reasons


def prepare_run(
    config: FusionConfig,
    inputs: Sequence[str | Path],
    out_dir: Path,
    wanted: EmbeddingIdentity,
    *,
    dtype_requested: str,
    shard: tuple[int, int] | None = None,
    reuse_other_code: bool = False,
) -> tuple[Run, list[tuple[InputFile, AudioInfo]]]:
    """Everything a run does before embedding: find the inputs, record the unusable ones, skip what a
    manifest shows done as wanted (saying, one line per cause, why the others are embedded again), read
    the headers of the rest."""
    unknown = set(wanted.kinds) - set(KINDS)
    if unknown or not wanted.kinds:
        raise UsageError(f"kinds must be some of {KINDS}, got {list(wanted.kinds)}")
    if wanted.store_dtype not in STORE_DTYPES:
        raise UsageError(f"store dtype must be one of {', '.join(STORE_DTYPES)}, got {wanted.store_dtype!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_file(out_dir, wanted.config), json.dumps(config.to_dict(), indent=2))
    discovery = discover(inputs)
    previous = read_manifests(out_dir)
    run = Run(config.name, out_dir, wanted, dtype_requested, Manifest(out_dir, shard))
    for entry in discovery.unusable:  # reported, never silently dropped
        if shard is None or in_shard(entry.relative, shard):
            run.record(
                InputFile(Path(entry.source), entry.relative), entry.status, error=entry.reason, alias_of=entry.alias_of
            )
    todo: list[tuple[InputFile, AudioInfo]] = []
    again: collections.Counter = collections.Counter()
    for item in discovery.files:
        if shard is not None and not in_shard(item.relative, shard):
            continue
        stat = run.stats[item] = item.path.stat()
        record = previous.get(str(item.relative))
        reasons = why_again(record, stat, run, reuse_other_code)
        if record is not None and record.embedded and not reasons:
            run.summary.skipped += 1
            if record.identity.code != wanted.code:
                run.keep(record)
            continue
        again.update(reasons)
        try:
            todo.append((item, audio_info(item.path)))
        except (AudioError, OSError) as error:
            run.record(item, "failed", error=str(error))
    for reason, count in again.most_common():
        log.info("embedding %d file%s again: %s", count, "" if count == 1 else "s", reason)
    run.summary.again = dict(again)
    run.flush()
    return run, todo


class Progress:
    """The driver's progress bar: files done, audio hours per second, real-time factor."""

    def __init__(self, run: Run, total: int, enabled: bool):
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


def wanted_identity(config: FusionConfig, dtype: str, store_dtype: str, kinds: Sequence[str]) -> EmbeddingIdentity:
    """The embeddings a run of this code is to make."""
    return EmbeddingIdentity(config.fingerprint(), dtype, EMBEDDING_VERSION, store_dtype, tuple(kinds))
