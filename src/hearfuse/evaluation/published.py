"""The user's scores beside HEAR 2021's published ones, and the published tables on their own.

For every result whose task is a HEAR 2021 task (same task name and mode; another version is
compared with a warning), the report shows, per metric the task published: the user's score, the
place it would take among the HEAR 2021 submissions, the published score of the submission the
run's preset reproduces, the paper's number for that preset, and HEAR 2021's best and median.
Published numbers are read from :mod:`hearfuse.hear2021` and only ever displayed; the section's
chart is :func:`.charts.published_chart`.

Places and ties follow the report's rule: scores are compared as displayed (x100, one decimal;
``d_prime`` two decimals), a tie shares the better place, and a lower-is-better metric (segment
error rate) is ranked the other way round.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from .. import hear2021, presets
from ..errors import UsageError
from ..hear2021 import PaperValue, Published, Score, Submission, TaskName
from .formatting import displayed_mean, format_score, md_escape, metric_heading, score_of
from .metrics import higher_is_better
from .results import probe_of

PAPER_TABLES = (2, 3, 4, 5, 6)
_NAMES_SHOWN = 2


def place(value: float, published: Sequence[float], metric: str) -> int:
    """The place ``value`` would take among ``published`` (1 = best): one more than the number of
    published scores strictly better at displayed precision, so a tie shares the better place."""
    own = displayed_mean(value, metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    return 1 + sum(sign * (displayed_mean(p, metric) - own) > 0 for p in published)


def best(scores: Sequence[Score]) -> list[Score]:
    """Every published score equal (as displayed) to the best one."""
    if not scores:
        return []
    metric = scores[0].metric
    key = (
        (lambda s: displayed_mean(s.value, metric))
        if higher_is_better(metric)
        else (lambda s: -displayed_mean(s.value, metric))
    )
    top = max(key(s) for s in scores)
    return [s for s in scores if key(s) == top]


def median(scores: Sequence[Score]) -> float:
    return statistics.median(s.value for s in scores)


def preset_of(record: dict) -> str | None:
    """The paper preset a result was computed with: its recorded config is exactly that preset's
    (a renamed copy counts, a variant such as ``+norm`` does not)."""
    config = record.get("config")
    if not isinstance(config, dict):
        return None
    content = {k: v for k, v in config.items() if k != "name"}
    for name in presets.names():
        preset = presets.get(name).to_dict()
        preset.pop("name", None)
        if preset == content:
            return name
    return None


@dataclass(frozen=True)
class Beside:
    """One (result, metric) of the user's beside what HEAR 2021 published for that task and metric."""

    record: dict
    task: str  # the HEAR 2021 task directory name it matched
    metric: str
    value: float
    place: int
    field: int  # published scores plus the user's
    best: list[Score]
    median: float
    preset: str | None
    reproduced: Score | None
    paper: list[PaperValue]

    @property
    def probe(self) -> str:
        return probe_of(self.record)


def beside(results: Sequence[dict], published: Published | None = None) -> tuple[list[Beside], list[str]]:
    """Every successful result on a HEAR 2021 task beside the published scores, and the warnings
    (version mismatches), each once."""
    published = published or hear2021.load()
    rows: list[Beside] = []
    warnings: dict[str, None] = {}
    for record in results:
        if record.get("status") != "ok":
            continue
        task, warning = published.match(record["task"])
        if task is None:
            continue
        if warning:
            warnings[warning] = None
        preset = preset_of(record)
        submission = published.reproduced_by(preset) if preset else None
        for metric in published.metrics_of(task):
            score = score_of(record, metric)
            scores = published.task_scores(task, metric)
            if score is None or not scores:
                continue
            rows.append(
                Beside(
                    record=record,
                    task=task,
                    metric=metric,
                    value=score[0],
                    place=place(score[0], [s.value for s in scores], metric),
                    field=len(scores) + 1,
                    best=best(scores),
                    median=median(scores),
                    preset=preset,
                    reproduced=next((s for s in scores if s.submission == submission), None),
                    paper=[p for p in published.paper_values(preset, task) if p.value is not None]
                    if preset and metric == published.tasks[task]["primary"]  # the paper prints primaries only
                    else [],
                )
            )
    tasks = sorted({row.record["task"] for row in rows})
    models = list(dict.fromkeys(row.record["model"] for row in rows))
    rows.sort(
        key=lambda row: (
            tasks.index(row.record["task"]),
            published.metrics_of(row.task).index(row.metric),
            models.index(row.record["model"]),
        )
    )
    return rows, list(warnings)


