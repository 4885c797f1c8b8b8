"""Layer-wise analysis: which hidden state of which member carries what, from one model pass per clip.

For member ``m`` of a fusion and each of its hidden states ``i`` (a transformer's embedding output
and every block; CREPE's five pooling blocks), the representation probed is the *view*
``config.solo(m)`` with aggregation ``[i]``, named ``<fusion>.<m>.<i>``. A view is an ordinary
config: its embeddings are cached and its results stored exactly where ``hearfuse evaluate``
puts those of that config, with the same provenance, so evaluating a written-out view gives
the same numbers (and reuses the cache). What is special is only how the cache is filled: every
state of a member at once, from one pass per clip (:meth:`FusionModel.embed_variants`), the first
time any of its views needs a task.

From the per-state scores, a config can be written whose aggregation is either the single state
that validates best on the chosen tasks, or a weighted sum whose weights were learned jointly with
a linear head per task (s3prl's featurizer: softmax weights over the states, trained through the
downstream model). Both choose on training and validation data only, never on test scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import FusionConfig
from ..dtypes import resolve_dtype
from ..errors import UsageError
from ..files import write_text_atomic
from ..fusion.aggregation import LayerAggregation
from ..hear import resolve_config
from ..model import FusionModel
from . import report
from .cache import embedding_key, read_split, split_dir
from .charts import layer_heatmap
from .downstream import Rows, column_moments, loss
from .evaluate import EvaluationSettings, embed_task, evaluate_task, execute, model_jobs
from .linear import LinearPredictor, LogisticProblem, best_candidate, search, validation_loss
from .metrics import VALIDATION_LOSS
from .splits import SplitData, from_cache
from .tasks import Task, load_task, select_tasks

#: How ``--write-config`` chooses each member's aggregation.
CHOICES = ("learned", "best")


@dataclass
class MemberLayers:
    """One member's views (one per hidden state) and their results, task by task."""

    member: str
    family: str
    checkpoint: str
    views: list[FusionConfig]
    results: list[list[dict]] = field(default_factory=list)  # [state][task]
    best_state: int | None = None
    learned_weights: list[float] | None = None

    def records(self) -> list[dict]:
        """Results with each view named ``state i``, for the report's tables and heatmap."""
        return [{**r, "model": f"state {i}"} for i, per_task in enumerate(self.results) for r in per_task]


def state_view(solo: FusionConfig, member: str, index: int) -> FusionConfig:
    """Member ``member`` alone with only hidden state ``index``, named ``<fusion>.<member>.<index>``."""
    return solo.with_aggregations({member: LayerAggregation("layers", (index,))}).with_options(
        name=f"{solo.name}.{index}"
    )


def analyse_layers(
    model_ref: str | FusionConfig,
    tasks_dir: str | Path,
    settings: EvaluationSettings,
    *,
    members: Sequence[str] = (),
    only: Sequence[str] = (),
    dtype: torch.dtype | str | None = None,
    learn_weights: bool = False,
) -> tuple[FusionConfig, list[MemberLayers]]:
    """Probe every hidden state of every chosen member (default: all) on every task; with
    ``learn_weights``, also learn each member's layer weights (:func:`learn_layer_weights`). ``dtype``: a
    precision, its name or ``"auto"`` (decided once, for ``settings.device``)."""
    config = resolve_config(model_ref)
    dtype = resolve_dtype(dtype, settings.device)
    names = [m.name for m in config.members]
    unknown = [name for name in members if name not in names]
    if unknown:
        raise UsageError(f"--members {' '.join(unknown)}: not a member of {config.name!r}; its members: {names}")
    task_paths = select_tasks(tasks_dir, tuple(only))
    analysed = []
    for member_config in config.members:
        if members and member_config.name not in members:
            continue
        member = member_config.name
        solo = FusionModel.from_config(config.solo(member), device=settings.device, dtype=dtype)  # only its weights
        views = [state_view(solo.config, member, index) for index in range(solo.members[member].upstream.num_states)]
        layers = MemberLayers(member, member_config.family, member_config.checkpoint, views)
        results = execute(_member_jobs(solo, views, task_paths, settings, dtype), settings, on_ray=False)
        layers.results = [results[i * len(task_paths) : (i + 1) * len(task_paths)] for i in range(len(views))]
        layers.best_state = best_state(layers.results)
        if learn_weights:
            layers.learned_weights = learned_weights(layers, task_paths, settings, dtype)
        analysed.append(layers)
    return config, analysed


