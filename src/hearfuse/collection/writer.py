"""The one-process writer of ``hearfuse embed``: decoding threads ahead of the model, the model, and one
writing thread behind it; each output written under a temporary name and renamed, then recorded, so a
run killed at any point (even SIGKILL) leaves only complete outputs and a rerun resumes."""

from __future__ import annotations

import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio import AudioInfo, load_each
from ..batching import plan_batches
from ..dtypes import dtype_name
from ..files import write_partial
from ..model import FusionModel
from .discovery import InputFile
from .layout import KINDS, stored_array
from .run import Progress, RunSummary, prepare_run, wanted_identity


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


def plan_run_batches(
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
    reuse_other_code: bool = False,
) -> RunSummary:
    """Embed every input file into ``out_dir`` in this process (:mod:`.layout` says what it holds). Files
    a manifest shows done as wanted (:mod:`hearfuse.identity`) are skipped; ``reuse_other_code`` keeps
    those made by another version of the embedding code too, and records that it did."""
    started = time.perf_counter()
    wanted = wanted_identity(model.config, dtype_name(model.autocast_dtype), store_dtype, kinds)
    run, todo = prepare_run(
        model.config,
        inputs,
        Path(out_dir),
        wanted,
        dtype_requested=model.dtype_requested,
        shard=shard,
        reuse_other_code=reuse_other_code,
    )
    bar = Progress(run, len(todo), progress)

    def write_and_settle(batch: list[tuple[InputFile, AudioInfo]], embedded: list) -> None:
        outputs = [run.out_dir / item.output for item, _ in batch]
        run.settle(batch, write_each(embedded, outputs, store_dtype=run.store_dtype))
        bar.update(len(batch))

    try:
        # Decoding threads run ahead of the model and one writer thread behind it (writes and commits
        # stay in order), so neither adds to the model's time; only the writer touches the run.
        with ThreadPoolExecutor(_decode_threads()) as decoder, ThreadPoolExecutor(1) as writer:
            writing: collections.deque = collections.deque()
            for batch, decoding in _decoded_ahead(
                decoder, plan_run_batches(todo, batch_seconds, model.mixed_batch_limit)
            ):
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
