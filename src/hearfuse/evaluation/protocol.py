"""The HEAR 2021 evaluation kit's downstream protocol as data: its grid, per-task overrides, the draw
of grid points, and the aggregation over folds.

Every rule names the heareval 2021.1.3 source it follows (``heareval/predictions/task_predictions.py``
unless said otherwise), so a reader can check it line by line. The places where hearfuse can
deliberately do otherwise are :class:`Protocol` options, off by default and recorded in every result.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import UsageError

KIT = "heareval-2021.1.3"

#: ``PARAM_GRID``; torch classes and functions by name. sklearn's ``ParameterGrid`` orders the keys
#: alphabetically, which is the order below.
KIT_GRID: dict[str, list[Any]] = {
    "batch_size": [1024],
    "check_val_every_n_epoch": [3],
    "dropout": [0.1],
    "embedding_norm": ["Identity"],
    "hidden_dim": [1024],
    "hidden_layers": [1, 2],
    "hidden_norm": ["BatchNorm1d"],
    "initialization": ["xavier_uniform", "xavier_normal"],
    "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
    "max_epochs": [500],
    "norm_after_activation": [False],
    "optim": ["Adam"],
    "patience": [20],
}
GRID_SIZE = math.prod(len(values) for values in KIT_GRID.values())

#: ``TASK_SPECIFIC_PARAM_GRID``, keyed by the metadata's ``task_name`` ("sed_eval is very slow").
KIT_TASK_GRIDS: dict[str, dict[str, list[Any]]] = {"dcase2016_task2": {"check_val_every_n_epoch": [10]}}

#: The kit's own seed: ``task_predictions`` calls ``seed_everything(42)`` (runner default ``--deterministic True``).
KIT_SEED = 42

#: Downstream probes: ``mlp`` is the kit's protocol; ``linear`` and ``knn`` are the fast probes of newer
#: benchmarks (X-ARES), which can rank representations differently.
PROBES = ("mlp", "linear", "knn")
#: The linear probe's L2 search (:mod:`.linear`): decades from the strongest penalty to the weakest,
#: then these factors around the best decade (on standardised inputs, 10 already keeps the weights
#: near zero and 1e-6 is all but unregularised); the solver stops when no gradient component of the
#: objective exceeds TOLERANCE (or the float64 objective's resolution floor, where that is larger),
#: or after MAX_ITERATIONS.
L2_DECADES = tuple(10.0**exponent for exponent in range(1, -7, -1))
L2_REFINEMENT = tuple(10.0**exponent for exponent in (0.5, 0.25, -0.25, -0.5))
TOLERANCE = 1e-6
MAX_ITERATIONS = 500
#: What results record of the linear probe: results of another definition (the Adam-trained linear
#: layer before it recorded learning rates as its candidates) are stale and recomputed.
LINEAR_DEFINITION = {
    "probe": "L2-regularised logistic regression, L-BFGS to convergence, standardised inputs",
    "l2_decades": list(L2_DECADES),
    "l2_refinement": list(L2_REFINEMENT),
    "tolerance": TOLERANCE,
    "max_iterations": MAX_ITERATIONS,
}
#: Neighbour counts the kNN probe chooses among on validation (a k above the training rows votes with all
#: of them, so it ties with the smaller k that already did, and the smaller is chosen).
KNN_KS = (1, 3, 5, 10, 20, 50)


@dataclass(frozen=True)
class HyperParameters:
    """One grid point, with the kit's names. ``embedding_norm`` is carried but not applied: the kit's
    ``AbstractPredictionModel.forward`` has the layer that would apply it commented out."""

    hidden_layers: int
    lr: float
    initialization: str  # "xavier_uniform" | "xavier_normal"
    hidden_dim: int = 1024
    dropout: float = 0.1
    batch_size: int = 1024
    max_epochs: int = 500
    check_val_every_n_epoch: int = 3
    patience: int = 20
    hidden_norm: str = "BatchNorm1d"  # "BatchNorm1d" | "LayerNorm" | "Identity"
    norm_after_activation: bool = False
    embedding_norm: str = "Identity"
    optim: str = "Adam"

    def __post_init__(self) -> None:
        choices = {
            "initialization": ("xavier_uniform", "xavier_normal"),
            "hidden_norm": ("BatchNorm1d", "LayerNorm", "Identity"),
            "optim": ("Adam",),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"downstream {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("hidden_layers", "hidden_dim", "batch_size", "max_epochs", "check_val_every_n_epoch", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "hidden_layers" else 1):
                raise UsageError(f"downstream {name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LinearParameters:
    """One candidate of the linear probe: the L2 strength on standardised inputs (scikit-learn's
    ``C = 1 / (l2 * n_train)``)."""

    l2: float

    def to_dict(self) -> dict:
        return {"l2": self.l2}


@dataclass(frozen=True)
class KnnParameters:
    """One candidate of the kNN probe: the number of neighbours."""

    k: int

    def to_dict(self) -> dict:
        return {"k": self.k}


def task_grid(metadata: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The grid for one task: ``PARAM_GRID``, updated by ``TASK_SPECIFIC_PARAM_GRID[task_name]``, then by
    ``evaluation_params.task_specific_param_grid`` (``task_predictions``, "Update with task specific grid
    parameters", in that order)."""
    grid = dict(KIT_GRID)
    grid.update(KIT_TASK_GRIDS.get(str(metadata.get("task_name")), {}))
    overrides = (metadata.get("evaluation_params") or {}).get("task_specific_param_grid") or {}
    known = {f.name for f in fields(HyperParameters)}
    for key, values in overrides.items():
        if key not in known:
            raise UsageError(
                f"evaluation_params.task_specific_param_grid: unknown key {key!r}; expected some of {sorted(known)}"
            )
        if not isinstance(values, list) or not values:
            raise UsageError(
                f"evaluation_params.task_specific_param_grid: {key!r} must be a non-empty list, got {values!r}"
            )
    grid.update(overrides)
    return grid


