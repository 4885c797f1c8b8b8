"""The kit's probe: its draw of grid points, each trained as heareval trains it (:mod:`..downstream`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from ...errors import UsageError
from ..protocol import KIT_PROBE, HyperParameters, Probe, ProbeFold, Protocol, draw_grid, register_probe, task_grid


class MlpProbe(Probe):
    summary = "the kit's 8-point MLP grid"

    def recorded(self, options: dict) -> dict:
        """Every option but the probe, left implicit: results stored before probes existed (all mlp) keep
        matching and are not recomputed."""
        return {name: value for name, value in options.items() if name != "probe"}

    def grid(self, protocol: Protocol, metadata: Mapping[str, Any]) -> list[HyperParameters]:
        """The kit's draw, then the protocol's epoch cap if any."""
        points = draw_grid(task_grid(metadata), protocol.grid_points, protocol.seed)
        if protocol.max_epochs is not None:
            points = [replace(p, max_epochs=min(p.max_epochs, protocol.max_epochs)) for p in points]
        for point in points:
            if point.max_epochs < point.check_val_every_n_epoch:
                raise UsageError(
                    f"max_epochs {point.max_epochs} is below one validation check "
                    f"(every {point.check_val_every_n_epoch} epochs for this task)"
                )
        return points

    def fit(self, fold: ProbeFold, params: HyperParameters, protocol: Protocol):
        from ..downstream import train_predictor

        return train_predictor(
            fold.x_train,
            fold.y_train,
            fold.valid.x,
            fold.valid.y,
            params,
            prediction_type=fold.prediction_type,
            validate=fold.validate if fold.monitor == "score" else None,
            metric=fold.primary,
            postprocessing=fold.loss_postprocessing,
            shuffle=protocol.shuffle_batches,
            device=fold.device,
            seed=protocol.seed + fold.index,
            progress=fold.progress,
        )


register_probe(KIT_PROBE, MlpProbe())
