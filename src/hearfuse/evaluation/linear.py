"""The linear probe: L2-regularised logistic regression on standardised embeddings, solved to its optimum.

This is the field's standard linear probe (CLIP's protocol): softmax cross-entropy (multiclass) or
per-label sigmoid cross-entropy (multilabel; event tasks per frame) minimised on the full batch to a
stated gradient (by a preconditioned Newton method, see :class:`LogisticProblem`),
inputs standardised with the training rows' moments, and the L2 strength chosen on the validation
split among decades, then refined around the best. It has no learning rate and no epochs, so nothing
depends on when a small validation split saturates (the Adam-trained linear layer it replaces kept
barely trained checkpoints there).

The objective is ``mean training loss + l2 / 2 * ||W||^2`` with the bias unpenalised: for each label
of a multilabel task, and for a multiclass task as a whole, this is scikit-learn's
``LogisticRegression`` with ``C = 1 / (l2 * n_train)``. It is strictly convex, so the optimum does not
depend on where the solver starts; warm starts along the search only make it cheaper. Rows are read
in chunks for the loss and gradient, and held once per training set (on the device when they fit),
never copied per candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .downstream import column_moments, free_bytes, loss, probabilities
from .events import Postprocessing
from .protocol import L2_DECADES, L2_REFINEMENT, MAX_ITERATIONS, TOLERANCE, LinearParameters

#: Rows per chunk of the loss and gradient.
CHUNK_ROWS = 32768
#: Conjugate-gradient steps per Newton step, at most.
MAX_CONJUGATE_GRADIENT_STEPS = 500


def standardizer(rows) -> tuple[Tensor, Tensor]:
    """Mean and inverse scale (float64) of the training rows; a constant column keeps scale 1, as
    scikit-learn's ``StandardScaler`` does, instead of blowing rounding noise up."""
    mean, std = column_moments(rows, dtype=torch.float64)
    return mean, torch.where(std > 1e-12 * (1 + mean.abs()), 1.0 / std, torch.ones_like(std))


@dataclass
class LinearPredictor:
    """A fitted linear probe, shaped like the MLP's trained predictor for evaluation's bookkeeping
    (``epochs_run`` counts solver iterations)."""

    params: LinearParameters
    weight: Tensor  # (D, K) float64, on standardised inputs
    bias: Tensor  # (K,)
    mean: Tensor
    scale: Tensor
    iterations: int
    converged: bool
    validation_score: float = math.nan
    monitor: str = "score"
    postprocessing: Postprocessing | None = None

    @property
    def best_epoch(self) -> int:
        return self.iterations

    @property
    def epochs_run(self) -> int:
        return self.iterations

    def logits(self, x, device: str | None = None) -> Tensor:
        """Logits of every row (x may be a memmap), computed in chunks, returned on the CPU."""
        device = device or str(self.weight.device)
        mean, scale = self.mean.to(device), self.scale.to(device)
        weight, bias = self.weight.to(device), self.bias.to(device)
        parts = [
            (standardised(_float64(x[start : start + CHUNK_ROWS], device), mean, scale) @ weight + bias).cpu()
            for start in range(0, len(x), CHUNK_ROWS)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, self.weight.shape[1], dtype=torch.float64)

    def predict(self, x, prediction_type: str, device: str | None = None) -> np.ndarray:
        return probabilities(self.logits(x, device), prediction_type).float().numpy()


def standardised(rows: Tensor, mean: Tensor, scale: Tensor) -> Tensor:
    """Rows standardised in float64 chunk by chunk: stored rounded to float32 instead, the inputs would
    move the optimum at weak penalties by more than the solver's tolerance."""
    return (rows - mean) * scale


def _float64(rows, device: str) -> Tensor:
    return torch.from_numpy(np.array(rows, dtype=np.float64)).to(device)


