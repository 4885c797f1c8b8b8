"""The HEAR 2021 evaluation kit's downstream protocol as data: its grid, per-task overrides, the draw
of grid points, and the aggregation over folds; and the probes, registered by name, that a run's
:class:`Protocol` can train in the kit's place.

Every rule names the heareval 2021.1.3 source it follows (``heareval/predictions/task_predictions.py``
unless said otherwise), so a reader can check it line by line. The places where hearfuse can
deliberately do otherwise are :class:`Protocol` options, off by default and recorded in every result.

A probe is a :class:`Probe` registered with :func:`register_probe`: its candidates, how it fits one on a
fold (:class:`ProbeFold`) and what a result records of it. Evaluation treats every probe alike, so a new
probe is one module; the built-in ones (:mod:`.probes`) are registered when :mod:`hearfuse.evaluation`
is imported, without importing torch (each imports its solver when it fits).
"""

from __future__ import annotations

import itertools
import math
import random
import typing
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..errors import UsageError

if TYPE_CHECKING:  # numpy too: ``--help`` reads the probes from this module and should not wait for it
    import numpy as np

    from .events import Postprocessing
    from .metrics import Metric
    from .splits import SplitData
    from .tasks import Task

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

#: The kit's probe: the default, and the one whose results name no probe (they predate the others).
KIT_PROBE = "mlp"
#: The linear probe's L2 search (:mod:`.linear`): decades from the strongest penalty to the weakest,
#: then these factors around the best decade (on standardised inputs, 10 already keeps the weights
#: near zero and 1e-6 is all but unregularised); the solver stops when no gradient component of the
#: objective exceeds TOLERANCE (or the float64 objective's resolution floor, where that is larger),
#: or after MAX_ITERATIONS (Newton steps; none has needed more than a few dozen).
L2_DECADES = tuple(10.0**exponent for exponent in range(1, -7, -1))
L2_REFINEMENT = tuple(10.0**exponent for exponent in (0.5, 0.25, -0.25, -0.5))
TOLERANCE = 1e-8
MAX_ITERATIONS = 500
#: What results record of the linear probe: results of another definition (the Adam-trained linear
#: layer before it recorded learning rates as its candidates) are stale and recomputed.
LINEAR_DEFINITION = {
    "probe": "L2-regularised logistic regression, solved to convergence, standardised inputs",
    "solver": "truncated Newton, diagonally preconditioned conjugate gradients in the inputs' principal axes",
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
    import numpy as np

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
    #: The name of a registered probe (:data:`PROBES`): ``mlp`` (the kit's), ``linear`` (L2-regularised
    #: logistic regression on standardised embeddings, solved to convergence, its L2 strength chosen on
    #: validation: :data:`L2_DECADES` then :data:`L2_REFINEMENT` around the best) or ``knn`` (cosine k
    #: nearest neighbours, k chosen among :data:`KNN_KS` on validation; scene tasks only). ``grid_points``
    #: and ``max_epochs`` apply to ``mlp`` only.
    probe: str = KIT_PROBE

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

    @property
    def registered_probe(self) -> Probe:
        """The probe this protocol names."""
        return PROBES[self.probe]

    def deviations(self) -> list[str]:
        """Options in which this protocol differs from the kit's run with default flags."""
        kit = Protocol()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(kit, f.name)]

    def to_dict(self) -> dict:
        """Recorded in every result: what the probe records of the options (:meth:`Probe.recorded`)."""
        return self.registered_probe.recorded({"kit": KIT, **asdict(self)})

    def not_applicable(self, embedding_type: str) -> str | None:
        """Why this protocol's probe cannot score a task of this kind; None when it can."""
        return self.registered_probe.not_applicable(embedding_type)

    def grid(self, metadata: Mapping[str, Any]) -> list:
        """This run's first candidates for a task (:meth:`Probe.grid`)."""
        return self.registered_probe.grid(self, metadata)


