"""Which clips are embedded together: one rule for `hearfuse embed` (and its Ray path) and the
evaluation cache.

Group-norm front ends (wav2vec2 Base) normalise over the whole input, so padding a clip would
change its embedding; clips are therefore batched only with clips of identical length and rate.
Equal-length clips, common in benchmarks, batch exactly.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from .audio import AudioInfo

T = TypeVar("T")


def consecutive_batches(
    items: Iterable[tuple[T, AudioInfo]], batch_seconds: float
) -> Iterator[list[tuple[T, AudioInfo]]]:
    """Group consecutive clips of identical length and rate, up to ``batch_seconds`` of audio a batch.

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
    items: list[tuple[T, AudioInfo]], batch_seconds: float, name: Callable[[T], str] = str
) -> list[list[tuple[T, AudioInfo]]]:
    """:func:`consecutive_batches` after sorting by length (then by ``name``), so equal lengths
    anywhere in the input share batches, and the plan does not depend on the input's order."""
    ordered = sorted(items, key=lambda pair: (pair[1].frames, pair[1].sample_rate, name(pair[0])))
    return list(consecutive_batches(ordered, batch_seconds))
