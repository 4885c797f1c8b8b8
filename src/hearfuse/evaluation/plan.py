"""``hearfuse plan``: which fusion of some members is best for some tasks, chosen on validation data, from
one pass of each member per clip.

Every hidden state of every member is computed once per clip and cached (:meth:`Plan.embed`): on an event
task as the view ``<config>.<member>.<i>`` that ``hearfuse layers`` and ``hearfuse evaluate`` cache for
it, on a scene task as that view's scene frames (the frames its scene embedding pools; see
:mod:`.cache`). Every candidate fusion is then built from those states (:func:`fused_split`) by the
fusion step :class:`~hearfuse.model.FusionModel` itself runs (:func:`hearfuse.model.align_and_join`,
:func:`~hearfuse.model.scene_pooling_weights`, :func:`~hearfuse.model.join_members`), so a candidate's
embeddings are its config's, and ``hearfuse evaluate`` on an emitted config gives the plan's numbers.

The candidate space (:class:`Space`, printed by the command with its size):

- per member, its state choice: the last state; the mean of all (the paper's fusion); its best single
  state on validation (best mean rank over the tasks); and, when asked for (``learned`` in ``states``),
  softmax weights over its states learned jointly with a linear head per task on the training data
  (:func:`.layers.learn_layer_weights`, as ``hearfuse layers --choose learned``: a joint L-BFGS fit to
  convergence over every task's rows, a cost of its own, so not a default);
- every subset of the members (of at least ``min_members``);
- how a subset is combined: ``cat`` and ``avg``, and ``cat`` with every member weighted equally
  (``member_weighting = "equal"``); each interpolates every member's feature axis to the reference's
  width, as the paper does;
- the alignment reference, whose frames and width the others take: each member of the subset;
- scene pooling (scene tasks): the mean, or the means of 5 consecutive groups.

Members are aligned by their frames' timestamps. ``states``, ``combinations`` and ``min_members``
narrow the space. Beside it, every member's single states (stage 1) and the paper's recipe (every
member's mean state, concatenated and interleaved, stretched onto the first member's frames) are scored:
the first give each member's best state and the best single member, the second is what the paper would
have used.

Search (:data:`SEARCHES`): ``exhaustive`` scores the whole space; ``staged`` (the default) scores it one
factor at a time, as the paper's ablation did: (1) each member alone with each single state and the mean
(with only the state choices asked for, when ``best`` is not one); (2) every subset of two or more (of at
least ``min_members``) with every member's last, mean or best state (one rule for all), each combination,
on the first member's frames, mean pooling; (3) for the :data:`REFINED` best by mean rank, every other
reference and 5-group pooling.

Candidates are scored on validation only (the probe's choice on the first split,
:func:`.evaluate.select_on_validation`), with the linear probe; with ``probe="mlp"`` the :data:`RESCORED` best per task
and overall are scored again with the kit's MLP, which then chooses. The choice is among every
candidate scored that has at least ``min_members`` members. Test scores are computed only for what is
reported: each task's choice, the choice for all tasks (best mean rank), each task's best single member,
the paper's recipe and each member alone (the mean of its states). Every score is stored like
``hearfuse evaluate``'s results, with the candidate's embedding key as provenance, and reused while it
holds: a plan stopped at any point goes on where it stopped.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .. import catalogue
from ..audio import audio_info, load_audio
from ..config import FusionConfig, MemberConfig
from ..errors import UsageError
from ..files import write_text_atomic
from ..fusion.aggregation import LayerAggregation
from ..fusion.pooling import pool
from ..hear import resolve_config
from ..model import FusionModel, align_and_join, join_members, scene_pooling_weights
from ..upstream import get_family
from . import predictions
from .cache import SplitEmbeddings, cached_clips, embedding_key, read_split, rows_key, split_dir
from .evaluate import (
    EvaluationSettings,
    embed_task,
    model_jobs,
    score_task,
    select_on_validation,
    selection_record,
)
from .layers import (
    WEIGHTS_MAX_ITERATIONS,
    WEIGHTS_TOLERANCE,
    StateRows,
    best_state,
    learn_layer_weights,
    mean_ranks,
    state_view,
    validation_ranks,
)
from .predictions import Predictions
from .protocol import KIT_PROBE, LINEAR_DEFINITION
from .provenance import files_stamp, task_content
from .results import result_path
from .splits import SplitData, from_cache
from .tasks import Task, load_task, select_tasks

log = logging.getLogger(__name__)

#: The state choices of a member, the combinations of a subset and the scene poolings of the space.
STATES = ("last", "mean", "best", "learned")
#: The state choices unless told otherwise: learned weights cost a joint fit per member (see the docstring).
DEFAULT_STATES = ("last", "mean", "best")
COMBINATIONS = ("cat", "avg", "cat_eq")
SCENE_GROUPS = (1, 5)
SEARCHES = ("staged", "exhaustive")
#: Staged search: how many of the best candidates (mean rank) stage 3 varies.
REFINED = 3
#: ``probe="mlp"``: how many of the best by the linear probe, per task and overall, the MLP scores again.
RESCORED = 3
#: The probes a plan reports with: the linear probe alone, or the kit's MLP on the linear probe's best.
PROBES = ("linear", KIT_PROBE)
#: Seconds of audio a member is timed on when every clip of it came from the cache.
SAMPLE_SECONDS = 20.0


@dataclass(frozen=True)
class Space:
    """The candidate space: which state choices (:data:`STATES`), combinations (:data:`COMBINATIONS`)
    and subset sizes it holds (see the module docstring)."""

    states: tuple[str, ...] = DEFAULT_STATES
    combinations: tuple[str, ...] = COMBINATIONS
    min_members: int = 1

    def __post_init__(self) -> None:
        for option, values, known in (
            ("--states", self.states, STATES),
            ("--combine", self.combinations, COMBINATIONS),
        ):
            unknown = [v for v in values if v not in known]
            if unknown or not values:
                raise UsageError(f"{option} {','.join(values)}: expected some of {', '.join(known)}, comma-separated")
        if self.min_members < 1:
            raise UsageError(f"--min-members {self.min_members}: expected 1 or more")

    def describe(self) -> str:
        combinations = {"cat": "cat", "avg": "avg", "cat_eq": "cat with members weighted equally"}
        states = {
            "last": "its last state",
            "mean": "the mean of all its states (the paper)",
            "best": "its best single state on validation",
            "learned": "its state weights learned with a linear head per task",
        }
        sizes = "every non-empty subset" if self.min_members == 1 else f"every subset of {self.min_members} or more"
        return (
            f"per member: {', '.join(states[s] for s in self.states)}; {sizes} of the members; combined by "
            f"{', '.join(combinations[c] for c in self.combinations)} (every member interpolated to the "
            "reference's width, the paper's); each member of the subset as the alignment reference; scene "
            "pooling by the mean or 5 group means (scene tasks)"
        )


# ------------------------------------------------------------------------------------------------
# members


@dataclass(frozen=True)
class PlanMember:
    """A member the plan fuses, with the config it came from: its states are cached as that config's
    views ``<config>.<member>.<i>`` (:func:`.layers.state_view`), where ``hearfuse layers`` keeps them."""

    config: MemberConfig
    source: FusionConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def solo(self) -> FusionConfig:
        return self.source.solo(self.name)

    def view(self, index: int) -> FusionConfig:
        return state_view(self.solo, self.name, index)


def resolve_members(specs: Sequence[str]) -> list[PlanMember]:
    """``--member`` values: a preset or real model's name or a config file (each of its members), or
    ``<name or file>:<member>`` (that member). Names must be unique (a real model whose member's name is
    taken, such as a second CREPE size, is named after the model), and all members share one long-audio
    windowing (the fused configs have one)."""
    if not specs:
        raise UsageError("--member: name at least one member (a real model, a preset, a config file or FILE:MEMBER)")
    members: list[PlanMember] = []
    origin: dict[str, str] = {}
    for spec in specs:
        source, chosen = _source_of(spec)
        names = [m.name for m in source.members]
        if chosen is not None and chosen not in names:
            raise UsageError(f"--member {spec}: {source.name!r} has no member {chosen!r}; its members: {names}")
        if names[0] in origin and spec in catalogue.real_models() and spec not in origin:
            source = source.with_options(members=(replace(source.members[0], name=spec),))
        for member in source.members:
            if chosen is not None and member.name != chosen:
                continue
            if member.name in origin:
                raise UsageError(
                    f"--member {spec}: a member named {member.name!r} also comes from --member {origin[member.name]}; "
                    "member names must be unique (rename one in a config file)"
                )
            origin[member.name] = spec
            members.append(PlanMember(member, source))
    windows = {(m.source.window_seconds, m.source.window_context_seconds): m.name for m in members}
    if len(windows) > 1:
        described = ", ".join(
            f"{name}: {window} s (context {context} s)" for (window, context), name in windows.items()
        )
        raise UsageError(f"--member: the members' configs window long audio differently ({described}); make them equal")
    return members


def _source_of(spec: str) -> tuple[FusionConfig, str | None]:
    prefix, colon, name = spec.rpartition(":")
    if colon and prefix and name:
        try:
            return resolve_config(prefix), name
        except UsageError as error:
            if Path(prefix).expanduser().is_file():
                raise UsageError(f"--member {spec}: {error}") from None
    try:
        return resolve_config(spec), None
    except UsageError as error:
        raise UsageError(f"--member {spec}: {error}") from None


# ------------------------------------------------------------------------------------------------
# candidates


def candidate_name(config: FusionConfig) -> str:
    """A candidate's name, from what defines it: ``cat_eq-a.mean+b.3-ref.b-g5`` is a and b (a's mean
    state, b's state 3) concatenated with equal weights, on b's frames, pooled in 5 groups."""
    name = "+".join(f"{m.name}.{_state_label(m.aggregation)}" for m in config.members)
    if len(config.members) > 1:
        name = f"{config.combine}{'_eq' if config.member_weighting == 'equal' else ''}-{name}"
        if config.reference_member.name != config.members[0].name:
            name += f"-ref.{config.reference_member.name}"
        name += "-stretch" if config.time_alignment == "stretch" else ""
        name += "-interleaved" if config.interleave else ""
    name += f"-g{config.scene_groups}" if config.scene_groups > 1 else ""
    return re.sub(r"[^\w.+-]", "_", name)


def _state_label(aggregation: LayerAggregation) -> str:
    if aggregation.mode == "layers":
        return "_".join(str(i) for i in aggregation.layers or ())
    return "learned" if aggregation.mode == "weights" else aggregation.mode


@dataclass
class Candidate:
    """A scored candidate: its config (scene pooling as chosen; event tasks see it with one group) and
    its validation results per probe and task."""

    config: FusionConfig
    stage: str
    validation: dict[str, dict[str, dict]] = field(default_factory=dict)  # probe -> task -> result

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def members(self) -> list[str]:
        return [m.name for m in self.config.members]


def for_task(config: FusionConfig, task: Task) -> FusionConfig:
    """The config a task sees: an event task has no scene embedding, so its scene pooling is no choice."""
    if task.embedding_type == "event" and config.scene_groups != 1:
        config = config.with_options(scene_groups=1)
        return config.with_options(name=candidate_name(config))
    return config


# ------------------------------------------------------------------------------------------------
# fusing cached states


def fused_split(
    config: FusionConfig, states: Mapping[str, tuple[torch.Tensor, SplitEmbeddings]], kind: str
) -> SplitEmbeddings:
    """A split's embeddings of ``config`` from its members' aggregated frames ``(rows, C_m)`` and the
    cached split they came from (clips, frame centres): each clip through the fusion step FusionModel runs,
    aligned onto the reference's frames (``kind="event"``) or pooled (``"scene"``)."""
    reference = config.reference_member.name
    first = states[reference][1]
    rows: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for clip, name in enumerate(first.files):
        frames, centres = {}, {}
        for member, (aggregated, cached) in states.items():
            if cached.files[clip] != name:
                raise RuntimeError(
                    f"member {member}'s cached clips are in another order ({cached.files[clip]} vs {name})"
                )
            start, count = int(cached.starts[clip]), int(cached.counts[clip])
            frames[member] = aggregated[start : start + count][None]
            centres[member] = torch.from_numpy(np.array(cached.timestamps[start : start + count], dtype=np.float64))
        if kind == "event":
            rows.append(align_and_join(config, frames, centres)[0].numpy())
            start, count = int(first.starts[clip]), int(first.counts[clip])
            times.append(np.array(first.timestamps[start : start + count], dtype=np.float32))
        else:
            weights = scene_pooling_weights(config, centres)
            pooled = {member: pool(x, weights[member]) for member, x in frames.items()}
            rows.append(join_members(config, pooled).flatten(1).numpy())
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    return SplitEmbeddings(
        rows=np.concatenate(rows) if rows else np.zeros((0, 0), np.float32),
        files=list(first.files),
        starts=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if rows else counts,
        counts=counts,
        timestamps=np.concatenate(times) if kind == "event" and times else None,
    )


