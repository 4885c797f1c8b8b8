"""What HEAR 2021 published: every submission's score on every task, the leaderboard, and the
paper's Tables 2-6 as printed, with their sources (``published.toml`` says where each file comes
from and which published row is which task, metric, submission and hearfuse preset).

Data only, for display beside a user's own scores: nothing here is ever used to compute one.
Values are kept with the precision they were published with (``decimals``), because a rank
against a published 0.966 is only meaningful at that precision.
"""

from __future__ import annotations

import csv
import functools
import tomllib
from dataclasses import dataclass, field
from importlib import resources

__all__ = ["PaperValue", "Published", "Score", "Submission", "TaskName", "load"]


@dataclass(frozen=True)
class TaskName:
    """A HEAR task directory name, ``<task_name>-<version>-<mode>`` as hear-preprocess composes it
    (versions may hold hyphens: ``beijing_opera-v1.0-hear2021-full``)."""

    name: str
    version: str
    mode: str

    @classmethod
    def parse(cls, directory: str) -> TaskName | None:
        parts = directory.split("-")
        if len(parts) < 3:
            return None
        return cls(parts[0], "-".join(parts[1:-1]), parts[-1])


@dataclass(frozen=True)
class Submission:
    team: str
    name: str
    leaderboard: str
    preset: str | None = None
    note: str | None = None

    @property
    def label(self) -> str:
        return f"{self.team} {self.name}"


@dataclass(frozen=True)
class Score:
    """One published score: a fraction (0.966 = 96.6 %) given to ``decimals`` places."""

    task: str
    metric: str
    value: float
    decimals: int
    submission: Submission


@dataclass(frozen=True)
class PaperValue:
    """One cell of the paper's Tables 2-6 as printed (x100, ``None`` where it prints ``-``)."""

    table: int
    row: str
    column: str
    task: str
    printed: str
    mark: str
    submission: Submission | None
    preset: str | None
    note: str | None

    @property
    def value(self) -> float | None:
        """The printed number as a fraction, like every other score."""
        return None if self.printed == "-" else float(self.printed) / 100.0


@dataclass(frozen=True)
class LeaderboardRow:
    model: str
    date: str
    scores: dict[str, float]  # task directory name -> primary score, full precision
    submission: Submission | None


@dataclass
class Published:
    version: str
    sources: dict[str, dict]
    metric_names: dict[str, str]  # the results page's labels -> the kit's metric names
    tasks: dict[str, dict]  # task directory name -> {"primary": metric, "leaderboard": column}
    submissions: list[Submission]
    scores: list[Score]
    leaderboard: list[LeaderboardRow]
    paper: list[PaperValue]
    _by_task: dict[str, list[Score]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for score in self.scores:
            self._by_task.setdefault(score.task, []).append(score)

    def match(self, directory: str) -> tuple[str | None, str | None]:
        """The HEAR 2021 task a task directory is (same task name and mode), and a warning when its
        version differs from the published one; ``(None, None)`` when it is none of them."""
        own = TaskName.parse(directory)
        if own is None:
            return None, None
        for published, info in self.tasks.items():
            theirs = TaskName.parse(published)
            if own.mode != theirs.mode or own.name not in (theirs.name, *info.get("same_task", ())):
                continue
            problems = []
            if own.name != theirs.name:
                problems.append(
                    f"HEAR 2021 published one table for {' and '.join(info['same_task'])} without saying which"
                )
            if own.version != theirs.version:
                problems.append(f"it is version {own.version}, HEAR 2021's is {theirs.version}")
            warning = f"{directory} compared with {published} although " + " and ".join(problems) if problems else None
            return published, warning
        return None, None

    def task_scores(self, task: str, metric: str | None = None) -> list[Score]:
        """The HEAR 2021 submissions' scores on ``task`` (one metric, or all)."""
        return [s for s in self._by_task.get(task, []) if metric is None or s.metric == metric]

    def metrics_of(self, task: str) -> list[str]:
        """The task's published metrics, primary first."""
        primary = self.tasks[task]["primary"]
        return [primary] + sorted({s.metric for s in self.task_scores(task)} - {primary})

    def submission(self, team: str, name: str) -> Submission | None:
        return next((s for s in self.submissions if (s.team, s.name) == (team, name)), None)

    def reproduced_by(self, preset: str) -> Submission | None:
        """The HEAR 2021 submission a preset reproduces, where one is claimed."""
        return next((s for s in self.submissions if s.preset == preset), None)

    def paper_values(self, preset: str | None = None, task: str | None = None) -> list[PaperValue]:
        return [p for p in self.paper if (preset is None or p.preset == preset) and (task is None or p.task == task)]

    def paper_tables_of(self, preset: str) -> list[int]:
        """The paper's tables that print a row for ``preset``."""
        return sorted({p.table for p in self.paper if p.preset == preset})


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _csv(name: str) -> list[dict]:
    with resources.files(__package__).joinpath(name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@functools.cache
def load() -> Published:
    """The published results shipped with this version of hearfuse (read once)."""
    with resources.files(__package__).joinpath("published.toml").open("rb") as handle:
        meta = tomllib.load(handle)
    submissions = [
        Submission(s["team"], s["name"], s["leaderboard"], s.get("preset"), s.get("note")) for s in meta["submissions"]
    ]
    by_key = {(s.team, s.name): s for s in submissions}
    by_leaderboard = {s.leaderboard: s for s in submissions}
    metric_names = meta["metrics"]
    scores = [
        Score(row["task"], metric_names[row["metric"]], float(row["value"]), _decimals(row["value"]), by_key[key])
        for row in _csv(meta["sources"]["results_by_task"]["file"])
        for key in [(row["team"], row["submission"])]
    ]
    column_to_task = {info["leaderboard"]: task for task, info in meta["tasks"].items()}
    leaderboard = [
        LeaderboardRow(
            row["Model"],
            row["Submission Date"],
            {column_to_task[c]: float(v) for c, v in row.items() if c in column_to_task and v != ""},
            by_leaderboard.get(row["Model"]),
        )
        for row in _csv(meta["sources"]["leaderboard"]["file"])
    ]
    rows = {(r["table"], r["row"]): r for r in meta["paper_rows"]}
    paper = []
    for cell in _csv(meta["sources"]["paper"]["file"]):
        row = rows[int(cell["table"]), cell["row"]]
        paper.append(
            PaperValue(
                int(cell["table"]),
                cell["row"],
                cell["column"],
                cell["task"],
                cell["printed"],
                cell["mark"],
                by_key.get((row.get("team"), row.get("name"))),
                row.get("preset"),
                row.get("note"),
            )
        )
    return Published(
        meta["version"], meta["sources"], metric_names, meta["tasks"], submissions, scores, leaderboard, paper
    )
