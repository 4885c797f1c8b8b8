"""HEAR 2021 scores by name, reproducing ``heareval/score.py`` without heareval, sed_eval or scikit-learn.

HEAR results are only comparable when scored exactly like the evaluation kit, so each function
mirrors what heareval computes through scikit-learn and sed_eval 0.2.1 (`SoundEventScore`),
edge cases included:

* ``top1_acc``/``pitch_acc`` (the same function): argmax of scores vs argmax of targets (first
  index on ties; a multi-hot target counts its first positive class).
* ``chroma_acc``: as top-1, but compares the argmax *indices* mod 12, not the label strings; this is
  pitch class only because HEAR's vocabularies list consecutive MIDI pitches in numeric order.
* ``mAP``: macro mean of per-class average precision (scikit-learn's step integral, ties grouped).
  A class with no positive target scores 0.0, as in scikit-learn >= 1.1; heareval runs of 2021
  (scikit-learn 1.0) got NaN for the whole mean instead.
* ``aucroc``/``d_prime``: macro mean of per-class ROC AUC, or of ``sqrt(2) * Phi^-1(AUC)``. NaN as
  soon as one class has no positive or no negative target (heareval catches the ValueError).
* Event metrics (sed_eval overall/micro scores): only the *files of the predictions* are evaluated,
  each against its references (none if absent); a file present only in the references is ignored.
  Times are ms, divided by 1000.0 as heareval does. Labels go through ``str()`` and dcase_util's
  normalisation (whitespace stripped, ``""``/``"none"`` become no label).

  - ``event_onset_*_fms``: F-measure with sed_eval's default *optimal* matching (a maximum bipartite
    matching of same-label pairs whose onsets differ by <= ``t_collar`` s and, with
    ``evaluate_offset``, whose offsets differ by <= ``max(t_collar, percentage_of_length *
    reference length)``). Precision (recall) is NaN without estimates (references), so F is NaN then.
  - ``segment_1s_er``: ``(S + D + I) / N`` over 1 s segments, each rate divided by ``N + eps`` as
    sed_eval does (so no references and some insertions give about 1e16, not inf).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.stats import norm, rankdata

Event = Mapping[str, Any]
"""One HEAR event: ``{"label": str, "start": ms, "end": ms}``."""
EventsByFile = Mapping[str, Sequence[Event]]

_EPS = float(np.spacing(1))  # sed_eval's eps in its rate denominators


@dataclass(frozen=True)
class Counts:
    """How a score that is a function of counts summed over its items (clips, or audio files of events)
    is computed: ``per_item(predictions, targets, label_vocabulary=..., **params)`` gives each item's
    counts ``(items, k)`` and ``score`` the score of summed counts ``(..., k) -> (...)``. The metric's
    own function is ``score`` of the sum, so a resample of the items (repeats counting again) is scored
    exactly by summing its items' counts: how the bootstrap (:mod:`.uncertainty`) scores a thousand
    resamples without matching events a thousand times."""

    per_item: Callable[..., np.ndarray]
    score: Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Metric:
    """A HEAR score: ``fn`` with the parameters heareval gives it under ``name``. For the bootstrap,
    ``counts`` when the score is a function of per-item counts summed over the items, or ``weighted``
    when it can score many resamples given as weights (how often each item was drawn) at once:
    ``weighted(predictions, targets, weights (resamples, items), label_vocabulary=...) -> (resamples,)``,
    ``fn`` being ``weighted`` with every weight 1."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    counts: Counts | None = None
    weighted: Callable[..., np.ndarray] | None = None

    def __call__(self, predictions: Any, targets: Any, *, label_vocabulary: Sequence[str], **params: Any) -> float:
        return self.fn(predictions, targets, label_vocabulary=label_vocabulary, **{**self.params, **params})

    def item_counts(self, predictions: Any, targets: Any, *, label_vocabulary: Sequence[str]) -> np.ndarray:
        """Each item's counts ``(items, k)`` (:class:`Counts`), with this metric's parameters."""
        if self.counts is None:
            raise ValueError(f"{self.name} is not a function of per-item counts")
        return self.counts.per_item(predictions, targets, label_vocabulary=label_vocabulary, **self.params)

    def rank(self, value: float | None) -> float:
        """Sort key of a score, larger is better and NaN (or None) worst: the one rule for "which score
        is better" (early stopping, grid selection, event decoding). A NaN is never mistaken for the
        best value of a lower-is-better metric; heareval's checkpointing likewise turns a NaN into
        the worst value of its mode (``ModelCheckpoint._update_best_and_save``)."""
        if value is None or math.isnan(value):
            return -math.inf
        return value if self.higher_is_better else -value


