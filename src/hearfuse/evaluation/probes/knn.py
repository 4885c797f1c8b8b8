"""The kNN probe: nothing to train, k chosen among :data:`..protocol.KNN_KS` by its validation score."""

from __future__ import annotations

from typing import Any, Mapping

from ..protocol import KNN_KS, KnnParameters, Probe, ProbeFold, Protocol, register_probe


class KnnProbe(Probe):
    summary = "cosine k nearest neighbours, k chosen on validation; scene tasks only; seconds"

    def recorded(self, options: dict) -> dict:
        return {**options, "candidates": list(KNN_KS)}

    def not_applicable(self, embedding_type: str) -> str | None:
        if embedding_type != "scene":
            return "the knn probe scores scene tasks only (clips, not frames): not applicable to an event task"
        return None

    def grid(self, protocol: Protocol, metadata: Mapping[str, Any]) -> list[KnnParameters]:
        return [KnnParameters(k) for k in KNN_KS]

    def fit(self, fold: ProbeFold, params: KnnParameters, protocol: Protocol):
        from ..downstream import KnnPredictor

        predictor = KnnPredictor.fit(fold.x_train, fold.y_train, params)
        predictor.validation_score, _ = fold.validate(predictor.predict(fold.valid.x))
        return predictor


register_probe("knn", KnnProbe())
