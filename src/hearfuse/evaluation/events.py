"""Event tasks: frame labels from events, and events decoded from frame probabilities, as the HEAR kit.

The decoding's settings (median filter, minimum duration, threshold) are chosen per validation
check from a small grid and reused at test; :class:`Postprocessing` is one such setting.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.ndimage import median_filter

from . import metrics

#: heareval 2021 ``task_predictions.EVENT_POSTPROCESSING_GRID`` (replaced by a task's
#: ``evaluation_params.event_postprocessing_grid``).
DEFAULT_POSTPROCESSING_GRID = {"median_filter_ms": [250.0], "min_duration": [125.0, 250.0]}


@dataclass(frozen=True)
class Postprocessing:
    """One decoding setting (ms): the keyword arguments of heareval's ``create_events_from_prediction``."""

    median_filter_ms: float = 150.0
    min_duration: float = 60.0
    threshold: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def postprocessing_options(grid: Mapping[str, Sequence[float]]) -> list[Postprocessing]:
    """Every setting of ``grid`` in scikit-learn ``ParameterGrid`` order (keys sorted, last key fastest),
    the order heareval enumerates them in (``get_events_for_all_files``)."""
    unknown = set(grid) - set(Postprocessing.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"event_postprocessing_grid: unknown keys {sorted(unknown)}; "
            f"expected some of {list(Postprocessing.__dataclass_fields__)}"
        )
    keys = sorted(grid)
    return [
        Postprocessing(**dict(zip(keys, map(float, values)))) for values in itertools.product(*(grid[k] for k in keys))
    ]


def choose_postprocessing(
    options: Sequence[Postprocessing], score: Callable[[Postprocessing], float], primary: str
) -> tuple[Postprocessing, float]:
    """The best option on validation and its score.

    heareval (``EventPredictionModel._score_epoch_end``) maps a NaN score to 0.0, sorts
    ``(score, setting)`` pairs descending and takes the first: the highest score, ties going to the
    larger setting in key order. That is kept for higher-is-better metrics (every HEAR task). For a
    lower-is-better primary metric the kit would pick the *worst* setting; hearfuse picks the lowest,
    with NaN ranked worst. The returned score is the raw one (NaN stays NaN).
    """
    metric = metrics.METRICS[primary]
    scored = [(score(option), option) for option in options]

    def key(item: tuple[float, Postprocessing]):
        value, option = item
        if metric.higher_is_better:
            return (0.0 if np.isnan(value) else value, tuple(asdict(option).values()))
        return (metric.rank(value), tuple(-v for v in asdict(option).values()))

    value, option = max(scored, key=key)
    return option, value


def decode_events(
    frame_probabilities: np.ndarray, timestamps: np.ndarray, labels: Sequence[str], setting: Postprocessing
) -> list[dict]:
    """Frame probabilities of one file ``(T, n_labels)`` -> events ``{label, start, end}`` in ms.

    As heareval's ``create_events_from_prediction``: frames sorted by time, a median filter over
    ``round(median_filter_ms / mean hop)`` frames (skipped when that rounds to 0), frames above the
    threshold, runs of consecutive positive frames become events from the first to the last
    frame's timestamp, and events shorter than ``min_duration`` are dropped.
    """
    order = np.argsort(timestamps, kind="stable")
    timestamps, frame_probabilities = np.asarray(timestamps)[order], np.asarray(frame_probabilities)[order]
    if setting.median_filter_ms and len(timestamps) > 1:
        width = int(round(setting.median_filter_ms / float(np.mean(np.diff(timestamps)))))
        if width:
            frame_probabilities = median_filter(frame_probabilities, size=(width, 1))
    active = frame_probabilities > setting.threshold
    events = []
    for label_index, label in enumerate(labels):
        frames = np.flatnonzero(active[:, label_index])
        if not len(frames):
            continue
        breaks = np.flatnonzero(np.diff(frames) > 1)
        for first, last in zip(np.r_[0, breaks + 1], np.r_[breaks, len(frames) - 1]):
            start, end = float(timestamps[frames[first]]), float(timestamps[frames[last]])
            if end - start >= setting.min_duration:
                events.append({"label": label, "start": start, "end": end})
    events.sort(key=lambda event: event["start"])
    return events


def frame_targets(events: list[dict], timestamps: np.ndarray, label_to_index: dict[str, int]) -> np.ndarray:
    """Multi-hot frame labels: a label is on at every timestamp in ``[start, end + 0.0001)`` of one of
    its events (heareval's ``get_labels_for_timestamps`` builds an IntervalTree over that interval)."""
    targets = np.zeros((len(timestamps), len(label_to_index)), dtype=np.float32)
    for event in events:
        inside = (timestamps >= float(event["start"])) & (timestamps < float(event["end"]) + 1e-4)
        targets[inside, label_to_index[str(event["label"])]] = 1.0
    return targets