class LogisticProblem:
    """One training set, held once, that can be fitted for any L2 strength.

    The solver is a truncated Newton method (as liblinear's): each step solves the Newton system
    inexactly by conjugate gradients preconditioned with the Hessian's diagonal, then backtracks along
    it. It works in the principal axes of the standardised rows, where that diagonal is a good
    preconditioner (correlated embedding dimensions made plain L-BFGS badly conditioned: hundreds of
    iterations per penalty, and the 500-iteration cap on frame-level tasks). The change of variables is
    exact (the weights are ``axes @ coefficients``), so the objective, its optimum and the convergence
    test (on the gradient of the original weights) are unchanged. Directions in which the rows do not
    vary (rank deficiency, constant columns) carry zero weight, which is their optimum.
    """

    def __init__(self, x, y: np.ndarray, prediction_type: str, device: str = "cpu"):
        mean, scale = standardizer(x)
        self.mean, self.scale = mean.to(device), scale.to(device)
        self.prediction_type, self.device = prediction_type, device
        self.targets = torch.from_numpy(np.array(y, dtype=np.float64)).to(device)
        self.rows = x
        self.axes = principal_axes(self._standardised(start) for start in range(0, len(x), CHUNK_ROWS))
        # the rotated rows, in float64, held where the standardised rows would fit in a quarter of the
        # device's free memory; else rotated again from the rows as stored (x may be a memmap) at every
        # evaluation
        held = 2 * x.nbytes < free_bytes(device) // 4
        self.held = [self._rotated(start) for start in range(0, len(x), CHUNK_ROWS)] if held else None

    def _standardised(self, start: int) -> Tensor:
        return standardised(_float64(self.rows[start : start + CHUNK_ROWS], self.device), self.mean, self.scale)

    def _rotated(self, start: int) -> Tensor:
        return self._standardised(start) @ self.axes

    def _chunks(self):
        for index, start in enumerate(range(0, len(self.targets), CHUNK_ROWS)):
            rows = self.held[index] if self.held is not None else self._rotated(start)
            yield rows, self.targets[start : start + CHUNK_ROWS]

    def _prior_logits(self) -> Tensor:
        frequency = self.targets.mean(0).clamp(1e-6, 1 - 1e-6)
        return frequency.log() if self.prediction_type == "multiclass" else frequency.logit()

    def _point(self, weights: Weights, l2: float) -> Point:
        """The objective, its gradient, what its Hessian needs (each chunk's probabilities) and the
        Hessian's diagonal at ``weights``, in one pass over the rows (the gradient of either loss with
        respect to the logits is probabilities minus targets)."""
        count = len(self.targets)
        total, probability_chunks = 0.0, []
        gradient, diagonal = Weights.zeros_like(weights), Weights.zeros_like(weights)
        for rows, targets in self._chunks():
            logits = rows @ weights.coefficients + weights.bias
            total += float(loss(logits, targets, self.prediction_type, reduction="sum"))
            p = probabilities(logits, self.prediction_type)
            probability_chunks.append(p)
            gradient.add_rows(rows, p - targets)
            diagonal.add_rows(rows.pow(2), p * (1 - p))
        objective = total / count + 0.5 * l2 * float(weights.coefficients.pow(2).sum())
        gradient = gradient.scaled(1 / count).plus_penalty(weights, l2)
        diagonal = diagonal.scaled(1 / count)
        diagonal.coefficients += l2
        # a label with (almost) no examples has almost no curvature in its bias: keep the division finite
        diagonal.bias.clamp_(min=1e-10)
        return Point(weights, objective, gradient, probability_chunks, diagonal)

    def _hessian_times(self, point: Point, direction: Weights, l2: float) -> Weights:
        """The objective's Hessian at ``point`` times ``direction`` (two passes over the rows)."""
        product = Weights.zeros_like(direction)
        for (rows, _), p in zip(self._chunks(), point.probability_chunks):
            change = rows @ direction.coefficients + direction.bias  # of the logits
            if self.prediction_type == "multiclass":  # the softmax's Jacobian: diag(p) - p p^T, per row
                weighted = p * change
                weighted = weighted - p * weighted.sum(1, keepdim=True)
            else:
                weighted = p * (1 - p) * change
            product.add_rows(rows, weighted)
        return product.scaled(1 / len(self.targets)).plus_penalty(direction, l2)

    def _newton_direction(self, point: Point, l2: float) -> Weights:
        """An inexact Newton step: conjugate gradients on ``H d = -g``, preconditioned by the Hessian's
        diagonal, until the residual is below ``min(0.5, sqrt(|g|)) |g|`` (superlinear convergence
        without solving exactly far from the optimum). A multilabel task's Hessian is block diagonal
        (one independent problem per label), so each label runs its own recurrence and stops on its
        own; a multiclass task couples its classes and runs one."""
        per_label = self.prediction_type != "multiclass"

        def dot(a: Weights, b: Weights) -> Tensor:
            value = (a.coefficients * b.coefficients).sum(0) + a.bias * b.bias
            return value if per_label else value.sum().expand_as(value)

        step = Weights.zeros_like(point.gradient)
        residual = point.gradient.scaled(-1.0)
        preconditioned = residual.divided(point.diagonal)
        direction = preconditioned
        product = dot(residual, preconditioned)
        gradient_norm = dot(point.gradient, point.gradient).sqrt()
        target = torch.clamp(gradient_norm.sqrt(), max=0.5) * gradient_norm
        done = torch.zeros_like(gradient_norm, dtype=torch.bool)
        for _ in range(MAX_CONJUGATE_GRADIENT_STEPS):
            curved = self._hessian_times(point, direction, l2)
            alpha = torch.where(done, 0.0, product / dot(direction, curved))
            step = step.plus(direction, alpha)
            residual = residual.plus(curved, -alpha)
            done = done | (dot(residual, residual).sqrt() <= target)
            if bool(done.all()):
                break
            preconditioned = residual.divided(point.diagonal)
            new_product = dot(residual, preconditioned)
            beta = torch.where(done, 0.0, new_product / product)
            product = torch.where(done, product, new_product)
            direction = preconditioned.plus(direction, beta).masked(~done)
        return step

    def fit(self, params: LinearParameters, start: LinearPredictor | None = None) -> LinearPredictor:
        """The optimum for ``params.l2`` (from ``start``'s weights when given), by truncated Newton
        steps with a backtracking line search; ``iterations`` counts Newton steps."""
        l2, axes, labels = params.l2, self.axes, self.targets.shape[1]
        if start is not None:  # its weights projected on this problem's axes (they lie in them)
            weights = Weights(axes.T @ start.weight.to(self.device), start.bias.to(self.device).clone())
        else:  # the optimum of the bias alone (weights zero): the solver need not find the label priors
            zeros = torch.zeros(axes.shape[1], labels, dtype=torch.float64, device=self.device)
            weights = Weights(zeros, self._prior_logits())
        point = self._point(weights, l2)
        tolerance = gradient_tolerance(l2, point.objective)
        iterations, converged = 0, False
        while True:
            # the test is on the gradient of the original weights (axes @ coefficients) and the bias
            largest = max(
                float((axes @ point.gradient.coefficients).abs().max()), float(point.gradient.bias.abs().max())
            )
            converged = largest <= tolerance
            if converged or iterations == MAX_ITERATIONS:
                break
            iterations += 1
            direction = self._newton_direction(point, l2)
            slope = float(dot_all(point.gradient, direction))
            length = 1.0
            while True:  # Armijo backtracking; a Newton step is mostly taken whole
                trial = self._point(point.weights.plus(direction, length), l2)
                if trial.objective <= point.objective + 1e-4 * length * slope or length < 1e-10:
                    break
                length /= 2
            if trial.objective > point.objective:  # no decrease left at float64's resolution
                break
            point = trial
        return LinearPredictor(
            params,
            axes @ point.weights.coefficients,
            point.weights.bias,
            self.mean,
            self.scale,
            iterations,
            converged,
        )


