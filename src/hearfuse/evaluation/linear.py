"""The linear probe: L2-regularised logistic regression on standardised embeddings, solved to its optimum.

This is the field's standard linear probe (CLIP's protocol): full-batch L-BFGS (preconditioned, see
:class:`LogisticProblem`) on softmax cross-entropy (multiclass) or per-label sigmoid cross-entropy
(multilabel; event tasks per frame),
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

    The solver works in the principal axes of the standardised rows, each weight scaled by the inverse
    square root of the objective's curvature along its axis at the starting point (a diagonal Newton
    preconditioner). Correlated embedding dimensions make the plain problem badly conditioned: L-BFGS
    then needed hundreds of iterations per penalty and stopped at the cap on frame-level tasks. The
    change of variables is exact (the weights are ``axes @ coefficients``), so the optimum, the
    objective and the convergence test (on the gradient of the original weights) are the same; it
    only takes far fewer iterations. Directions in which the rows do not vary (rank deficiency,
    constant columns) carry zero weight, which is their optimum.
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

    def _evaluate(self, coefficients: Tensor, bias: Tensor, l2: float) -> tuple[float, Tensor, Tensor]:
        """The objective and its gradients with respect to the coefficients and the bias, accumulated
        chunk by chunk (the gradient of either loss with respect to the logits is probabilities minus
        targets)."""
        count = len(self.targets)
        total, gradient, bias_gradient = 0.0, torch.zeros_like(coefficients), torch.zeros_like(bias)
        for rows, targets in self._chunks():
            logits = rows @ coefficients + bias
            total += float(loss(logits, targets, self.prediction_type, reduction="sum"))
            residual = probabilities(logits, self.prediction_type) - targets
            gradient += (residual.T @ rows).T  # this product order is the fast one for few labels
            bias_gradient += residual.sum(0)
        objective = total / count + 0.5 * l2 * float(coefficients.pow(2).sum())
        return objective, gradient / count + l2 * coefficients, bias_gradient / count

    def _curvature(self, coefficients: Tensor, bias: Tensor, l2: float) -> tuple[Tensor, Tensor]:
        """The diagonal of the objective's Hessian at the given point, per coefficient and per bias
        (each label's own p(1 - p), the softmax's diagonal for a multiclass task)."""
        count = len(self.targets)
        curvature, bias_curvature = torch.zeros_like(coefficients), torch.zeros_like(bias)
        for rows, _ in self._chunks():
            p = probabilities(rows @ coefficients + bias, self.prediction_type)
            weight = p * (1 - p)
            curvature += rows.pow(2).T @ weight
            bias_curvature += weight.sum(0)
        # a label with (almost) no examples has almost no curvature: its bias may still move freely
        return curvature / count + l2, (bias_curvature / count).clamp_min(1e-8)

    def fit(self, params: LinearParameters, start: LinearPredictor | None = None) -> LinearPredictor:
        """The optimum for ``params.l2`` (from ``start``'s weights when given)."""
        from scipy.optimize import minimize

        l2, axes, labels = params.l2, self.axes, self.targets.shape[1]
        if start is not None:  # its weights projected on this problem's axes (they lie in them)
            coefficients, bias = axes.T @ start.weight.to(self.device), start.bias.to(self.device).clone()
        else:  # the optimum of the bias alone (weights zero): the solver need not find the label priors
            coefficients = torch.zeros(axes.shape[1], labels, dtype=torch.float64, device=self.device)
            bias = self._prior_logits()
        curvature, bias_curvature = self._curvature(coefficients, bias, l2)
        step, bias_step = curvature.rsqrt(), bias_curvature.rsqrt()
        size = coefficients.numel()
        last: dict = {}

        def unpack(variables: np.ndarray) -> tuple[Tensor, Tensor]:
            scaled = torch.from_numpy(variables).to(self.device)
            return step * scaled[:size].view_as(coefficients), bias_step * scaled[size:]

        def objective(variables: np.ndarray) -> tuple[float, np.ndarray]:
            value, gradient, bias_gradient = self._evaluate(*unpack(variables), l2)
            last.update(variables=variables.copy(), gradient=gradient, bias_gradient=bias_gradient)
            scaled = torch.cat([(step * gradient).reshape(-1), bias_step * bias_gradient])
            return value, scaled.cpu().numpy()

        def largest_gradient(variables: np.ndarray) -> float:
            """The largest gradient component of the original weights (axes @ coefficients) and bias."""
            if not np.array_equal(variables, last.get("variables")):
                objective(variables)
            return max(float((axes @ last["gradient"]).abs().max()), float(last["bias_gradient"].abs().max()))

        start_point = torch.cat([(coefficients / step).reshape(-1), bias / bias_step]).cpu().numpy()
        tolerance = gradient_tolerance(l2, objective(start_point)[0])

        def stop_when_converged(intermediate_result) -> None:
            if largest_gradient(intermediate_result.x) <= tolerance:
                raise StopIteration

        result = minimize(
            objective,
            start_point,
            jac=True,
            method="L-BFGS-B",
            callback=stop_when_converged,
            # only the callback's test (or the cap) ends the search: scipy's own tests are switched off
            options={"maxiter": MAX_ITERATIONS, "maxfun": 2 * MAX_ITERATIONS, "maxcor": 20, "ftol": 0.0, "gtol": 0.0},
        )
        converged = largest_gradient(result.x) <= tolerance
        coefficients, bias = unpack(result.x)
        return LinearPredictor(params, axes @ coefficients, bias, self.mean, self.scale, int(result.nit), converged)


def principal_axes(chunks) -> Tensor:
    """The eigenvectors ``(D, m)`` of the rows' second moment whose eigenvalues are above rounding (the
    rows are standardised, so this is their correlation matrix)."""
    moment, count = None, 0
    for rows in chunks:
        moment = rows.T @ rows if moment is None else moment + rows.T @ rows
        count += len(rows)
    values, vectors = torch.linalg.eigh(moment / max(count, 1))
    floor = float(values.max()) * len(values) * np.finfo(np.float64).eps
    return vectors[:, values > floor].contiguous()


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