def aggregate_states(states: Sequence[torch.Tensor], aggregation: LayerAggregation) -> torch.Tensor:
    """The weighted sum of cached states an aggregation takes, accumulated as the model accumulates it
    (:func:`~hearfuse.fusion.aggregation.aggregate_each`: in state order, in float32)."""
    total = None
    for index, weight in sorted(aggregation.state_weights(len(states)).items()):
        total = states[index] * weight if total is None else total.add_(states[index], alpha=weight)
    return total


# ------------------------------------------------------------------------------------------------
# the plan


@dataclass
class MemberCost:
    """What one member's passes cost on this device: seconds spent and seconds of audio embedded."""

    embed_s: float = 0.0
    audio_s: float = 0.0
    sampled: bool = False  # timed on a sample (its clips all came from the cache)

    @property
    def real_time_factor(self) -> float:
        return self.embed_s / self.audio_s if self.audio_s else math.nan


class Plan:
    """The members, the tasks, and every candidate scored so far (see the module docstring)."""

    def __init__(
        self,
        members: Sequence[PlanMember],
        tasks_dir: str | Path,
        settings: EvaluationSettings,
        *,
        only: Sequence[str] = (),
        dtype: torch.dtype | None = None,
        probe: str = "linear",
        search: str = "staged",
        paper: bool = False,
        space: Space = Space(),
    ):
        if probe not in PROBES:
            raise UsageError(f"--probe {probe}: a plan scores with {' or '.join(PROBES)}")
        if search not in SEARCHES:
            raise UsageError(f"--search {search}: expected one of {', '.join(SEARCHES)}")
        if paper and (space != Space() or search != "staged"):
            raise UsageError(
                "--paper scores the rows of the paper's tables: drop --states, --combine, --min-members and --search"
            )
        if space.min_members > len(members):
            raise UsageError(
                f"--min-members {space.min_members}: no candidate is left, only {len(members)} member(s) were given "
                f"({', '.join(m.name for m in members)})"
            )
        self.members = {member.name: member for member in members}
        # a task without a validation split is refused here (load_task)
        self.tasks = [load_task(path) for path in select_tasks(tasks_dir, tuple(only))]
        self.settings, self.dtype, self.probe, self.search, self.paper = settings, dtype, probe, search, paper
        self.space = space
        self.folder = settings.results_dir
        self.num_states: dict[str, int] = {}
        self.widths: dict[str, int] = {}
        self.costs: dict[str, MemberCost] = {}
        self.best_states: dict[str, int] = {}
        self.learned: dict[str, tuple[float, ...]] = {}
        self.candidates: dict[str, Candidate] = {}
        self._models: dict[str, FusionModel] = {}
        self._aggregated: OrderedDict = OrderedDict()

    # -- the members' passes ---------------------------------------------------------------------

    def embed(self) -> None:
        """Every state of every member on every task into the cache, from one pass of the member per clip
        (nothing that is cached already), timed per member on this device."""
        timings_path = self.folder / "members.json"
        stored = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
        for member in self.members.values():
            self.num_states[member.name] = self._num_states(member)
            identity = {"config": embedding_key(member.solo, self.dtype), "device": self.settings.device}
            record = stored.get(member.name) if (stored.get(member.name) or {}).get("identity") == identity else None
            cost = MemberCost(**record["cost"]) if record else MemberCost()
            pending = {task.name: self._pending_seconds(member, task) for task in self.tasks}
            if any(pending.values()):
                model = self._model(member)
                variants = self._variants(member)
                started = time.perf_counter()
                for task in self.tasks:
                    if pending[task.name]:
                        load_task(task.path, read_headers=True)  # every bad audio file named before any work
                        embed_task(model, task, self.settings, variants, scene_frames=task.embedding_type == "scene")
                if cost.sampled:
                    cost = MemberCost()
                cost.embed_s += time.perf_counter() - started
                cost.audio_s += sum(pending.values())
            elif not cost.audio_s:
                cost = self._sample_cost(member)
            self.costs[member.name] = cost
            stored[member.name] = {"identity": identity, "cost": vars(cost)}
            write_text_atomic(timings_path, json.dumps(stored, indent=2))
            self.widths[member.name] = int(
                self._cached(member, self.tasks[0], self.tasks[0].splits[0])[0].rows.shape[1]
            )

    def _num_states(self, member: PlanMember) -> int:
        info = get_family(member.config.family).checkpoints.get(member.config.checkpoint)
        return info.num_states if info is not None else self._model(member).members[member.name].upstream.num_states

    def _model(self, member: PlanMember) -> FusionModel:
        if member.name not in self._models:
            self._models[member.name] = FusionModel.from_config(
                member.solo, device=self.settings.device, dtype=self.dtype
            )
        return self._models[member.name]

    def _variants(self, member: PlanMember) -> dict[str, list[LayerAggregation]]:
        return {member.name: [LayerAggregation("layers", (i,)) for i in range(self.num_states[member.name])]}

    def _state_dir(self, member: PlanMember, index: int, task: Task, split: str) -> Path:
        key = rows_key(member.view(index), self.dtype, scene_frames=task.embedding_type == "scene")
        return split_dir(self.settings.cache_dir, key, task, split)

    def _pending_seconds(self, member: PlanMember, task: Task) -> float:
        """Seconds of the task's audio some state of ``member`` lacks in the cache."""
        total = 0.0
        for split, files in task.kit_file_order().items():
            done = min(
                cached_clips(
                    self._state_dir(member, i, task, split),
                    task,
                    split,
                    files,
                    scene_frames=task.embedding_type == "scene",
                )
                for i in range(self.num_states[member.name])
            )
            total += sum(audio_info(task.audio_dir(split) / name).duration for name in files[done:])
        return total

    def _sample_cost(self, member: PlanMember) -> MemberCost:
        """The member timed on the first clips (about :data:`SAMPLE_SECONDS`) of the first task, every state
        at once as its passes run: its speed when all its states came from the cache."""
        task = self.tasks[0]
        split, files = next(iter(task.kit_file_order().items()))
        clips, seconds = [], 0.0
        for name in files:
            clips.append(torch.from_numpy(load_audio(task.audio_dir(split) / name, FusionModel.sample_rate)))
            seconds += len(clips[-1]) / FusionModel.sample_rate
            if seconds >= SAMPLE_SECONDS:
                break
        model = self._model(member)
        frames = task.embedding_type == "event"
        started = time.perf_counter()
        model.embed_each_variants(clips, self._variants(member), timestamp=frames, scene=not frames)
        return MemberCost(time.perf_counter() - started, seconds, sampled=True)

    def _cached(self, member: PlanMember, task: Task, split: str) -> list[SplitEmbeddings]:
        return [read_split(self._state_dir(member, i, task, split)) for i in range(self.num_states[member.name])]

    def learn_weights(self) -> None:
        """Each member's state weights learned jointly with a linear head per task
        (:func:`.layers.learn_layer_weights`) from its cached states, on every task's training and validation
        data; stored in ``learned.json`` and reused while the member, the tasks and their audio are the same."""
        path = self.folder / "learned.json"
        stored = json.loads(path.read_text()) if path.is_file() else {}
        definition = {
            "weights": {"tolerance": WEIGHTS_TOLERANCE, "max_iterations": WEIGHTS_MAX_ITERATIONS},
            "linear": LINEAR_DEFINITION,
        }
        tasks = {
            task.name: [
                task_content(task),
                *(files_stamp(task.audio_dir(s), order) for s, order in task.kit_file_order().items()),
            ]
            for task in self.tasks
        }
        for name, member in self.members.items():
            identity = {"member": embedding_key(member.solo, self.dtype), "tasks": tasks, "definition": definition}
            if (stored.get(name) or {}).get("identity") != identity:
                log.info("learning the state weights of %s on %d task(s)", name, len(self.tasks))
                rows = [self._state_rows(name, task) for task in self.tasks]
                weights = learn_layer_weights(rows, device=self.settings.device)
                stored[name] = {"identity": identity, "weights": weights}
                write_text_atomic(path, json.dumps(stored, indent=2))
            self.learned[name] = tuple(stored[name]["weights"])

    def _state_rows(self, member: str, task: Task) -> StateRows:
        """A task's rows of every state of ``member`` on the first fold's training and validation splits,
        as the member alone embeds each state (for a scene task: pooled)."""
        fold = task.folds()[0]
        train, valid = [], []
        for index in range(self.num_states[member]):
            data = self.data(self.fusion({member: index}), task, [*fold.train, fold.valid])
            train.append(np.concatenate([np.asarray(data[split].x) for split in fold.train]))
            valid.append(np.asarray(data[fold.valid].x))
        kind = "multilabel" if task.embedding_type == "event" else task.prediction_type
        y_train = np.concatenate([data[split].y for split in fold.train])
        return StateRows(train, y_train, valid, data[fold.valid].y, kind)

    # -- candidates ------------------------------------------------------------------------------

    def fusion(
        self,
        choices: Mapping[str, str | int],
        *,
        combine: str = "cat",
        reference: str | None = None,
        scene_groups: int = 1,
        time_alignment: str = "timestamps",
        interleave: bool = False,
    ) -> FusionConfig:
        """The config of a candidate: the members in ``choices`` (in the plan's order), each with its state
        choice (:data:`STATES` or a state index), combined as :data:`COMBINATIONS` says."""
        names = [name for name in self.members if name in choices]
        members = tuple(
            replace(self.members[name].config, aggregation=self._aggregation(name, choices[name])) for name in names
        )
        single = len(members) == 1
        source = self.members[names[0]].source
        config = FusionConfig(
            name="candidate",
            members=members,
            reference=None if single else reference or names[0],
            combine="avg" if combine == "avg" and not single else "cat",
            interleave=interleave and not single,
            time_alignment="timestamps" if single else time_alignment,
            scene_groups=scene_groups,
            window_seconds=source.window_seconds,
            window_context_seconds=source.window_context_seconds,
            member_weighting="equal" if combine == "cat_eq" and not single else "none",
        )
        return config.with_options(name=candidate_name(config))

    def _aggregation(self, member: str, choice: str | int) -> LayerAggregation:
        """A state choice as an aggregation, in one form per set of weights (the last state is ``last``)."""
        states = self.num_states[member]
        if choice == "learned":
            return LayerAggregation("weights", weights=self.learned[member])
        index = self.best_states[member] if choice == "best" else choice
        if isinstance(index, str):
            aggregation = LayerAggregation(index)
        else:
            aggregation = LayerAggregation("layers", (index % states,))
        return LayerAggregation("last") if aggregation.state_weights(states) == {states - 1: 1.0} else aggregation

    def paper_recipe(self) -> FusionConfig:
        """The paper's recipe on these members: each one's mean state, concatenated interleaved, stretched
        onto the first member's frames (its ``fusion_cat_*`` systems)."""
        return self.fusion(
            {name: "mean" for name in self.members}, time_alignment="stretch", interleave=len(self.members) > 1
        )

    def subsets(self, smallest: int = 1) -> list[tuple[str, ...]]:
        names = list(self.members)
        return [s for size in range(smallest, len(names) + 1) for s in itertools.combinations(names, size)]

    def space_size(self) -> int:
        """Candidates in the whole space (:class:`Space`), given each member's distinct state choices."""
        groups = len(SCENE_GROUPS) if self._has_scene_tasks else 1
        total = 0
        for subset in self.subsets(self.space.min_members):
            choices = math.prod(len(self._choices(name)) for name in subset)
            total += choices * groups * (1 if len(subset) == 1 else len(self.space.combinations) * len(subset))
        return total

    def _choices(self, member: str) -> list[str]:
        """A member's distinct state choices in the space (the best state may be its last)."""
        distinct = {self._aggregation(member, choice): choice for choice in reversed(self.space.states)}
        return [choice for choice in self.space.states if choice in distinct.values()]

    @property
    def _has_scene_tasks(self) -> bool:
        return any(task.embedding_type == "scene" for task in self.tasks)

    def eligible(self, candidate: Candidate) -> bool:
        """Whether a scored candidate may be chosen: it has at least ``min_members`` members."""
        return len(candidate.members) >= self.space.min_members

    def stage_states(self) -> list[FusionConfig]:
        """Stage 1: each member alone, each single state and the mean (the state choices of the space
        alone, when its best state is not one)."""
        if "best" not in self.space.states:
            return [self.fusion({name: choice}) for name in self.members for choice in self.space.states]
        learned = ["learned"] if "learned" in self.space.states else []
        return [
            self.fusion({name: choice})
            for name in self.members
            for choice in [*range(self.num_states[name]), "mean", *learned]
        ]

    def stage_fusions(self) -> list[FusionConfig]:
        """Stage 2 of the staged search, or the whole space of the exhaustive one."""
        space = self.space
        if self.search == "exhaustive":
            return [
                self.fusion(dict(zip(subset, choices)), combine=combine, reference=reference, scene_groups=groups)
                for subset in self.subsets(space.min_members)
                for choices in itertools.product(*(self._choices(name) for name in subset))
                for combine in (space.combinations if len(subset) > 1 else ("cat",))
                for reference in (subset if len(subset) > 1 else (None,))
                for groups in (SCENE_GROUPS if self._has_scene_tasks else (1,))
            ]
        return [
            self.fusion({name: rule for name in subset}, combine=combine)
            for subset in self.subsets(max(2, space.min_members))
            for rule in space.states
            for combine in space.combinations
        ]

    def stage_refinements(self) -> list[FusionConfig]:
        """Stage 3 of the staged search: the :data:`REFINED` best so far (of those that may be chosen)
        on every reference and pooling."""
        if self.search == "exhaustive":
            return []
        ranks = self.mean_ranks("linear")
        eligible = [c for c in self.candidates.values() if self.eligible(c)]
        refined = []
        for candidate in sorted(eligible, key=lambda c: ranks[c.name])[:REFINED]:
            config = candidate.config
            references = [m.name for m in config.members] if len(config.members) > 1 else [None]
            for reference in references:
                for groups in SCENE_GROUPS if self._has_scene_tasks else (1,):
                    changed = config.with_options(reference=reference, scene_groups=groups)
                    refined.append(changed.with_options(name=candidate_name(changed)))
        return refined

    def paper_rows(self) -> list[tuple[int, str, FusionConfig]]:
        """The paper's Tables 3-6 on these members, as (table, row name, config): 3, each member's last
        state against its mean; 4, each pair averaged against concatenated; 5, each member alone against
        averaged with each other; 6, all members concatenated against all but one. Last states, stretched
        onto the first member's frames, as the paper's systems."""
        names = list(self.members)
        paper = {"time_alignment": "stretch"}
        rows = []
        for name in names:
            rows += [(3, name, self.fusion({name: "last"})), (3, f"Fusion {name}", self.fusion({name: "mean"}))]
        for first, second in itertools.combinations(names, 2):
            pair = {first: "last", second: "last"}
            rows += [
                (4, f"avg {first}+{second}", self.fusion(pair, combine="avg", **paper)),
                (4, f"cat {first}+{second}", self.fusion(pair, **paper)),
            ]
        for name in names:
            rows.append((5, name, self.fusion({name: "last"})))
            for other in names:
                if other != name:
                    pair = {name: "last", other: "last"}
                    rows.append((5, f"avg {name}+{other}", self.fusion(pair, combine="avg", reference=name, **paper)))
        if len(names) > 1:
            for left_out in names:
                kept = [n for n in names if n != left_out]
                config = self.fusion({n: "last" for n in kept}, interleave=True, **paper)
                rows.append((6, ("cat " if len(kept) > 1 else "") + "+".join(kept), config))
            everyone = self.fusion({n: "last" for n in names}, interleave=True, **paper)
            rows.append((6, "cat " + "+".join(names), everyone))
        return rows

    # -- scoring ---------------------------------------------------------------------------------

    def validate(
        self, configs: Sequence[FusionConfig], stage: str, probe: str = "linear", tasks: Sequence[Task] = ()
    ) -> None:
        """Score each config on validation, on every task or on ``tasks``, reusing stored scores."""
        for config in configs:
            self.candidates.setdefault(config.name, Candidate(config, stage))
        settings = self._settings(probe, "candidates")
        jobs, targets = [], []
        for name in dict.fromkeys(config.name for config in configs):
            candidate = self.candidates[name]
            for task in tasks or self.tasks:
                if task.name not in candidate.validation.get(probe, {}):
                    jobs.append(self._job(for_task(candidate.config, task), task, settings, self._validation_of))
                    targets.append((candidate, task.name))
        for (candidate, task_name), result in zip(targets, self._execute(jobs, f"{stage}, {probe} probe")):
            candidate.validation.setdefault(probe, {})[task_name] = result

    def test(self, config: FusionConfig, tasks: Sequence[Task]) -> list[dict]:
        """Score ``config`` on the test data of ``tasks`` (stored as ``hearfuse evaluate`` stores results)."""
        settings = self._settings(self.probe, "reported")
        jobs = [self._job(for_task(config, task), task, settings, self._test_of) for task in tasks]
        return self._execute(jobs, f"test {config.name}")

    def test_predictions(self, candidate: str, task: Task, record: dict) -> Predictions:
        """The test predictions a reported result (:meth:`test`) was stored with; ``ValueError`` saying
        why when it has none."""
        settings = self._settings(self.probe, "reported")
        path = result_path(settings.results_dir, candidate, task.path.name, settings.protocol.probe)
        return predictions.read(path, record)

    def _settings(self, probe: str, folder: str) -> EvaluationSettings:
        protocol = replace(self.settings.protocol, probe=probe)
        return replace(self.settings, protocol=protocol, results_dir=self.folder / folder, progress=False)

    def _job(self, config: FusionConfig, task: Task, settings: EvaluationSettings, score: Callable) -> Callable:
        (job,) = model_jobs(config, [task.path], settings, self.dtype, compute=lambda t: score(config, t, settings))
        return job

    def _execute(self, jobs: list[Callable], what: str) -> list[dict]:
        from tqdm import tqdm

        results = []
        for job in tqdm(jobs, desc=what, unit="score", disable=not self.settings.progress or not jobs):
            results.append(job())
        return results

    def _validation_of(self, config: FusionConfig, task: Task, settings: EvaluationSettings) -> dict:
        fold = task.folds()[0]
        data = self.data(config, task, [*fold.train, fold.valid])
        chosen, candidates, seconds = select_on_validation(task, data, settings)
        return {**selection_record(task, chosen, candidates, settings, seconds), **self._described(config)}

    def _test_of(self, config: FusionConfig, task: Task, settings: EvaluationSettings) -> dict:
        return {**score_task(task, self.data(config, task, task.splits), settings), **self._described(config)}

    def _described(self, config: FusionConfig) -> dict:
        return {
            "config_fingerprint": config.fingerprint(),
            "config": config.to_dict(),
            "embedding_key": embedding_key(config, self.dtype),
            "embedded_from": "the members' cached states (hearfuse plan)",
        }

    def data(self, config: FusionConfig, task: Task, splits: Sequence[str]) -> dict[str, SplitData]:
        """The candidate's embeddings of ``splits``, fused from the cache."""
        data = {}
        for split in dict.fromkeys(splits):
            states = {m.name: self._aggregate(m.name, m.aggregation, task, split) for m in config.members}
            data[split] = from_cache(task, split, fused_split(config, states, task.embedding_type))
        return data

    def _aggregate(self, member: str, aggregation: LayerAggregation, task: Task, split: str):
        """A member's aggregated states on a split (the last few are kept: candidates share them)."""
        key = (member, aggregation, task.name, split)
        if key not in self._aggregated:
            cached = self._cached(self.members[member], task, split)
            used = aggregation.state_weights(len(cached))
            states = [torch.from_numpy(np.array(c.rows)) if i in used else None for i, c in enumerate(cached)]
            self._aggregated[key] = (aggregate_states(states, aggregation), cached[0])
            if len(self._aggregated) > 4 * len(self.members):
                self._aggregated.popitem(last=False)
        self._aggregated.move_to_end(key)
        return self._aggregated[key]

    def stage_counts(self) -> dict[str, int]:
        """Candidates scored, by the stage that first asked for them."""
        counts: dict[str, int] = {}
        for candidate in self.candidates.values():
            counts[candidate.stage] = counts.get(candidate.stage, 0) + 1
        return counts

    # -- choosing ----------------------------------------------------------------------------

    def records(self, probe: str, candidates: Sequence[Candidate] | None = None) -> list[list[dict]]:
        """``records[candidate][task]``: the validation results (``{}`` where none)."""
        candidates = list(self.candidates.values()) if candidates is None else candidates
        return [[c.validation.get(probe, {}).get(t.name, {}) for t in self.tasks] for c in candidates]

    def mean_ranks(self, probe: str, candidates: Sequence[Candidate] | None = None) -> dict[str, float]:
        candidates = list(self.candidates.values()) if candidates is None else candidates
        return {c.name: rank for c, rank in zip(candidates, mean_ranks(self.records(probe, candidates)))}

    def choose_states(self) -> None:
        """Each member's best single state: the best mean rank of its state views on validation."""
        for name in self.members:
            views = [self.candidates[self.fusion({name: i}).name] for i in range(self.num_states[name])]
            chosen = best_state(self.records("linear", views))
            self.best_states[name] = self.num_states[name] - 1 if chosen is None else chosen

    def best(
        self, probe: str, task: Task | None, among: Sequence[Candidate] | None = None, count: int = 1
    ) -> list[Candidate]:
        """The ``count`` best candidates on ``task`` by validation (ties: better mean rank, then scored
        earlier), or over all tasks by mean rank (``task=None``)."""
        among = list(self.candidates.values()) if among is None else list(among)
        means = self.mean_ranks(probe, among)
        if task is None:
            keys = {c.name: (means[c.name],) for c in among}
        else:
            ranks = validation_ranks([c.validation.get(probe, {}).get(task.name, {}) for c in among])
            keys = {c.name: (math.inf if r is None else r, means[c.name]) for c, r in zip(among, ranks)}
        ordered = sorted(range(len(among)), key=lambda i: (*keys[among[i].name], i))
        return [among[i] for i in ordered[:count] if math.isfinite(keys[among[i].name][0])]