def _member_jobs(
    solo: FusionModel,
    views: list[FusionConfig],
    task_paths: list[Path],
    settings: EvaluationSettings,
    dtype: torch.dtype | None,
) -> list:
    """The view x task jobs of one member (``solo``: the member alone); the first job that must embed a
    task fills every view's cache for it from one pass of the member (the others then read the cache)."""
    member = solo.config.members[0].name
    upstream = solo.members[member].upstream
    variants = {member: [view.members[0].aggregation for view in views]}
    filled: set[str] = set()

    def compute_with(view: FusionConfig):
        view_model = FusionModel(view, {member: upstream}, dtype=dtype)

        def compute(task: Task) -> dict:
            if task.name not in filled:
                load_task(task.path, read_headers=True)  # every bad audio file named before any work
                embed_task(solo, task, settings, variants)
                filled.add(task.name)
            return evaluate_task(view_model, task, settings)

        return compute

    return [job for view in views for job in model_jobs(view, task_paths, settings, dtype, compute=compute_with(view))]


def best_state(results: list[list[dict]]) -> int | None:
    """The state with the best mean rank over the tasks by *validation* score (the probe's chosen
    candidate on the first split); ties go to the lower state. None when no task scored."""
    means = mean_ranks(results)
    if not means or min(means) == math.inf:
        return None
    return means.index(min(means))


def mean_ranks(results: Sequence[Sequence[dict]]) -> list[float]:
    """Each entry's mean over the tasks of its :func:`validation_ranks` (``results[entry][task]``); inf for
    an entry no task scored."""
    ranks: list[list[float]] = [[] for _ in results]
    for task_index in range(len(results[0]) if results else 0):
        for entry, rank in enumerate(validation_ranks([per_task[task_index] for per_task in results])):
            if rank is not None:
                ranks[entry].append(rank)
    return [sum(r) / len(r) if r else math.inf for r in ranks]


def validation_ranks(records: Sequence[dict]) -> list[float | None]:
    """Dense ranks (0 = best; equal values share one) of results on one task by validation score, in the
    direction of what was monitored (a loss is better lower); None where a result has no such score."""
    scored = {}
    for index, record in enumerate(records):
        value = record.get("validation_score")
        if record.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value):
            higher = record.get("higher_is_better", True) if record.get("monitor") == "score" else False
            scored[index] = value if higher else -value
    ordered = sorted(set(scored.values()), reverse=True)
    return [float(ordered.index(scored[index])) if index in scored else None for index in range(len(records))]


# ------------------------------------------------------------------------------------------------
# learned layer weights


@dataclass
class StateRows:
    """One task's rows for weight learning: per state, the training and validation rows."""

    train: list[np.ndarray]  # per state (rows, C)
    y_train: np.ndarray
    valid: list[np.ndarray]
    y_valid: np.ndarray
    prediction_type: str


#: The joint fit of layer weights and heads: L-BFGS until no gradient component exceeds the tolerance.
WEIGHTS_TOLERANCE = 1e-7
WEIGHTS_MAX_ITERATIONS = 1000
#: Rows per chunk of the joint loss (every state of a chunk is held at once, in float64).
WEIGHTS_CHUNK_ROWS = 2048