@dataclass
class Weights:
    """Coefficients ``(m, K)`` on the principal axes and bias ``(K,)``: the solver's vectors."""

    coefficients: Tensor
    bias: Tensor

    @classmethod
    def zeros_like(cls, other: Weights) -> Weights:
        return cls(torch.zeros_like(other.coefficients), torch.zeros_like(other.bias))

    def add_rows(self, rows: Tensor, per_row: Tensor) -> None:
        """Adds ``rows^T per_row`` (this product order is the fast one for few labels) and the bias part."""
        self.coefficients += (per_row.T @ rows).T
        self.bias += per_row.sum(0)

    def scaled(self, factor: float) -> Weights:
        return Weights(self.coefficients * factor, self.bias * factor)

    def plus_penalty(self, weights: Weights, l2: float) -> Weights:
        return Weights(self.coefficients + l2 * weights.coefficients, self.bias)

    def plus(self, other: Weights, factor) -> Weights:
        """``self + factor * other``; ``factor`` a number or one per label."""
        return Weights(self.coefficients + factor * other.coefficients, self.bias + factor * other.bias)

    def divided(self, other: Weights) -> Weights:
        return Weights(self.coefficients / other.coefficients, self.bias / other.bias)

    def masked(self, keep: Tensor) -> Weights:
        return Weights(self.coefficients * keep, self.bias * keep)


def dot_all(a: Weights, b: Weights) -> Tensor:
    return (a.coefficients * b.coefficients).sum() + (a.bias * b.bias).sum()


@dataclass
class Point:
    """The solver's state at some weights."""

    weights: Weights
    objective: float
    gradient: Weights
    probability_chunks: list[Tensor]
    diagonal: Weights


