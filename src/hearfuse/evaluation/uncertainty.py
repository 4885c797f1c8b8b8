"""How sure a score is, and whether one model really beats another: the paired bootstrap over a task's
test items, from the predictions stored beside each result (:mod:`.predictions`).

A task's test set is a sample; another sample of the same size would give other scores. The bootstrap
draws :data:`RESAMPLES` resamples of the test items with replacement (clips of a scene task, audio
files of an event task: an event score is not a sum over independent events, the events of one file
share its recording), scores each with the task's own metric function (:mod:`.metrics`), and reads a
95 % interval off the resampled scores: their 2.5th and 97.5th percentiles, taken as order statistics
(the 25th and 975th of 1,000 sorted values: Efron and Tibshirani's percentile interval, which needs no
interpolation, so an infinite ``d_prime`` on some resamples stays an order statistic).

**Paired**: every model compared on a task is scored on the *same* resamples (the same positions in
its test items, sorted by file name; the draw depends only on the seed, the fold and the number of
items). A difference between two models is computed resample by resample, so what their test items
share (easy and hard clips alike) cancels; its interval is usually far narrower than the two scores'
intervals suggest, and two identical models differ by exactly 0 on every resample. A difference is
*significant* at the 5 % level when its interval excludes 0 (no correction for comparing several
models).

:func:`compare` is the entry point: any number of models' predictions on one task (read back with
:func:`.predictions.load`, or as :func:`.evaluate.score_task` returns them), each score with its
interval, each difference to the best model (or a named ``reference``) and to an optional ``baseline``.

**k-fold tasks** report the mean of the folds' scores; each fold has its own test set, scored by its
own fitted model. Each fold is resampled on its own (a stratified bootstrap: a resample keeps every
fold's size), and a resample of the task's score is the mean of its folds' resampled scores, NaN
folds left out as the kit's aggregation does. Per-fold intervals are given too.

**What an interval covers**: the test sample only. The trained probe is held fixed; the variation
of training itself (another seed, another draw of training clips) is not in it; ``hearfuse evaluate
--seeds N`` measures the training seed's part for the MLP probe (:func:`.evaluate.seed_spread`).

:data:`RESAMPLES` = 1,000: a percentile interval rests on its tails; with 1,000 resamples, 25 lie
beyond each end, and an end's Monte Carlo error is about sqrt(0.025 x 0.975 / 1000) = 0.5 percentile
points, a few per cent of the interval's width (standard errors alone would need 200). Metrics of summed
counts (accuracies, event F-measures, segment error rate) score 1,000 resamples in milliseconds
(:class:`.metrics.Counts`), mAP scores them as weights of its items (each class's ranking sorted once),
ROC AUC and d' (no task's primary metric) score each resample anew.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .metrics import METRICS
from .predictions import FoldPredictions, Predictions

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
#: Resamples scored at once from summed counts: bounds the (resamples, items) multiplicity matrix.
_CHUNK = 128


@dataclass(frozen=True)
class Interval:
    """A percentile interval of resampled values; ``undefined``: resamples on which the score is not
    defined (NaN: e.g. an AUC whose resample holds no positive of some class), left out."""

    low: float
    high: float
    undefined: int = 0

    def excludes(self, value: float = 0.0) -> bool:
        """``value`` lies outside the interval; never for an undefined (NaN) interval."""
        return value < self.low or value > self.high


@dataclass(frozen=True)
class Estimate:
    """A score (or a difference of scores) on the whole test set with its interval: the task's (the
    mean over folds for a k-fold task), and each fold's in ``folds``."""

    value: float
    interval: Interval
    folds: tuple[Estimate, ...] = ()

    @property
    def significant(self) -> bool:
        """For a difference: its interval excludes 0."""
        return self.interval.excludes(0.0)


