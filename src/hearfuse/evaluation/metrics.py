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
class Metric:
    """A HEAR score: ``fn`` with the parameters heareval gives it under ``name``."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, predictions: Any, targets: Any, *, label_vocabulary: Sequence[str], **params: Any) -> float:
        return self.fn(predictions, targets, label_vocabulary=label_vocabulary, **{**self.params, **params})

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


def top1_accuracy(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    scores, truth = _scene_arrays(predictions, targets, label_vocabulary)
    return int(np.count_nonzero(scores.argmax(axis=1) == truth.argmax(axis=1))) / len(truth)


def chroma_accuracy(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    """Top-1 accuracy forgiving octave errors: class indices are compared mod 12, as in heareval."""
    scores, truth = _scene_arrays(predictions, targets, label_vocabulary)
    return int(np.count_nonzero(scores.argmax(axis=1) % 12 == truth.argmax(axis=1) % 12)) / len(truth)


def _average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """scikit-learn's AP: sum over distinct thresholds of recall gain times precision."""
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    true_positives = np.cumsum(positive)[last_of_tie]
    if true_positives[-1] == 0:
        return 0.0
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), equal to scikit-learn's trapezoids."""
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_average_precision(predictions: ArrayLike, targets: ArrayLike, *, label_vocabulary: Sequence[str]) -> float:
    scores, truth = _ranking_arrays(predictions, targets, label_vocabulary)
    return float(np.mean([_average_precision(truth[:, c], scores[:, c]) for c in range(scores.shape[1])]))


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
    if t_collar <= 0 or not 0 <= percentage_of_length <= 1:
        raise ValueError("need t_collar > 0 and 0 <= percentage_of_length <= 1")
    n_hits = n_ref = n_est = 0
    for file_id, estimated in predictions.items():
        ref, est = _events(targets.get(file_id, ())), _events(estimated)
        n_ref += len(ref.labels)
        n_est += len(est.labels)
        n_hits += _hits(ref, est, t_collar, evaluate_offset, percentage_of_length)
    precision = n_hits / n_est if n_est else math.nan
    recall = n_hits / n_ref if n_ref else math.nan
    if precision == 0 and recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


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


def segment_error_rate(
    predictions: EventsByFile,
    targets: EventsByFile,
    *,
    label_vocabulary: Sequence[str],
    time_resolution: float = 1.0,
) -> float:
    """sed_eval's overall segment-based error rate: per segment, S = min(Nref, Nsys) - Ntp,
    D = max(0, Nref - Nsys), I = max(0, Nsys - Nref); each file lasts until its last offset."""
    if time_resolution <= 0:
        raise ValueError("time_resolution must be > 0")
    column: dict[str | None, int] = {}
    for i, label in enumerate(label_vocabulary):
        column.setdefault(label, i)
    subs = deletions = insertions = n_ref = 0
    for file_id, estimated in predictions.items():
        ref, est = _events(targets.get(file_id, ())), _events(estimated)
        length = max(0.0, ref.offset.max(initial=0.0), est.offset.max(initial=0.0))
        n_segments = math.ceil(length / time_resolution)
        ref_roll = _segment_roll(ref, column, time_resolution, n_segments)
        est_roll = _segment_roll(est, column, time_resolution, n_segments)
        ref_active, est_active = ref_roll.sum(axis=1), est_roll.sum(axis=1)
        both = (ref_roll & est_roll).sum(axis=1)
        subs += int((np.minimum(ref_active, est_active) - both).sum())
        deletions += int(np.maximum(0, ref_active - est_active).sum())
        insertions += int(np.maximum(0, est_active - ref_active).sum())
        n_ref += int(ref_active.sum())
    return float(subs / (n_ref + _EPS) + deletions / (n_ref + _EPS) + insertions / (n_ref + _EPS))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("top1_acc", top1_accuracy),
        Metric("pitch_acc", top1_accuracy),
        Metric("chroma_acc", chroma_accuracy),
        Metric("mAP", mean_average_precision),
        Metric("d_prime", d_prime),
        Metric("aucroc", aucroc),
        Metric("event_onset_200ms_fms", event_f_measure, params={"t_collar": 0.2, "evaluate_offset": False}),
        Metric("event_onset_50ms_fms", event_f_measure, params={"t_collar": 0.05, "evaluate_offset": False}),
        Metric(
            "event_onset_offset_50ms_20perc_fms",
            event_f_measure,
            params={"t_collar": 0.05, "evaluate_offset": True, "percentage_of_length": 0.2},
        ),
        Metric("segment_1s_er", segment_error_rate, higher_is_better=False, params={"time_resolution": 1.0}),
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
