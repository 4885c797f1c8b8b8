"""The linear probe: candidates from the L2 search of :mod:`..linear` (a search, not a fixed grid: it
refines around its best decade), each judged like any fit on validation."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ..protocol import (
    L2_DECADES,
    L2_REFINEMENT,
    LINEAR_DEFINITION,
    LinearParameters,
    Probe,
    ProbeFold,
    Protocol,
    register_probe,
)


class LinearProbe(Probe):
    summary = (
        "L2-regularised logistic regression on standardised embeddings, solved to convergence, L2 chosen on "
        "validation; a fraction of the MLP's time"
    )

    def recorded(self, options: dict) -> dict:
        """Neither a grid draw, nor epochs, nor batches: only its definition."""
        unused = ("grid_points", "max_epochs", "shuffle_batches")
        kept = {name: value for name, value in options.items() if name not in unused}
        return {**kept, "candidates": LINEAR_DEFINITION}

    def grid(self, protocol: Protocol, metadata: Mapping[str, Any]) -> list[LinearParameters]:
        """The decades the search starts from."""
        return [LinearParameters(l2) for l2 in L2_DECADES]

    def search(self, fold: ProbeFold, protocol: Protocol) -> list:
        """Strongest penalty first, so ties go to the stronger penalty."""
        from tqdm import tqdm

        from ..linear import LogisticProblem, search

        problem = LogisticProblem(fold.x_train, fold.y_train, fold.prediction_type, fold.device)
        total = len(L2_DECADES) + len(L2_REFINEMENT)
        with tqdm(total=total, desc=f"l2 search {fold.task.name}", disable=not fold.progress) as bar:
            candidates = search(problem, _measure(fold), fold.rank, lambda _: bar.update())
        for candidate in candidates:
            candidate.monitor = fold.monitor
        return candidates

    def fit(self, fold: ProbeFold, params: LinearParameters, protocol: Protocol):
        from ..linear import LogisticProblem

        predictor = LogisticProblem(fold.x_train, fold.y_train, fold.prediction_type, fold.device).fit(params)
        predictor.validation_score, predictor.postprocessing = _measure(fold)(predictor)
        predictor.monitor = fold.monitor
        return predictor

    def describe(self, fitted) -> dict:
        return {**super().describe(fitted), "converged": fitted.converged}

    def report_note(self, results: Sequence[dict]) -> str:
        """Which definition of the linear probe produced the table's results (each result records it)."""
        lines = []
        recorded = (json.dumps((r.get("protocol") or {}).get("candidates")) for r in results)
        for candidates in map(json.loads, dict.fromkeys(recorded)):
            if isinstance(candidates, dict):
                decades = candidates.get("l2_decades", [])
                lines.append(
                    f"Linear probe: {candidates.get('probe')}; L2 chosen on validation among {len(decades)} decades "
                    f"({max(decades):g} to {min(decades):g}) refined around the best, solver tolerance "
                    f"{candidates.get('tolerance'):g}.\n"
                )
            elif candidates is not None:
                lines.append(
                    "Some results are from the earlier linear probe (a linear layer trained with Adam, learning "
                    f"rate chosen among {', '.join(f'{value:g}' for value in candidates)}): rerun `hearfuse "
                    "evaluate --probe linear` to recompute them with the current definition.\n"
                )
        return "".join(lines)


def _measure(fold: ProbeFold):
    """How a fitted linear probe is judged on validation: the primary score (with the event decoding it
    chooses), or the validation loss where the task selects on loss (with its one decoding)."""
    from ..linear import validation_loss

    valid, kind = fold.valid, fold.prediction_type
    if fold.monitor == "score":
        return lambda predictor: fold.validate(predictor.predict(valid.x, kind))
    return lambda predictor: (validation_loss(predictor, valid.x, valid.y, kind), fold.loss_postprocessing)


register_probe("linear", LinearProbe())