def draw_grid(grid: Mapping[str, Sequence[Any]], points: int, seed: int = KIT_SEED) -> list[HyperParameters]:
    """The first ``points`` grid points as the kit draws them: ``confs = list(ParameterGrid(grid))``
    (keys sorted, the last key varying fastest), ``random.shuffle(confs)`` right after
    ``seed_everything(seed)`` (so a ``random.Random(seed)``), ``confs[:grid_points]``."""
    keys = sorted(grid)
    confs = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    random.Random(seed).shuffle(confs)
    return [HyperParameters(**conf) for conf in confs[:points]]


def uses_scoring_for_early_stopping(metadata: Mapping[str, Any]) -> bool:
    """Top-level ``use_scoring_for_early_stopping`` (default true). When false the kit monitors the
    validation loss (mode min) for early stopping, checkpointing and grid-point selection."""
    value = metadata.get("use_scoring_for_early_stopping", True)
    if not isinstance(value, bool):
        raise UsageError(f"task_metadata.json: use_scoring_for_early_stopping must be true or false, got {value!r}")
    return value


def aggregate(values: Sequence[float | None]) -> dict:
    """Mean and standard deviation over folds as ``aggregate_test_results`` computes them with pandas:
    NaN skipped, ``std`` with ddof=1. One split gives no std (the kit aggregates only k > 1 folds)."""
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    mean = float(finite.mean()) if len(finite) else None
    with np.errstate(invalid="ignore"):  # inf scores (a d_prime of perfect separation): std NaN, as pandas says
        std = float(finite.std(ddof=1)) if len(values) > 1 and len(finite) > 1 else None
    return {"mean": mean, "std": std, "folds": [None if v is None or math.isnan(v) else float(v) for v in values]}