def resample_items(sizes: Sequence[int], resamples: int = RESAMPLES, seed: int = SEED) -> list[np.ndarray]:
    """Per fold, ``(resamples, items)`` positions drawn with replacement, from a stream of its own
    (seed, fold): the same for every model whose folds have these sizes."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    return [np.random.default_rng([seed, fold]).integers(0, n, size=(resamples, n)) for fold, n in enumerate(sizes)]


def fold_replicates(fold: FoldPredictions, metric: str, labels: Sequence[str], items: np.ndarray) -> np.ndarray:
    """``metric`` on each resample ``items[b]`` of a fold's items: ``(resamples,)``. A metric of summed
    counts sums its items' counts, a weighted one (mAP) scores resamples as weights, and any other
    scores every resample with its function."""
    labels = list(labels)
    scoring = METRICS[metric]
    if scoring.counts is None and (scoring.weighted is None or fold.probabilities is None):
        return np.array([fold.score(metric, labels, rows) for rows in items], dtype=np.float64)
    per_item = fold.item_counts(metric, labels) if scoring.counts is not None else None
    scores = []
    for first in range(0, len(items), _CHUNK):
        chunk = items[first : first + _CHUNK]
        offsets = chunk + len(fold) * np.arange(len(chunk))[:, None]
        weights = np.bincount(offsets.ravel(), minlength=len(chunk) * len(fold)).reshape(len(chunk), -1)
        if per_item is not None:
            scores.append(scoring.counts.score(weights @ per_item))
        else:
            scores.append(scoring.weighted(fold.probabilities, fold.targets, weights, label_vocabulary=labels))
    return np.concatenate(scores).astype(np.float64)


def percentile_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the defined values, as order
    statistics (``inverted_cdf``); NaN ends when no value is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    undefined = len(values) - len(defined)
    if not len(defined):
        return Interval(math.nan, math.nan, undefined)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(defined, [tail, 1.0 - tail], method="inverted_cdf")
    return Interval(float(low), float(high), undefined)


class PairedBootstrap:
    """The resamples of one task's test items, shared by every model compared on it.

    ``files``: each fold's test files; ``items``: each fold's resamples ``(resamples, items)`` as
    positions in its sorted file names (:meth:`drawn` draws them). A model tested on other files cannot
    be paired and raises ``ValueError``. Each model's resampled scores are computed once and kept, so
    comparing n models costs n models' resampling."""

    def __init__(
        self,
        files: Sequence[Sequence[str]],
        items: Sequence[np.ndarray],
        metric: str,
        confidence: float = CONFIDENCE,
    ):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
        self.files = [tuple(sorted(names)) for names in files]
        self.items, self.metric, self.confidence = list(items), metric, confidence
        self._replicates: dict[int, tuple[Predictions, np.ndarray, np.ndarray]] = {}

    @classmethod
    def drawn(
        cls,
        predictions: Predictions,
        metric: str,
        *,
        resamples: int = RESAMPLES,
        seed: int = SEED,
        confidence: float = CONFIDENCE,
    ) -> PairedBootstrap:
        """The bootstrap of the task ``predictions`` were tested on: :func:`resample_items` of its folds."""
        files = [fold.files for fold in predictions.folds]
        return cls(files, resample_items([len(names) for names in files], resamples, seed), metric, confidence)

    def replicates(self, predictions: Predictions) -> tuple[np.ndarray, np.ndarray]:
        """The whole-test-set fold scores ``(folds,)`` and the resampled ones ``(folds, resamples)``."""
        kept = self._replicates.get(id(predictions))
        if kept is not None and kept[0] is predictions:
            return kept[1], kept[2]
        if list(_tested_files(predictions)) != self.files:
            raise ValueError("it was tested on other files than the models it is compared with")
        folds = [fold.in_file_order() for fold in predictions.folds]
        labels = list(predictions.labels)
        whole = np.array([fold.score(self.metric, labels) for fold in folds], dtype=np.float64)
        resampled = np.stack(
            [fold_replicates(fold, self.metric, labels, items) for fold, items in zip(folds, self.items)]
        )
        self._replicates[id(predictions)] = (predictions, whole, resampled)
        return whole, resampled

    def score(self, predictions: Predictions) -> Estimate:
        """The model's score (the mean over folds) with its intervals."""
        return self._estimate(*self.replicates(predictions))

    def difference(self, model: Predictions, reference: Predictions) -> Estimate:
        """``model``'s score minus ``reference``'s, resample by resample (positive: ``model`` scores
        higher, whichever way the metric is better)."""
        whole, resampled = self.replicates(model)
        reference_whole, reference_resampled = self.replicates(reference)
        with np.errstate(invalid="ignore"):  # inf - inf (two perfect d_primes) is undefined
            return self._estimate(whole - reference_whole, resampled - reference_resampled)

    def _estimate(self, whole: np.ndarray, resampled: np.ndarray) -> Estimate:
        return Estimate(
            float(_fold_mean(whole[:, None])[0]),
            percentile_interval(_fold_mean(resampled), self.confidence),
            tuple(
                Estimate(float(value), percentile_interval(fold, self.confidence))
                for value, fold in zip(whole, resampled)
            ),
        )