#: Scores validation probabilities with the task's primary metric: (score, event decoding chosen).
Validator = Callable[["np.ndarray"], tuple[float, "Postprocessing | None"]]


@dataclass(frozen=True)
class ProbeFold:
    """One fold of a task as a probe sees it: the training rows, the validation split, and how a fit is
    judged there. Evaluation builds it, so a probe needs none of the task's bookkeeping."""

    task: Task
    index: int  # the fold's: fits on fold i are seeded with the protocol's seed + i
    x_train: Any  # (rows, D), may be memory-mapped
    y_train: np.ndarray  # (rows, labels) multi-hot
    valid: SplitData
    prediction_type: str  # "multiclass" | "multilabel" (an event task's frames are multilabel)
    #: What selects a fit: "score", the primary validation score (:attr:`validate`), or "loss", the
    #: validation loss, where the task turns scoring off for early stopping.
    monitor: str
    validate: Validator
    primary: Metric
    rank: Callable[[float], float]  # orders values of :attr:`monitor`, best highest, NaN worst
    loss_postprocessing: Postprocessing | None  # the event decoding when selecting on loss (the task's one)
    device: str
    progress: bool


class Fitted(typing.Protocol):
    """A probe fitted on one fold, as evaluation reads it."""

    params: Any  # the candidate, with ``to_dict()``
    validation_score: float  # the best value of ``monitor`` (NaN when none was finite)
    monitor: str
    best_epoch: int
    epochs_run: int
    postprocessing: Postprocessing | None  # event tasks: the decoding chosen on validation

    def predict(self, x, prediction_type: str, device: str) -> np.ndarray: ...


class Probe:
    """A downstream probe. Evaluation searches its candidates on a task's first split, keeps the best on
    validation (the earlier on ties), fits that one on every other split and tests each fold's fit with
    every metric of the task; a probe says only what its candidates are and how one is fitted."""

    #: One line for ``--help``.
    summary = ""

    def recorded(self, options: dict) -> dict:
        """What a result records of a run's protocol ``options``: a change in it makes stored results stale."""
        return options

    def not_applicable(self, embedding_type: str) -> str | None:
        """Why this probe cannot score a task of this kind; None when it can."""
        return None

    def grid(self, protocol: Protocol, metadata: Mapping[str, Any]) -> list:
        """The candidates for a task (hyperparameters, each with ``to_dict()``)."""
        raise NotImplementedError

    def fit(self, fold: ProbeFold, params: Any, protocol: Protocol) -> Fitted:
        """``params`` fitted on the fold's training rows and judged on its validation split."""
        raise NotImplementedError

    def search(self, fold: ProbeFold, protocol: Protocol) -> list[Fitted]:
        """Every candidate fitted on the first split, in the order that breaks ties (the earlier wins):
        each of :meth:`grid`, unless the probe searches otherwise."""
        from tqdm import tqdm

        grid = self.grid(protocol, fold.task.metadata)
        return [
            self.fit(fold, params, protocol)
            for params in tqdm(grid, desc=f"grid {fold.task.name}", disable=not fold.progress)
        ]

    def report_note(self, results: Sequence[dict]) -> str:
        """What a report says under this probe's table of ``results``: markdown lines, or ''."""
        return ""

    def describe(self, fitted: Fitted) -> dict:
        """A candidate as a result's ``grid`` lists it."""
        return {
            "params": fitted.params.to_dict(),
            "validation_score": fitted.validation_score,
            "best_epoch": fitted.best_epoch,
            "epochs_run": fitted.epochs_run,
        }


#: Every registered probe by name, in registration order (reports show their tables in this order).
PROBES: dict[str, Probe] = {}


def register_probe(name: str, probe: Probe) -> Probe:
    """Make ``probe`` a :class:`Protocol`'s ``probe`` by ``name`` (a new probe needs nothing else)."""
    if name in PROBES:
        raise ValueError(f"probe {name!r} is already registered")
    PROBES[name] = probe
    return probe