@dataclass(frozen=True)
class Protocol:
    """The downstream protocol of a run: the kit's by default, each departure an explicit option.

    ``grid_points``/``seed`` are the kit runner's own knobs (``--grid-points``, the seed of
    ``seed_everything``). ``max_epochs`` caps every grid point's ``max_epochs`` (None: the grid's own).
    ``shuffle_batches`` shuffles training rows every epoch: the kit never does, because
    ``dataloader_from_split_name`` shuffles only when handed the *string* ``"train"`` and is always
    handed a list, so its rows come in the order of the embedding memmap.
    """

    grid_points: int = 8
    seed: int = KIT_SEED
    max_epochs: int | None = None
    shuffle_batches: bool = False
    #: ``mlp`` (the kit's), ``linear`` (L2-regularised logistic regression on standardised embeddings,
    #: solved to convergence, its L2 strength chosen on validation: :data:`L2_DECADES` then
    #: :data:`L2_REFINEMENT` around the best) or ``knn`` (cosine k nearest neighbours, k chosen among
    #: :data:`KNN_KS` on validation; scene tasks only). ``grid_points`` and ``max_epochs`` apply to
    #: ``mlp`` only.
    probe: str = "mlp"

    def __post_init__(self) -> None:
        if (
            isinstance(self.grid_points, bool)
            or not isinstance(self.grid_points, int)
            or not 1 <= self.grid_points <= GRID_SIZE
        ):
            raise UsageError(f"grid_points must be between 1 and {GRID_SIZE} (the HEAR grid), got {self.grid_points}")
        if self.max_epochs is not None and (not isinstance(self.max_epochs, int) or self.max_epochs < 1):
            raise UsageError(f"max_epochs must be a positive integer, got {self.max_epochs}")
        if self.probe not in PROBES:
            raise UsageError(f"probe must be one of {list(PROBES)}, got {self.probe!r}")

    def deviations(self) -> list[str]:
        """Options in which this protocol differs from the kit's run with default flags."""
        kit = Protocol()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(kit, f.name)]

    def to_dict(self) -> dict:
        """Recorded in every result. The kit's probe is left implicit, so results stored before probes
        existed (all mlp) keep matching and are not recomputed; a fast probe records the candidates it
        chose among, so changing them makes its stored results stale."""
        recorded = {"kit": KIT, **asdict(self)}
        if self.probe == "mlp":
            del recorded["probe"]
        elif self.probe == "linear":  # neither a grid draw, nor epochs, nor batches: only its definition
            for unused in ("grid_points", "max_epochs", "shuffle_batches"):
                del recorded[unused]
            recorded["candidates"] = LINEAR_DEFINITION
        else:
            recorded["candidates"] = list(KNN_KS)
        return recorded

    def not_applicable(self, embedding_type: str) -> str | None:
        """Why this protocol's probe cannot score a task of this kind; None when it can."""
        if self.probe == "knn" and embedding_type != "scene":
            return "the knn probe scores scene tasks only (clips, not frames): not applicable to an event task"
        return None

    def grid(self, metadata: Mapping[str, Any]) -> list[HyperParameters] | list[LinearParameters] | list[KnnParameters]:
        """This run's first candidates for a task: the kit's draw (then the epoch cap if any) for ``mlp``,
        the L2 decades for ``linear`` (refined around the best by the search), the neighbour counts for
        ``knn``."""
        if self.probe == "knn":
            return [KnnParameters(k) for k in KNN_KS]
        if self.probe == "linear":
            return [LinearParameters(l2) for l2 in L2_DECADES]
        points = draw_grid(task_grid(metadata), self.grid_points, self.seed)
        if self.max_epochs is not None:
            points = [replace(p, max_epochs=min(p.max_epochs, self.max_epochs)) for p in points]
        for point in points:
            if point.max_epochs < point.check_val_every_n_epoch:
                raise UsageError(
                    f"max_epochs {point.max_epochs} is below one validation check "
                    f"(every {point.check_val_every_n_epoch} epochs for this task)"
                )
        return points