# ------------------------------------------------------------------------------------------------
# running a plan


@dataclass
class Reported:
    """A reported candidate on one task, with its test result."""

    row: str
    candidate: str
    task: str
    result: dict


@dataclass
class PlanResult:
    plan: Plan
    probe: str  # the probe that chose (and tested)
    per_task: dict[str, str]  # task -> candidate
    all_tasks: str | None
    reported: list[Reported]
    paper_rows: list[tuple[int, str, str]]  # (table, row, candidate)
    timings: dict[str, float]


def run_plan(plan: Plan, echo: Callable[[str], None] = print) -> PlanResult:
    """Embed, search, choose and test (see the module docstring)."""
    started = time.perf_counter()
    plan.embed()
    embedded = time.perf_counter()
    for name, cost in plan.costs.items():
        how = "sampled" if cost.sampled else "measured"
        echo(
            f"member {name}: {plan.num_states[name]} states, width {plan.widths[name]}, "
            f"real-time factor {cost.real_time_factor:.3g} ({how}: {cost.embed_s:.1f} s for "
            f"{cost.audio_s:.1f} s of audio)"
        )
    paper_rows: list[tuple[int, str, str]] = []
    if plan.paper:
        rows = plan.paper_rows()
        plan.validate([config for _, _, config in rows], "paper's tables")
        paper_rows = [(table, row, config.name) for table, row, config in rows]
        echo(f"the paper's tables 3-6 on these members: {len(plan.candidates)} distinct candidates")
    else:
        if "learned" in plan.space.states:
            plan.learn_weights()
        plan.validate(plan.stage_states(), "1 states")
        if "best" in plan.space.states:
            plan.choose_states()
            echo("best single states: " + ", ".join(f"{name} {index}" for name, index in plan.best_states.items()))
        echo(f"space: {plan.space_size()} candidates ({plan.space.describe()})")
        plan.validate([*plan.stage_fusions(), plan.paper_recipe()], "2 fusions" if plan.search == "staged" else "all")
        plan.validate(plan.stage_refinements(), "3 refinements")
        stages = plan.stage_counts()
        echo(
            f"scored on validation ({plan.search} search): {len(plan.candidates)} candidates ("
            + ", ".join(f"stage {stage}: {count}" for stage, count in stages.items())
            + ")"
        )
    probe = "linear"
    if plan.probe == KIT_PROBE and not plan.paper:
        _rescore_with_mlp(plan)
        probe = KIT_PROBE
    per_task, all_tasks = _choose(plan, probe)
    scored = time.perf_counter()
    reported = _report(plan, probe, per_task, all_tasks, paper_rows)
    return PlanResult(
        plan,
        probe,
        per_task,
        all_tasks,
        reported,
        paper_rows,
        {"embed_s": embedded - started, "search_s": scored - embedded, "test_s": time.perf_counter() - scored},
    )


