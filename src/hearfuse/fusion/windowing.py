"""Long audio in bounded memory: overlapping windows, stitched on the frame grid.

Self-attention makes activation memory grow with clip length (quadratically in the
attention maps), which is why the paper's models ran out of memory on 10-minute clips.
A clip longer than ``window_seconds`` is cut into windows that start on the model's frame
grid; each window contributes only its *core* frames, which keep at least
``context_seconds`` of real audio on each side (except at the clip's ends). The result has
exactly the frames of a full-context pass, and peak activation memory is that of one window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from .aggregation import LayerAggregation, aggregate_each

if TYPE_CHECKING:  # configs use Windowing without torch
    from torch import Tensor

    from ..upstream.base import Upstream


@dataclass(frozen=True)
class Windowing:
    window_seconds: float
    context_seconds: float

    def __post_init__(self) -> None:
        if self.context_seconds < 0 or self.window_seconds <= 2 * self.context_seconds:
            raise ValueError(
                f"window of {self.window_seconds} s must be longer than twice its context of {self.context_seconds} s"
            )


#: Share of a window its context may take on each side when the model caps the window (AST's
#: 10.24 s): a 5 s context would leave it almost no core.
CAPPED_CONTEXT_SHARE = 0.25


def effective_windowing(upstream: Upstream, windowing: Windowing | None) -> Windowing | None:
    """The windowing a member runs with: the config's, shortened to what the model takes in one call
    (its context then at most a quarter of the window); a model with such a limit is always windowed, one
    that windows clips itself never."""
    if upstream.windows_itself:
        return None
    limit = upstream.max_input_samples
    if limit is None:
        return windowing
    seconds = limit / upstream.sample_rate
    if windowing is None or windowing.window_seconds > seconds:
        context = windowing.context_seconds if windowing else seconds
        return Windowing(seconds, min(context, CAPPED_CONTEXT_SHARE * seconds))
    return windowing


def window_samples(upstream: Upstream, windowing: Windowing, *, scene: bool = False) -> int:
    """Samples in one window: the longest clip that is run in one piece."""
    hop = upstream.frame_hop_samples(scene=scene)
    window = round(windowing.window_seconds * upstream.sample_rate)
    if upstream.max_input_samples is not None:
        window = min(window, upstream.max_input_samples)
    return window // hop * hop


def window_plan(upstream: Upstream, windowing: Windowing, *, scene: bool = False) -> tuple[int, int]:
    """(context frames on each side, core frames) of every window of ``upstream``; a window too short
    to keep any core frame is refused (checked when a model is built, not when a long file comes)."""
    hop = upstream.frame_hop_samples(scene=scene)
    window = window_samples(upstream, windowing, scene=scene)
    # Context of at least one receptive field, so every core frame is computable in its window;
    # models without long-range context (CREPE) need no more, and their windows are exact.
    context = -(-upstream.receptive_field // hop)
    if upstream.context_dependent:
        context = max(context, round(windowing.context_seconds * upstream.sample_rate) // hop)
    core_frames = window // hop - 2 * context
    if core_frames < 1:
        raise ValueError(
            f"window_seconds {windowing.window_seconds:g} is too short for the model's context "
            f"({context} frames of {1000 * hop / upstream.sample_rate:g} ms on each side)"
        )
    return context, core_frames


def windowed_pieces(
    upstream: Upstream,
    audio: Tensor,
    aggregations: Sequence[LayerAggregation],
    windowing: Windowing | None,
    *,
    scene: bool = False,
    lengths: Tensor | None = None,
) -> Iterator[list[Tensor]]:
    """:func:`~.aggregation.aggregate_each` over the whole clip as consecutive frame pieces, one
    ``(n, t_i, C)`` tensor per aggregation in each piece.

    One piece when the clip fits a window; otherwise the core frames of each window in
    order, so a consumer can reduce them without holding them all. Rows of different
    ``lengths`` must all fit one window.
    """
    num_samples = audio.shape[-1]
    hop = upstream.frame_hop_samples(scene=scene)
    window = window_samples(upstream, windowing, scene=scene) if windowing else num_samples
    if num_samples <= window:
        yield aggregate_each(upstream, audio, aggregations, scene=scene, lengths=lengths)
        return
    if lengths is not None:
        raise ValueError("clips of different lengths share a batch only when each fits one window")
    context, core_frames = window_plan(upstream, windowing, scene=scene)
    total = len(upstream.frame_centers_ms(num_samples, scene=scene))
    limit = upstream.max_input_samples
    for first in range(0, total, core_frames):
        last = min(first + core_frames, total)
        start = max(0, min(first - context, (num_samples - window) // hop)) * hop
        end = num_samples if last == total else min(num_samples, start + window)
        if limit is not None and end - start > limit:  # the clip's partial last hop: start one hop later
            start = -(-(end - limit) // hop) * hop
        offset = start // hop
        each = aggregate_each(upstream, audio[:, start:end], aggregations, scene=scene)
        yield [features[:, first - offset : last - offset] for features in each]


def windowed_aggregate(
    upstream: Upstream,
    audio: Tensor,
    aggregations: Sequence[LayerAggregation],
    windowing: Windowing | None,
    *,
    scene: bool = False,
    lengths: Tensor | None = None,
) -> list[Tensor]:
    """:func:`~.aggregation.aggregate_each` over the whole clip, windowed when it is longer than a window."""
    import torch

    pieces = list(windowed_pieces(upstream, audio, aggregations, windowing, scene=scene, lengths=lengths))
    return pieces[0] if len(pieces) == 1 else [torch.cat(parts, dim=1) for parts in zip(*pieces)]