def principal_axes(chunks) -> Tensor:
    """The eigenvectors ``(D, m)`` of the rows' second moment whose eigenvalues are above rounding (the
    rows are standardised, so this is their correlation matrix).

    With fewer rows than columns (a scene task's clips against a wide fusion, or its 5 group means) the
    axes lie in the rows' span, found from the ``(n, n)`` Gram matrix instead of the ``(D, D)`` moment:
    an orthonormal basis of the span (QR of ``rows^T`` times the Gram's eigenvectors), then the moment's
    eigenvectors within it. The same axes, at ``O(n^2 D)`` instead of ``O(D^3)`` (seconds for every
    search of a 7,680-wide scene embedding). Rows are held only while they are fewer than the columns;
    from then on they are streamed into the moment, chunk by chunk."""
    held: list[Tensor] = []  # the rows while they are fewer than the columns
    moment, count, width = None, 0, 0
    for rows in chunks:
        count, width = count + len(rows), rows.shape[1]
        if moment is None and count < width:
            held.append(rows)
            continue
        if moment is None:  # as many rows as columns now: the (D, D) moment, rows streamed from here on
            moment = sum((part.T @ part for part in held), rows.new_zeros(width, width))
            held = []
        moment += rows.T @ rows
    if moment is not None:
        values, vectors = torch.linalg.eigh(moment / count)
        return vectors[:, values > _rounding_floor(values, width)].contiguous()
    rows = torch.cat(held)
    gram_values, gram_vectors = torch.linalg.eigh(rows @ rows.T)
    span = gram_vectors[:, gram_values > _rounding_floor(gram_values, width)]
    if not span.shape[1]:  # no variance at all
        return rows.new_zeros(width, 0)
    basis, _ = torch.linalg.qr(rows.T @ span)  # (D, r), orthonormal
    projected = rows @ basis
    values, vectors = torch.linalg.eigh(projected.T @ projected / count)
    return (basis @ vectors[:, values > _rounding_floor(values, width)]).contiguous()


def _rounding_floor(values: Tensor, width: int) -> float:
    """Eigenvalues of a moment of ``width`` columns at or below this are rounding, not variance."""
    return float(values.max()) * width * np.finfo(np.float64).eps


def gradient_tolerance(l2: float, objective: float) -> float:
    """TOLERANCE, or the smallest gradient the float64 objective can still resolve where that is
    larger: near the optimum ``f - f* ~ g^2 / (2 * l2)``, which must stay above the objective's rounding
    (a strong penalty reaches that floor first; below it the solver would only wander)."""
    floor = math.sqrt(2 * l2 * 64 * np.finfo(np.float64).eps * max(1.0, abs(objective)))
    return max(TOLERANCE, floor)


#: Scores a fitted probe on validation: (value, event decoding chosen), and how to rank the value.
Measure = Callable[[LinearPredictor], tuple[float, Postprocessing | None]]


def search(
    problem: LogisticProblem,
    measure: Measure,
    rank: Callable[[float], float],
    on_fit: Callable[[LinearPredictor], object] = lambda predictor: None,
) -> list[LinearPredictor]:
    """Every candidate of the search, strongest penalty first: the decades (each fit starting from the
    previous one's optimum), then the refinement factors around the best decade (starting from it).
    Ties in ``rank`` go to the stronger penalty, the earlier in the returned order."""

    def fit(l2: float, start: LinearPredictor | None) -> LinearPredictor:
        predictor = problem.fit(LinearParameters(l2), start)
        predictor.validation_score, predictor.postprocessing = measure(predictor)
        on_fit(predictor)
        return predictor

    decades: list[LinearPredictor] = []
    for l2 in L2_DECADES:
        decades.append(fit(l2, decades[-1] if decades else None))
    best = best_candidate(decades, rank)
    refined = [fit(best.params.l2 * factor, best) for factor in L2_REFINEMENT]
    return sorted(decades + refined, key=lambda predictor: -predictor.params.l2)


def best_candidate(candidates: list[LinearPredictor], rank: Callable[[float], float]) -> LinearPredictor:
    """The best-ranked; among equals the stronger penalty."""
    return max(candidates, key=lambda predictor: (rank(predictor.validation_score), predictor.params.l2))


def validation_loss(predictor: LinearPredictor, x_valid, y_valid: np.ndarray, prediction_type: str) -> float:
    """The validation loss (mean over rows), for tasks that select on loss rather than score."""
    targets = torch.as_tensor(np.asarray(y_valid), dtype=torch.float64)
    return float(loss(predictor.logits(x_valid, "cpu"), targets, prediction_type))
