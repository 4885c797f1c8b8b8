"""The linear probe: L2-regularised logistic regression on standardised embeddings, solved to its optimum.

This is the field's standard linear probe (CLIP's protocol): full-batch L-BFGS on softmax
cross-entropy (multiclass) or per-label sigmoid cross-entropy (multilabel; event tasks per frame),
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
    """One training set, held once, that can be fitted for any L2 strength."""

    def __init__(self, x, y: np.ndarray, prediction_type: str, device: str = "cpu"):
        mean, scale = standardizer(x)
        self.mean, self.scale = mean.to(device), scale.to(device)
        self.prediction_type, self.device = prediction_type, device
        self.targets = torch.from_numpy(np.array(y, dtype=np.float64)).to(device)
        # standardised in float64 once where that fits in a quarter of the device's free memory, else
        # every chunk at every evaluation from the rows as stored (x may be a memmap)
        self.rows = x
        held = 2 * x.nbytes < free_bytes(device) // 4
        self.held = [self._standardised(start) for start in range(0, len(x), CHUNK_ROWS)] if held else None

    def _standardised(self, start: int) -> Tensor:
        return standardised(_float64(self.rows[start : start + CHUNK_ROWS], self.device), self.mean, self.scale)

    def _chunks(self):
        for index, start in enumerate(range(0, len(self.targets), CHUNK_ROWS)):
            rows = self.held[index] if self.held is not None else self._standardised(start)
            yield rows, self.targets[start : start + CHUNK_ROWS]

    def _prior_logits(self) -> Tensor:
        frequency = self.targets.mean(0).clamp(1e-6, 1 - 1e-6)
        return frequency.log() if self.prediction_type == "multiclass" else frequency.logit()

    def fit(self, params: LinearParameters, start: LinearPredictor | None = None) -> LinearPredictor:
        """The optimum for ``params.l2`` (from ``start``'s weights when given)."""
        count, width, labels = len(self.targets), self.mean.shape[0], self.targets.shape[1]
        weight = torch.zeros(width, labels, dtype=torch.float64, device=self.device)
        bias = torch.zeros(labels, dtype=torch.float64, device=self.device)
        if start is not None:
            weight.copy_(start.weight)
            bias.copy_(start.bias)
        else:  # the optimum of the bias alone (weights zero): the solver need not find the label priors
            bias.copy_(self._prior_logits())
        weight.requires_grad_(True)
        bias.requires_grad_(True)

        def objective() -> Tensor:
            weight.grad = bias.grad = None
            total = 0.0
            for rows, targets in self._chunks():  # the gradient accumulates chunk by chunk
                part = loss(rows @ weight + bias, targets, self.prediction_type, reduction="sum") / count
                part.backward()
                total += part.item()
            penalty = 0.5 * params.l2 * weight.pow(2).sum()
            penalty.backward()
            return torch.tensor(total + penalty.item(), dtype=torch.float64)  # the solver compares in float64

        tolerance = gradient_tolerance(params.l2, float(objective()))
        solver = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=MAX_ITERATIONS,
            max_eval=MAX_ITERATIONS * 2,
            tolerance_grad=tolerance,
            tolerance_change=0.0,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
        solver.step(objective)
        objective()  # gradients at the final point, for the convergence check
        gradient = max(float(weight.grad.abs().max()), float(bias.grad.abs().max())) if count else 0.0
        iterations = solver.state[weight].get("n_iter", 0)
        return LinearPredictor(
            params, weight.detach(), bias.detach(), self.mean, self.scale, int(iterations), gradient <= tolerance
        )


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
