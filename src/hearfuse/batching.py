"""Which clips are embedded together: one rule for `hearfuse embed` (and its Ray path) and the
evaluation cache.

Clips of identical length and rate always share batches. Clips of different lengths share one
only when the model can pad them without changing any output (:attr:`FusionModel.mixed_batch_limit`:
layer-norm front ends with an attention mask, CREPE) and each fits that limit; group-norm front
ends normalise over the whole input, so their clips keep equal-length batches. A batch holds at
most ``batch_seconds`` of *padded* audio (its longest clip times its size), and padding may take at
most a fifth of it, so a 1 s clip never rides with a 30 s one.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from .audio import AudioInfo

T = TypeVar("T")

#: The least share of a mixed batch's padded samples that must be real audio.
MIN_FILL = 0.8


def consecutive_batches(
    items: Iterable[tuple[T, AudioInfo]], batch_seconds: float, mix_up_to_seconds: float = 0.0
) -> Iterator[list[tuple[T, AudioInfo]]]:
    """Group consecutive clips, up to ``batch_seconds`` of padded audio a batch: clips of identical
    length and rate, or clips of any lengths up to ``mix_up_to_seconds`` each (0: never mixed).

    Lazy, so ``items`` may read each clip's header only when its batch is formed.
    """
    batch: list[tuple[T, AudioInfo]] = []
    longest = total = 0.0
    mixable = True
    for pair in items:
        info = pair[1]
        if batch:
            first = batch[0][1]
            same = (first.frames, first.sample_rate) == (info.frames, info.sample_rate)
            mixes = mixable and info.duration <= mix_up_to_seconds
            padded = (len(batch) + 1) * max(longest, info.duration)
            if not (same or mixes) or padded > batch_seconds or total + info.duration < MIN_FILL * padded:
                yield batch
                batch, longest, total, mixable = [], 0.0, 0.0, True
        batch.append(pair)
        longest, total = max(longest, info.duration), total + info.duration
        mixable = mixable and info.duration <= mix_up_to_seconds
    if batch:
        yield batch


def plan_batches(
    items: list[tuple[T, AudioInfo]],
    batch_seconds: float,
    name: Callable[[T], str] = str,
    mix_up_to_seconds: float = 0.0,
) -> list[list[tuple[T, AudioInfo]]]:
    """:func:`consecutive_batches` after sorting by duration (then rate, length and ``name``), so
    equal lengths anywhere in the input share batches, mixed batches are length buckets of similar
    durations, and the plan does not depend on the input's order."""
    ordered = sorted(items, key=lambda pair: (pair[1].duration, pair[1].sample_rate, pair[1].frames, name(pair[0])))
    return list(consecutive_batches(ordered, batch_seconds, mix_up_to_seconds))