def _rescore_with_mlp(plan: Plan) -> None:
    """The :data:`RESCORED` best by the linear probe on each task, and overall, scored again by the MLP."""
    eligible = [c for c in plan.candidates.values() if plan.eligible(c)]
    for task in plan.tasks:
        best = plan.best("linear", task, eligible, count=RESCORED)
        plan.validate([c.config for c in best], f"MLP on {task.name}", KIT_PROBE, [task])
    overall = [c.config for c in plan.best("linear", None, eligible, count=RESCORED)]
    plan.validate(overall, "MLP overall", KIT_PROBE)


def _choose(plan: Plan, probe: str) -> tuple[dict[str, str], str | None]:
    among = [c for c in plan.candidates.values() if probe in c.validation and plan.eligible(c)]
    per_task = {}
    for task in plan.tasks:
        best = plan.best(probe, task, among)
        if best:
            per_task[task.name] = best[0].name
    complete = [c for c in among if len(c.validation[probe]) == len(plan.tasks)]
    overall = plan.best(probe, None, complete)
    return per_task, overall[0].name if overall else None


def member_alone(name: str) -> str:
    """The reported row of a member alone, the mean of its states."""
    return f"{name} alone (mean of its states)"


def _report(
    plan: Plan, probe: str, per_task: dict, all_tasks: str | None, paper_rows: list[tuple[int, str, str]]
) -> list[Reported]:
    """Test scores for what is reported (see the module docstring); with ``--paper``, every row of the tables."""
    wanted: list[tuple[str, str, Task]] = []
    alone = {name: plan.fusion({name: "mean"}) for name in plan.members}
    if paper_rows:
        wanted += [(name, name, task) for _, _, name in paper_rows for task in plan.tasks]
    else:
        singles = [c for c in plan.candidates.values() if len(c.members) == 1]
        recipe = plan.paper_recipe().name
        for task in plan.tasks:
            if task.name in per_task:
                wanted.append(("chosen for the task", per_task[task.name], task))
            if all_tasks is not None:
                wanted.append(("chosen for all tasks", all_tasks, task))
            single = plan.best("linear", task, singles)  # chosen by the probe that scored every candidate
            if single:
                wanted.append(("best single member", single[0].name, task))
            wanted.append(("the paper's recipe", recipe, task))
            # each member alone as the paper fuses it (the mean of its states): what fusing added to it
            wanted += [(member_alone(name), alone[name].name, task) for name in plan.members]
    configs = {c.name: c.config for c in plan.candidates.values()}
    configs.update({config.name: config for config in alone.values()})
    tested: dict[tuple[str, str], dict] = {}
    for name in dict.fromkeys(name for _, name, _ in wanted):
        tasks = list(dict.fromkeys(task.name for _, n, task in wanted if n == name))
        chosen_tasks = [task for task in plan.tasks if task.name in tasks]
        for task, result in zip(chosen_tasks, plan.test(configs[name], chosen_tasks)):
            tested[name, task.name] = result
    return [Reported(row, name, task.name, tested[name, task.name]) for row, name, task in wanted]