def learn_layer_weights(tasks: Sequence[StateRows], *, device: str = "cpu") -> list[float]:
    """Softmax weights over the states, learned jointly with one linear head per task, to convergence
    (s3prl's featurizer feeding the linear probe).

    Each state is first centred and divided by its RMS on the task's training rows (one scalar per
    state), so the weights compare what layers carry, not how large their activations are; the mix is
    then standardised per feature with the moments of the states' plain average. For each task the
    linear probe's search (:func:`.linear.search`, on validation loss) fits that plain average, which
    gives the task's L2 penalty and the heads' starting point; then the softmax logits (from zero, the
    plain average) and all heads are fitted together by full-batch L-BFGS on the tasks' summed
    training objectives. Deterministic; no learning rate or epoch budget. The returned weights are on
    the *raw* states, summing to 1: ``sum_i w_i h_i`` equals the learned combination up to one scale
    and offset per feature, which standardised probes do not see. Rows are read per chunk
    (memory-mapped caches stay on disk when they do not fit in memory).
    """
    prepared = [_TaskStates(rows, device) for rows in tasks]
    starts = [task.plain_average_probe() for task in prepared]
    logits = torch.zeros(len(tasks[0].train), dtype=torch.float64, device=device, requires_grad=True)
    heads = [(start.weight.clone().requires_grad_(True), start.bias.clone().requires_grad_(True)) for start in starts]
    solver = torch.optim.LBFGS(
        [logits, *(p for head in heads for p in head)],
        lr=1.0,
        max_iter=WEIGHTS_MAX_ITERATIONS,
        max_eval=WEIGHTS_MAX_ITERATIONS * 2,
        tolerance_grad=WEIGHTS_TOLERANCE,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> torch.Tensor:
        solver.zero_grad()
        total = 0.0
        for task, (weight, bias), start in zip(prepared, heads, starts):
            count = task.rows("train")
            for first in range(0, count, WEIGHTS_CHUNK_ROWS):
                index = torch.arange(first, min(first + WEIGHTS_CHUNK_ROWS, count))
                states, targets = task.batch("train", index)
                mixed = torch.einsum("s,snc->nc", logits.softmax(0), states.double())
                inputs = (mixed - start.mean) * start.scale
                part = loss(inputs @ weight + bias, targets.double(), task.kind, reduction="sum") / count
                part.backward()
                total += part.item()
            penalty = 0.5 * start.params.l2 * weight.pow(2).sum()
            penalty.backward()
            total += penalty.item()
        return torch.tensor(total, dtype=torch.float64)

    solver.step(objective)
    # raw-state weights: softmax / scale, the scale a geometric mean over the tasks
    scale = torch.stack([task.scale.double().log() for task in prepared]).mean(0).exp()
    raw = logits.detach().softmax(0) / scale
    return (raw / raw.sum()).cpu().tolist()


class _TaskStates:
    """One task's states for weight learning, centred and scaled per state with the training moments."""

    def __init__(self, rows: StateRows, device: str):
        moments = [column_moments(state) for state in rows.train]
        self.mean = torch.stack([m for m, _ in moments]).to(device)  # (S, C)
        self.scale = torch.stack([(s.double() ** 2).mean().sqrt().float().clamp_min(1e-12) for _, s in moments]).to(
            device
        )
        self.states = {"train": [Rows(s, device) for s in rows.train], "valid": [Rows(s, device) for s in rows.valid]}
        self.targets = {
            "train": torch.from_numpy(np.asarray(rows.y_train, np.float32)).to(device),
            "valid": torch.from_numpy(np.asarray(rows.y_valid, np.float32)).to(device),
        }
        self.width, self.labels, self.kind = self.mean.shape[1], rows.y_train.shape[1], rows.prediction_type
        self.device = device

    def rows(self, split: str) -> int:
        return len(self.targets[split])

    def plain_average(self, split: str) -> np.ndarray:
        """The mean of the normalised states, every row (float32, built chunk by chunk)."""
        count = self.rows(split)
        out = np.empty((count, self.width), np.float32)
        for first in range(0, count, WEIGHTS_CHUNK_ROWS):
            index = torch.arange(first, min(first + WEIGHTS_CHUNK_ROWS, count))
            out[first : first + len(index)] = self.batch(split, index)[0].mean(0).cpu().numpy()
        return out

    def plain_average_probe(self) -> LinearPredictor:
        """The linear probe of the plain average, its L2 strength chosen on validation loss."""
        valid, y_valid = self.plain_average("valid"), self.targets["valid"].cpu().numpy()
        problem = LogisticProblem(
            self.plain_average("train"), self.targets["train"].cpu().numpy(), self.kind, self.device
        )
        candidates = search(
            problem, lambda p: (validation_loss(p, valid, y_valid, self.kind), None), VALIDATION_LOSS.rank
        )
        return best_candidate(candidates, VALIDATION_LOSS.rank)

    def batch(self, split: str, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States ``(S, batch, C)`` and targets of the given rows."""
        states = torch.stack([rows[index] for rows in self.states[split]])
        return (states - self.mean[:, None, :]) / self.scale[:, None, None], self.targets[split][
            index.to(self.mean.device)
        ]


def state_rows(layers: MemberLayers, task: Task, settings: EvaluationSettings, dtype: torch.dtype | None) -> StateRows:
    """A task's cached rows of every state of a member: training splits and validation split of the
    first fold (where the probes choose their hyperparameters)."""
    fold = task.folds()[0]

    def split_data(view: FusionConfig, split: str) -> SplitData:
        directory = split_dir(settings.cache_dir, embedding_key(view, dtype), task, split)
        return from_cache(task, split, read_split(directory))

    def stacked(view: FusionConfig, splits: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [split_data(view, split) for split in splits]
        if len(parts) == 1:  # stays memory-mapped
            return parts[0].x, parts[0].y
        return np.concatenate([np.asarray(p.x) for p in parts]), np.concatenate([p.y for p in parts])

    train = [stacked(view, fold.train) for view in layers.views]
    valid = [stacked(view, [fold.valid]) for view in layers.views]
    kind = "multilabel" if task.embedding_type == "event" else task.prediction_type
    return StateRows([x for x, _ in train], train[0][1], [x for x, _ in valid], valid[0][1], kind)


def learned_weights(
    layers: MemberLayers, task_paths: Sequence[Path], settings: EvaluationSettings, dtype: torch.dtype | None
) -> list[float] | None:
    """:func:`learn_layer_weights` on the tasks where every state was embedded and scored."""
    scored = [
        index
        for index in range(len(task_paths))
        if all(per_task[index].get("status") == "ok" for per_task in layers.results)
    ]
    if not scored:
        return None
    tasks = [state_rows(layers, load_task(task_paths[index]), settings, dtype) for index in scored]
    return learn_layer_weights(tasks, device=settings.device)


def chosen_config(config: FusionConfig, analysed: Sequence[MemberLayers], choice: str) -> FusionConfig:
    """``config`` with each analysed member's aggregation the learned weights or its best state."""
    if choice not in CHOICES:
        raise UsageError(f"--choose {choice!r}: expected one of {', '.join(CHOICES)}")
    aggregations = {}
    for layers in analysed:
        if choice == "learned" and layers.learned_weights is not None:
            aggregations[layers.member] = LayerAggregation("weights", weights=tuple(layers.learned_weights))
        elif choice == "best" and layers.best_state is not None:
            aggregations[layers.member] = LayerAggregation("layers", (layers.best_state,))
        else:
            raise UsageError(f"member {layers.member!r}: no task was scored for every state; nothing to choose from")
    return config.with_aggregations(aggregations).with_options(name=f"{config.name}-{choice}")


# ------------------------------------------------------------------------------------------------
# outputs


def layer_table(config: FusionConfig, analysed: Sequence[MemberLayers], probe: str) -> dict:
    """The layer x task table as data (what ``<model>-layers-<probe>.json`` holds)."""
    members = []
    for layers in analysed:
        tasks = {}
        for index in range(len(layers.results[0]) if layers.results else 0):
            per_state = [per_task[index] for per_task in layers.results]
            first = next((r for r in per_state if r.get("status") == "ok"), per_state[0])
            metric = first.get("metric")
            tasks[first["task"]] = {
                "metric": metric,
                "higher_is_better": first.get("higher_is_better"),
                "test": [
                    (r.get("test") or {}).get(metric, {}).get("mean") if r["status"] == "ok" else None
                    for r in per_state
                ],
                "validation": [r.get("validation_score") for r in per_state],
                "status": [r["status"] for r in per_state],
            }
        members.append(
            {
                "member": layers.member,
                "family": layers.family,
                "checkpoint": layers.checkpoint,
                "states": len(layers.views),
                "views": [view.name for view in layers.views],
                "tasks": tasks,
                "best_state": layers.best_state,
                "learned_weights": layers.learned_weights,
            }
        )
    return {"model": config.name, "probe": probe, "config": config.to_dict(), "members": members}


def write_outputs(
    config: FusionConfig, analysed: Sequence[MemberLayers], probe: str, out_dir: Path
) -> tuple[Path, Path, list[Path]]:
    """``<model>-layers-<probe>.md``/``.json`` and one ``<model>-<member>-layers-<probe>.png`` per member."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{config.name}-layers-{probe}"
    pictures, parts = [], [f"# Layer-wise analysis of {config.name}, {probe} probe\n"]
    parts.append(
        "Each row is one hidden state of the member alone (aggregation `[i]`, on its own frames), scored on the "
        "task's test data as `hearfuse evaluate --probe " + probe + "` scores a model; ×100 except d_prime, "
        "best per task in **bold**. State 0 is a transformer's embedding output (CREPE: pool-1).\n"
    )
    for layers in analysed:
        picture = out_dir / f"{config.name}-{layers.member}-layers-{probe}.png"
        title = f"{config.name}: {layers.member} ({layers.family} {Path(layers.checkpoint).name}), {probe} probe"
        layer_heatmap(layers.records(), picture, title)
        pictures.append(picture)
        parts += [
            f"## {layers.member} ({layers.family}, `{layers.checkpoint}`)\n",
            report.markdown_table(layers.records(), row_header="State"),
        ]
        if layers.best_state is not None:
            parts.append(f"Best state on validation (mean rank over tasks): **{layers.best_state}**.\n")
        if layers.learned_weights is not None:
            weights = ", ".join(f"{w:.3f}" for w in layers.learned_weights)
            parts.append(f"Learned weights on the raw states (sum 1): {weights}.\n")
        parts.append(f"![{layers.member} layers]({picture.name})\n")
    markdown, table = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    write_text_atomic(markdown, "\n".join(parts))
    write_text_atomic(table, json.dumps(layer_table(config, analysed, probe), indent=2))
    return markdown, table, pictures


__all__ = [
    "CHOICES",
    "MemberLayers",
    "StateRows",
    "analyse_layers",
    "best_state",
    "chosen_config",
    "learn_layer_weights",
    "learned_weights",
    "mean_ranks",
    "state_view",
    "validation_ranks",
    "write_outputs",
]