def _published_score(score: Score) -> str:
    return format_score(score.value, None, score.metric)


def _names(scores: Sequence[Score]) -> str:
    names = [s.submission.label for s in scores]
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f" +{len(names) - _NAMES_SHOWN}" if len(names) > _NAMES_SHOWN else "")


def _paper_cell(values: Sequence[PaperValue], metric: str) -> str:
    if not values:
        return "–"
    by_value: dict[str, list[int]] = {}
    for value in values:
        by_value.setdefault(format_score(value.value, None, metric), []).append(value.table)
    return "; ".join(f"{v} (Table {', '.join(map(str, tables))})" for v, tables in by_value.items())


def _source_line(published: Published) -> str:
    page, paper = published.sources["results_by_task"], published.sources["paper"]
    return (
        f"Published: {page['cite']} ({len({s.submission for s in published.scores})} submissions; "
        f"{page['source']} at {page['commit'][:7]}, {page['date']}) and {paper['source']}, "
        f"as printed; hearfuse published-data version {published.version}."
    )


def markdown(results: Sequence[dict], published: Published | None = None) -> str:
    """The report's section: a table of the user's scores beside the published ones, or '' when
    no result is on a HEAR 2021 task."""
    published = published or hear2021.load()
    rows, warnings = beside(results, published)
    if not rows:
        return ""
    lines = [
        "Columns marked *yours* are computed from this results folder; columns marked *published* are "
        "copied from the sources below, shown and never used in any computation. Place: where your "
        "score would rank among the HEAR 2021 submissions scored on that task and metric (yours "
        "included; ties share the better place, ↓ metrics ranked lowest first). Published scores come "
        "from the HEAR kit's MLP protocol; a score from another probe is compared with them only as a "
        "guide.\n",
        _source_line(published) + "\n",
        "| task | metric | model (yours) | probe | score (yours) | place (yours) | this preset's submission "
        "(published) | paper, same preset (published) | HEAR 2021 best (published) | median (published) |",
        "|:---|:---|:---|:---|---:|---:|:---|:---|:---|---:|",
    ]
    for row in rows:
        reproduced = (
            f"{_published_score(row.reproduced)} ({md_escape(row.reproduced.submission.label)})"
            if row.reproduced
            else "–"
        )
        lines.append(
            f"| {row.record['task']} | {metric_heading(row.metric, higher_is_better(row.metric))} | "
            f"{md_escape(row.record['model'])}"
            f"{f' (= {row.preset})' if row.preset and row.preset != row.record['model'] else ''} | {row.probe} | "
            f"{format_score(*score_of(row.record, row.metric), row.metric)} | {row.place} of {row.field} | "
            f"{reproduced} | {_paper_cell(row.paper, row.metric)} | "
            f"{_published_score(row.best[0])} ({md_escape(_names(row.best))}) | "
            f"{format_score(row.median, None, row.metric)} |"
        )
    for warning in warnings:
        lines.append(f"\n⚠ {warning}")
    unmatched = sorted({r["task"] for r in results} - {row.record["task"] for row in rows})
    if unmatched:
        lines.append(f"\nTasks with no HEAR 2021 counterpart (not compared): {', '.join(unmatched)}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# `hearfuse reference`: the published tables on their own


def sources(published: Published | None = None) -> dict:
    """Where the published numbers come from, and the version of hearfuse's copy of them."""
    published = published or hear2021.load()
    return {"version": published.version, **published.sources}


def resolve_tasks(queries: Sequence[str], published: Published | None = None) -> list[str]:
    """Published task directory names for ``--task`` values: a directory name, a task name (every
    mode of it) or ``name-mode``; an unknown one is a :class:`UsageError` naming the tasks."""
    published = published or hear2021.load()
    names = {task: TaskName.parse(task) for task in published.tasks}
    found: list[str] = []
    for query in queries:
        matches = [
            task for task, parsed in names.items() if query in (task, parsed.name, f"{parsed.name}-{parsed.mode}")
        ]
        if not matches:
            hint = difflib.get_close_matches(query, [n.name for n in names.values()], n=1)
            raise UsageError(
                f"--task {query}: not a HEAR 2021 task"
                + (f" (did you mean {hint[0]}?)" if hint else "")
                + f"; tasks: {', '.join(sorted({n.name for n in names.values()}))}"
            )
        found += [m for m in sorted(matches) if m not in found]
    return found


def resolve_model(query: str, published: Published | None = None) -> tuple[str | None, Submission | None]:
    """(preset, submission) for ``--model``: a preset name, a submission's name (``torchcrepe``,
    ``NTU-GURA fusion_cat_xwc``) or its leaderboard name, case-insensitive."""
    published = published or hear2021.load()
    wanted = query.casefold()
    if query in presets.names():
        return query, published.reproduced_by(query)
    for submission in published.submissions:
        if wanted in (submission.name.casefold(), submission.label.casefold(), submission.leaderboard.casefold()):
            return submission.preset, submission
    candidates = (
        presets.names() + [s.name for s in published.submissions] + [s.leaderboard for s in published.submissions]
    )
    hint = difflib.get_close_matches(query, candidates, n=1)
    raise UsageError(
        f"--model {query}: neither a preset nor a HEAR 2021 submission"
        + (f" (did you mean {hint[0]}?)" if hint else "")
        + "; `hearfuse reference --json` lists them all"
    )


def paper_table(table: int, published: Published | None = None) -> dict:
    """One of the paper's Tables 2-6 as printed: its columns, and per row the preset it stands for."""
    published = published or hear2021.load()
    if table not in PAPER_TABLES:
        raise UsageError(f"--table {table}: the paper's result tables are {', '.join(map(str, PAPER_TABLES))}")
    cells = [p for p in published.paper if p.table == table]
    rows: dict[str, dict] = {}
    for cell in cells:
        row = rows.setdefault(
            cell.row,
            {
                "row": cell.row,
                "preset": cell.preset,
                "submission": cell.submission.label if cell.submission else None,
                "note": cell.note,
                "printed": {},
            },
        )
        row["printed"][cell.column] = {"value": cell.printed, "mark": cell.mark, "task": cell.task}
    return {"table": table, "columns": list(dict.fromkeys(c.column for c in cells)), "rows": list(rows.values())}


def paper_table_markdown(table: int, published: Published | None = None) -> str:
    published = published or hear2021.load()
    data = paper_table(table, published)
    marks = {"bold": "**{}**", "underline": "<u>{}</u>", "": "{}"}
    lines = [
        f"Table {table} of the paper, as printed (x100; bold best, underlined second as the paper marks "
        "them; `-` not evaluated). Published numbers, source: " + published.sources["paper"]["source"] + ".\n",
        "| system (paper) | hearfuse preset | " + " | ".join(md_escape(c) for c in data["columns"]) + " |",
        "|:---|:---|" + "---:|" * len(data["columns"]),
    ]
    for row in data["rows"]:
        values = [marks[row["printed"][c]["mark"]].format(row["printed"][c]["value"]) for c in data["columns"]]
        lines.append(f"| {md_escape(row['row'])} | {row['preset'] or '–'} | " + " | ".join(values) + " |")
    notes = {row["note"] for row in data["rows"] if row["note"]}
    lines += [f"\nNote: {note}." for note in sorted(notes)]
    return "\n".join(lines) + "\n"


def task_view(task: str, published: Published | None = None) -> dict:
    """Every HEAR 2021 submission's published scores on one task, best first by its primary metric,
    with the paper's numbers for the presets, and the leaderboard's later entries apart."""
    published = published or hear2021.load()
    metrics = published.metrics_of(task)
    primary = metrics[0]
    by_submission: dict[Submission, dict[str, Score]] = {}
    for score in published.task_scores(task):
        by_submission.setdefault(score.submission, {})[score.metric] = score
    primaries = [s[primary].value for s in by_submission.values() if primary in s]
    entries = []
    for submission, scores in by_submission.items():
        entries.append(
            {
                "submission": submission.label,
                "leaderboard": submission.leaderboard,
                "preset": submission.preset,
                "scores": {m: scores[m].value for m in metrics if m in scores},
                "place": place(scores[primary].value, [p for p in primaries], primary) if primary in scores else None,
            }
        )
    entries.sort(key=lambda e: (e["place"] is None, e["place"] or 0, e["submission"]))
    later = [
        {"model": row.model, "date": row.date, primary: row.scores[task]}
        for row in published.leaderboard
        if row.submission is None and task in row.scores
    ]
    paper = [
        {"table": p.table, "row": p.row, "preset": p.preset, "printed": p.printed}
        for p in published.paper_values(task=task)
    ]
    return {"task": task, "metrics": metrics, "submissions": entries, "added_later": later, "paper": paper}


def task_markdown(task: str, published: Published | None = None) -> str:
    published = published or hear2021.load()
    view = task_view(task, published)
    metrics = view["metrics"]
    lines = [
        f"### {task}\n",
        f"HEAR 2021 results, primary metric {metrics[0]} (published; {published.sources['results_by_task']['cite']}). "
        "x100 except d_prime.\n",
        "| place | submission | hearfuse preset | "
        + " | ".join(metric_heading(m, higher_is_better(m)) for m in metrics)
        + " |",
        "|---:|:---|:---|" + "---:|" * len(metrics),
    ]
    for entry in view["submissions"]:
        values = [format_score(entry["scores"][m], None, m) if m in entry["scores"] else "–" for m in metrics]
        lines.append(
            f"| {entry['place'] or '–'} | {md_escape(entry['submission'])} | {entry['preset'] or '–'} | "
            + " | ".join(values)
            + " |"
        )
    also = published.tasks[task].get("same_task")
    if also:
        lines.append(
            f"\nhear-preprocess writes this task as {' and '.join(also)}; HEAR 2021 published the one table "
            "above without saying which, and a run on either is compared with it."
        )
    if view["added_later"]:
        lines.append(
            f"\nAdded to the leaderboard after HEAR 2021 (not placed; {published.sources['leaderboard']['cite']}):"
        )
        lines += [
            f"- {md_escape(e['model'])} ({e['date']}): {format_score(e[metrics[0]], None, metrics[0])}"
            for e in view["added_later"]
        ]
    if view["paper"]:
        lines.append(
            "\nThe paper (as printed): "
            + "; ".join(f"{p['row']} {p['printed']} (Table {p['table']})" for p in view["paper"])
        )
    return "\n".join(lines) + "\n"


def model_view(query: str, published: Published | None = None) -> dict:
    """A preset's or a submission's published scores on every HEAR 2021 task, with its place there,
    and the paper's numbers for the preset."""
    published = published or hear2021.load()
    preset, submission = resolve_model(query, published)
    scores = []
    if submission is not None:
        for task in published.tasks:
            for metric in published.metrics_of(task):
                own = [s for s in published.task_scores(task, metric) if s.submission == submission]
                if own:
                    others = [s.value for s in published.task_scores(task, metric) if s.submission != submission]
                    scores.append(
                        {
                            "task": task,
                            "metric": metric,
                            "value": own[0].value,
                            "place": place(own[0].value, others, metric),
                            "of": len(others) + 1,
                        }
                    )
    paper = [
        {"table": p.table, "row": p.row, "task": p.task, "printed": p.printed}
        for p in (published.paper_values(preset) if preset else [])
    ]
    return {
        "query": query,
        "preset": preset,
        "submission": submission.label if submission else None,
        "leaderboard": submission.leaderboard if submission else None,
        "note": submission.note if submission else None,
        "scores": scores,
        "paper": paper,
    }


def model_markdown(query: str, published: Published | None = None) -> str:
    published = published or hear2021.load()
    view = model_view(query, published)
    title = " / ".join(x for x in (view["preset"] and f"preset {view['preset']}", view["submission"]) if x)
    lines = [f"### {title}\n"]
    if view["note"]:
        lines.append(f"{view['note']}.\n")
    if view["submission"] is None:
        lines.append("No HEAR 2021 submission is claimed to be this preset.\n")
    paper = {}
    for p in view["paper"]:
        paper.setdefault(p["task"], []).append(f"{p['printed']} (Table {p['table']})")
    lines += [
        "| task | metric | HEAR 2021 (published) | place | the paper (published) |",
        "|:---|:---|---:|---:|:---|",
    ]
    shown = set()
    for entry in view["scores"]:
        primary = entry["metric"] == published.tasks[entry["task"]]["primary"]
        cell = "; ".join(paper.get(entry["task"], [])) if primary else ""
        shown.add(entry["task"]) if primary else None
        heading = metric_heading(entry["metric"], higher_is_better(entry["metric"]))
        lines.append(
            f"| {entry['task']} | {heading} | {format_score(entry['value'], None, entry['metric'])} | "
            f"{entry['place']} of {entry['of']} | {cell or '–'} |"
        )
    for task in [t for t in paper if t not in shown]:
        heading = metric_heading(published.tasks[task]["primary"], higher_is_better(published.tasks[task]["primary"]))
        lines.append(f"| {task} | {heading} | – | – | {'; '.join(paper[task])} |")
    lines.append(f"\n{_source_line(published)}")
    return "\n".join(lines) + "\n"