# Scene and frame scores: predictions (n, n_labels) scores, targets (n, n_labels) 0/1.


def _scene_arrays(
    predictions: ArrayLike, targets: ArrayLike, label_vocabulary: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(predictions, dtype=np.float64)
    truth = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != truth.shape:
        raise ValueError(f"predictions {scores.shape} and targets {truth.shape} must be equal (n, n_labels)")
    if scores.shape[0] == 0 or scores.shape[1] != len(label_vocabulary):
        raise ValueError(f"need n > 0 rows of {len(label_vocabulary)} labels (the vocabulary), got {scores.shape}")
    return scores, truth


def _ranking_arrays(
    predictions: ArrayLike, targets: ArrayLike, label_vocabulary: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Like scikit-learn, refuse non-finite scores and non-binary targets instead of scoring them."""
    scores, truth = _scene_arrays(predictions, targets, label_vocabulary)
    if not np.isfinite(scores).all():
        raise ValueError("predictions contain NaN or infinity")
    if not np.isin(truth, (0, 1)).all():
        raise ValueError("targets must be 0/1 (one-hot or multi-hot)")
    return scores, truth.astype(bool)


def _hits_and_clips(hits: np.ndarray) -> np.ndarray:
    return np.stack([hits, np.ones_like(hits)], axis=1).astype(np.int64)


def _accuracy(counts: np.ndarray) -> np.ndarray:
    """Accuracy of summed (hits, clips) counts."""
    return counts[..., 0] / counts[..., 1]


def top1_counts(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> np.ndarray:
    """Per clip: (1 if the argmax is the target's, 1)."""
    scores, truth = _scene_arrays(predictions, targets, label_vocabulary)
    return _hits_and_clips(scores.argmax(axis=1) == truth.argmax(axis=1))


def chroma_counts(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> np.ndarray:
    """Per clip: (1 if the argmax is the target's mod 12, 1)."""
    scores, truth = _scene_arrays(predictions, targets, label_vocabulary)
    return _hits_and_clips(scores.argmax(axis=1) % 12 == truth.argmax(axis=1) % 12)


def top1_accuracy(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    return float(_accuracy(top1_counts(predictions, targets, label_vocabulary=label_vocabulary).sum(axis=0)))


def chroma_accuracy(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    """Top-1 accuracy forgiving octave errors: class indices are compared mod 12, as in heareval."""
    return float(_accuracy(chroma_counts(predictions, targets, label_vocabulary=label_vocabulary).sum(axis=0)))


def _average_precisions(truth: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """scikit-learn's AP of every class (sum over distinct thresholds of recall gain times precision)
    for each row of ``weights`` (resamples, items): the items counted as often as their weight (0
    leaves one out); ``(resamples, classes)``.

    Only thresholds where some positive sits add to AP, so per class each item is assigned to the
    first such threshold at or below it: one sparse product sums every resample's weights per
    threshold for all classes at once, and cumulative sums give the true positives and the items
    counted at each. A class without a positive target scores 0."""
    n, classes = scores.shape
    counted_at, positive_at = ([], []), ([], [])  # (items, thresholds) of two indicators, thresholds ascending
    spans = []
    first = 0
    for column, positive in zip(np.ascontiguousarray(scores.T), np.ascontiguousarray(truth.T)):
        order = np.argsort(-column, kind="stable")
        group = np.r_[0, np.cumsum(np.diff(column[order]) != 0)]  # tie groups in rank order
        positive = positive[order]
        thresholds = np.unique(group[positive])
        slot = np.searchsorted(thresholds, group)  # the first threshold at or below each item
        below = slot < len(thresholds)
        counted_at[0].append(order[below])
        counted_at[1].append(first + slot[below])
        positive_at[0].append(order[positive])
        positive_at[1].append(first + slot[positive])
        spans.append(range(first, first + len(thresholds)))
        first += len(thresholds)
    weights = np.asarray(weights, dtype=np.float64)  # sums of counts: exact

    def per_threshold(indicator: tuple[list, list]) -> np.ndarray:
        items, thresholds = np.concatenate(indicator[0]), np.concatenate(indicator[1])
        starts = np.r_[0, np.cumsum(np.bincount(thresholds, minlength=first))]  # already grouped by threshold
        matrix = csr_matrix((np.ones(len(items)), items, starts), shape=(first, n))
        return np.asarray(matrix @ weights.T).T  # (resamples, thresholds)

    counted, gained = per_threshold(counted_at), per_threshold(positive_at)
    ap = np.zeros((len(weights), classes))
    for c, span in enumerate(spans):
        if not len(span):
            continue
        true_positives = np.cumsum(gained[:, span.start : span.stop], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # thresholds whose items were all left out: 0/0
            precision = true_positives / np.cumsum(counted[:, span.start : span.stop], axis=1)
            recall = true_positives / true_positives[:, -1:]
        terms = np.where(gained[:, span.start : span.stop] > 0, np.diff(recall, axis=1, prepend=0.0) * precision, 0.0)
        ap[:, c] = np.where(true_positives[:, -1] > 0, terms.sum(axis=1), 0.0)
    return ap


def _roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), equal to scikit-learn's trapezoids."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def weighted_mean_average_precision(
    predictions: ArrayLike, targets: ArrayLike, weights: np.ndarray, *, label_vocabulary: Sequence[str]
) -> np.ndarray:
    """mAP of each row of ``weights`` (resamples, items)."""
    scores, truth = _ranking_arrays(predictions, targets, label_vocabulary)
    return _average_precisions(truth, scores, weights).mean(axis=1)


def mean_average_precision(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    ones = np.ones((1, len(np.asarray(targets))), dtype=np.int64)
    return float(weighted_mean_average_precision(predictions, targets, ones, label_vocabulary=label_vocabulary)[0])


def _class_aucs(predictions: ArrayLike, targets: ArrayLike, label_vocabulary: Sequence[str]) -> np.ndarray:
    scores, truth = _ranking_arrays(predictions, targets, label_vocabulary)
    return np.array([_roc_auc(truth[:, c], scores[:, c]) for c in range(scores.shape[1])])


def aucroc(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    return float(np.mean(_class_aucs(predictions, targets, label_vocabulary)))


def d_prime(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    """Sensitivity index from AUC under equal-variance Gaussians; +-inf where a class AUC is 1 or 0."""
    return float(np.mean(norm.ppf(_class_aucs(predictions, targets, label_vocabulary)) * np.sqrt(2.0)))


# Event scores (sed_eval): predictions and targets map file id -> events in ms.


class _Events(NamedTuple):
    labels: list[str | None]
    onset: np.ndarray  # seconds
    offset: np.ndarray


def _dcase_label(label: Any) -> str | None:
    text = str(label).strip()
    return None if text == "" or text.lower() == "none" else text


def _events(events: Sequence[Event]) -> _Events:
    onset = np.array([e["start"] for e in events], dtype=np.float64) / 1000.0
    offset = np.array([e["end"] for e in events], dtype=np.float64) / 1000.0
    if not (np.isfinite(onset).all() and np.isfinite(offset).all()):
        raise ValueError("event times must be finite")
    return _Events([_dcase_label(e["label"]) for e in events], onset, offset)


def _indices_by_label(labels: list[str | None]) -> dict[str | None, np.ndarray]:
    groups: dict[str | None, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return {label: np.array(indices) for label, indices in groups.items()}


def _hits(ref: _Events, est: _Events, t_collar: float, evaluate_offset: bool, percentage_of_length: float) -> int:
    """Size of a maximum matching of valid (reference, estimate) pairs: sed_eval's 'optimal' Ntp."""
    ref_by_label, est_by_label = _indices_by_label(ref.labels), _indices_by_label(est.labels)
    hits = 0
    for label in ref_by_label.keys() & est_by_label.keys():
        r, e = ref_by_label[label], est_by_label[label]
        valid = np.abs(ref.onset[r, None] - est.onset[None, e]) <= t_collar
        if evaluate_offset:
            tolerance = np.maximum(t_collar, percentage_of_length * (ref.offset[r] - ref.onset[r]))
            valid &= np.abs(ref.offset[r, None] - est.offset[None, e]) <= tolerance[:, None]
        if valid.any():
            hits += int(np.count_nonzero(maximum_bipartite_matching(csr_matrix(valid), perm_type="column") >= 0))
    return hits


def _check_event_params(t_collar: float, percentage_of_length: float) -> None:
    if t_collar <= 0 or not 0 <= percentage_of_length <= 1:
        raise ValueError("need t_collar > 0 and 0 <= percentage_of_length <= 1")


def event_counts(
    predictions: EventsByFile,
    targets: EventsByFile,
    *,
    label_vocabulary: Sequence[str],
    t_collar: float,
    evaluate_offset: bool,
    percentage_of_length: float = 0.5,
) -> np.ndarray:
    """Per file of the predictions: (matched pairs, reference events, estimated events)."""
    _check_event_params(t_collar, percentage_of_length)
    counts = np.zeros((len(predictions), 3), dtype=np.int64)
    for row, (file_id, estimated) in enumerate(predictions.items()):
        ref, est = _events(targets.get(file_id, ())), _events(estimated)
        counts[row] = _hits(ref, est, t_collar, evaluate_offset, percentage_of_length), len(ref.labels), len(est.labels)
    return counts


def _f_measure(counts: np.ndarray) -> np.ndarray:
    """F of summed (hits, references, estimates): NaN without estimates or without references, 0 when
    precision and recall are both 0."""
    hits, references, estimates = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(estimates > 0, hits / estimates, math.nan)
        recall = np.where(references > 0, hits / references, math.nan)
        f = 2.0 * precision * recall / (precision + recall)
    return np.where((precision == 0) & (recall == 0), 0.0, f)


def event_f_measure(
    predictions: EventsByFile,
    targets: EventsByFile,
    *,
    label_vocabulary: Sequence[str],
    t_collar: float,
    evaluate_offset: bool,
    percentage_of_length: float = 0.5,
) -> float:
    """sed_eval's overall event-based F-measure (onset always evaluated).

    ``label_vocabulary`` is unused, as in sed_eval's overall score: labels only need to be equal.
    """
    counts = event_counts(
        predictions,
        targets,
        label_vocabulary=label_vocabulary,
        t_collar=t_collar,
        evaluate_offset=evaluate_offset,
        percentage_of_length=percentage_of_length,
    )
    return float(_f_measure(counts.sum(axis=0)))


def _segment_roll(
    events: _Events, column: Mapping[str | None, int], time_resolution: float, n_segments: int
) -> np.ndarray:
    """sed_eval's event roll, zero-padded to ``n_segments``.

    Events are written into a view as long as the events' own roll, so that slicing (negative
    onsets included) hits the same segments as in sed_eval.
    """
    roll = np.zeros((n_segments, len(column)), dtype=bool)
    own = roll[: math.ceil(max(0.0, events.offset.max(initial=0.0)) / time_resolution)]
    first = np.floor(events.onset / time_resolution).astype(int)
    stop = np.ceil(events.offset / time_resolution).astype(int)
    for label, a, b in zip(events.labels, first, stop):
        if label not in column:
            raise ValueError(f"event label {label!r} is not in label_vocabulary")
        own[a:b, column[label]] = True
    return roll


def segment_counts(
    predictions: EventsByFile,
    targets: EventsByFile,
    *,
    label_vocabulary: Sequence[str],
    time_resolution: float = 1.0,
) -> np.ndarray:
    """Per file of the predictions: (substitutions, deletions, insertions, active reference labels) over
    its segments; per segment, S = min(Nref, Nsys) - Ntp, D = max(0, Nref - Nsys), I = max(0, Nsys - Nref);
    each file lasts until its last offset."""
    if time_resolution <= 0:
        raise ValueError("time_resolution must be > 0")
    column: dict[str | None, int] = {}
    for i, label in enumerate(label_vocabulary):
        column.setdefault(label, i)
    counts = np.zeros((len(predictions), 4), dtype=np.int64)
    for row, (file_id, estimated) in enumerate(predictions.items()):
        ref, est = _events(targets.get(file_id, ())), _events(estimated)
        length = max(0.0, ref.offset.max(initial=0.0), est.offset.max(initial=0.0))
        n_segments = math.ceil(length / time_resolution)
        ref_roll = _segment_roll(ref, column, time_resolution, n_segments)
        est_roll = _segment_roll(est, column, time_resolution, n_segments)
        ref_active, est_active = ref_roll.sum(axis=1), est_roll.sum(axis=1)
        both = (ref_roll & est_roll).sum(axis=1)
        counts[row] = (
            (np.minimum(ref_active, est_active) - both).sum(),
            np.maximum(0, ref_active - est_active).sum(),
            np.maximum(0, est_active - ref_active).sum(),
            ref_active.sum(),
        )
    return counts


def _error_rate(counts: np.ndarray) -> np.ndarray:
    """(S + D + I) / N of summed counts, each rate divided by ``N + eps`` as sed_eval does."""
    references = counts[..., 3] + _EPS
    return counts[..., 0] / references + counts[..., 1] / references + counts[..., 2] / references


def segment_error_rate(
    predictions: EventsByFile,
    targets: EventsByFile,
    *,
    label_vocabulary: Sequence[str],
    time_resolution: float = 1.0,
) -> float:
    """sed_eval's overall segment-based error rate (:func:`segment_counts`)."""
    counts = segment_counts(predictions, targets, label_vocabulary=label_vocabulary, time_resolution=time_resolution)
    return float(_error_rate(counts.sum(axis=0)))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("top1_acc", top1_accuracy, counts=Counts(top1_counts, _accuracy)),
        Metric("pitch_acc", top1_accuracy, counts=Counts(top1_counts, _accuracy)),
        Metric("chroma_acc", chroma_accuracy, counts=Counts(chroma_counts, _accuracy)),
        Metric("mAP", mean_average_precision, weighted=weighted_mean_average_precision),
        Metric("d_prime", d_prime),
        Metric("aucroc", aucroc),
        Metric(
            "event_onset_200ms_fms",
            event_f_measure,
            params={"t_collar": 0.2, "evaluate_offset": False},
            counts=Counts(event_counts, _f_measure),
        ),
        Metric(
            "event_onset_50ms_fms",
            event_f_measure,
            params={"t_collar": 0.05, "evaluate_offset": False},
            counts=Counts(event_counts, _f_measure),
        ),
        Metric(
            "event_onset_offset_50ms_20perc_fms",
            event_f_measure,
            params={"t_collar": 0.05, "evaluate_offset": True, "percentage_of_length": 0.2},
            counts=Counts(event_counts, _f_measure),
        ),
        Metric(
            "segment_1s_er",
            segment_error_rate,
            higher_is_better=False,
            params={"time_resolution": 1.0},
            counts=Counts(segment_counts, _error_rate),
        ),
    )
}
"""Every HEAR 2021 score by its task-metadata name."""

#: What early stopping monitors when a task turns scoring off (``use_scoring_for_early_stopping: false``):
#: not a score of predictions, but ranked by the same rule (lower is better, NaN worst).
VALIDATION_LOSS = Metric("validation_loss", lambda *args, **kwargs: math.nan, higher_is_better=False)


#: Words that mark a lower-is-better score in the name of a metric outside :data:`METRICS`.
_LOWER_IS_BETTER_HINTS = ("error", "loss", "eer", "wer", "cer", "der")


def higher_is_better(name: str | None) -> bool:
    """The metric's direction, from :data:`METRICS`; a name outside it (a score another tool recorded)
    is read as lower-is-better when it names an error or a loss."""
    if name in METRICS:
        return METRICS[name].higher_is_better
    return not any(hint in (name or "").lower() for hint in _LOWER_IS_BETTER_HINTS)


def score(name: str, predictions: Any, targets: Any, *, label_vocabulary: Sequence[str], **params: Any) -> float:
    """Score by HEAR name; ``params`` override the metric's defaults (e.g. ``t_collar``)."""
    try:
        metric = METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None
    return metric(predictions, targets, label_vocabulary=label_vocabulary, **params)