def _tested_files(predictions: Predictions) -> tuple[tuple[str, ...], ...]:
    """Each fold's test files, sorted: what two models must share to be paired."""
    return tuple(tuple(sorted(fold.files)) for fold in predictions.folds)


def _fold_mean(values: np.ndarray) -> np.ndarray:
    """Mean over folds (axis 0) of the defined values, as the kit aggregates folds; NaN where none is."""
    defined = ~np.isnan(values)
    total = np.where(defined, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined.any(axis=0), total / defined.sum(axis=0), math.nan)


@dataclass(frozen=True)
class Comparison:
    """Every model of one task: its score with intervals, its difference to ``reference`` and, when a
    ``baseline`` was named and has a score, its difference to the baseline (model minus each; the
    reference's own difference to itself is exactly 0, as is the baseline's)."""

    metric: str
    higher_is_better: bool
    reference: str
    scores: dict[str, Estimate]
    differences: dict[str, Estimate]
    unavailable: dict[str, str]  # model -> why it has no interval
    baseline: str | None = None
    baseline_differences: dict[str, Estimate] = field(default_factory=dict)


def compare(
    models: Mapping[str, Predictions],
    metric: str,
    *,
    higher_is_better: bool | None = None,
    reference: str | None = None,
    baseline: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Scores and paired differences of ``models`` (name -> one task's test predictions) on the task's
    ``metric``, all on the same resamples. ``reference``: the model every other is compared with
    (default: the best whole-test-set score, the first on ties, ``higher_is_better`` defaulting to the
    metric's); ``baseline``: a second model to compare every other with (none when it has no score
    here). Models tested on other files than most are left out, with the reason."""
    if not models:
        raise ValueError("nothing to compare")
    ranked = (
        METRICS[metric] if higher_is_better is None else replace(METRICS[metric], higher_is_better=higher_is_better)
    )
    files = Counter(_tested_files(predictions) for predictions in models.values()).most_common(1)[0][0]
    common = next(predictions for predictions in models.values() if _tested_files(predictions) == files)
    bootstrap = PairedBootstrap.drawn(common, metric, resamples=resamples, seed=seed, confidence=confidence)
    scores, unavailable = {}, {}
    for name, predictions in models.items():
        try:
            scores[name] = bootstrap.score(predictions)
        except ValueError as error:
            unavailable[name] = str(error)
    if reference is None:
        reference = max(scores, key=lambda name: ranked.rank(scores[name].value))
    elif reference not in scores:
        raise ValueError(f"reference {reference!r} is not among the compared models")

    def against(other: str) -> dict[str, Estimate]:
        return {name: bootstrap.difference(models[name], models[other]) for name in scores}

    baseline = baseline if baseline in scores else None
    return Comparison(
        metric,
        ranked.higher_is_better,
        reference,
        scores,
        against(reference),
        unavailable,
        baseline,
        against(baseline) if baseline is not None else {},
    )
