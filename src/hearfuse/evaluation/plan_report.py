"""What ``hearfuse plan`` writes: the chosen configs, the candidates x tasks table, the reported test scores,
the paper's tables in its layout, and the Pareto chart of score against cost.

In ``OUT`` (the plan's folder)::

    plan-<probe>.md / .json    members and their cost, the space, the choices, test scores of what is
                               reported, every candidate's validation scores (and, --paper, Tables 3-6)
    pareto-<probe>.png         mean validation rank against the members' real-time factor and the width
    configs-<probe>/<task>.toml  the config chosen for each task; configs-<probe>/all_tasks.toml: for all
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_text_atomic
from .charts import pareto_chart
from .formatting import (
    displayed_mean,
    format_difference_interval,
    format_score,
    format_score_interval,
    md_escape,
    metric_heading,
    score_of,
)
from .metrics import METRICS
from .plan import Candidate, PlanResult, Reported, for_task
from .report import MISSING
from .uncertainty import CONFIDENCE, RESAMPLES, SEED, Comparison, Estimate, compare

#: The tables of the paper's ablation, as its captions say what each compares.
PAPER_TABLES = {
    3: "each member with and without feature fusion (its last state against the mean of all its states)",
    4: "averaging against concatenating each pair of members (last states)",
    5: "each member alone against averaged with each other member (last states)",
    6: "all members concatenated against all but one (last states)",
}


def write_outputs(result: PlanResult, out_dir: Path, sure: Certainty) -> dict[str, Path]:
    """Every output of a plan (see the module docstring), its test scores with ``sure``'s intervals;
    returns their paths by kind."""
    plan = result.plan
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    configs = out_dir / f"configs-{result.probe}"
    for task in plan.tasks:
        chosen = result.per_task.get(task.name)
        if chosen is not None:
            written[task.name] = for_task(plan.candidates[chosen].config, task).save(configs / f"{task.name}.toml")
    if result.all_tasks is not None:
        written["all_tasks"] = plan.candidates[result.all_tasks].config.save(configs / "all_tasks.toml")
    stem = f"plan-{result.probe}"
    chart = out_dir / f"pareto-{result.probe}.png"
    table = plan_table(result, sure)
    points = [
        (row["candidate"], row["real_time_factor"], row["width"], row["mean_rank"])
        for row in table["candidates"]
        if row["mean_rank"] is not None
    ]
    members = " + ".join(plan.members)
    written["chart"] = pareto_chart(points, chart, f"hearfuse plan: {members}, score against cost")
    written["json"] = out_dir / f"{stem}.json"
    write_text_atomic(written["json"], json.dumps(table, indent=2))
    written["markdown"] = out_dir / f"{stem}.md"
    write_text_atomic(written["markdown"], plan_markdown(result, table, chart.name, sure))
    return written


def plan_table(result: PlanResult, sure: Certainty) -> dict:
    """Everything a plan found, as data (what ``plan-<probe>.json`` holds)."""
    plan = result.plan
    ranks = {probe: plan.mean_ranks(probe) for probe in ("linear", result.probe)}
    candidates = []
    for candidate in sorted(plan.candidates.values(), key=lambda c: ranks["linear"][c.name]):
        row = {
            "candidate": candidate.name,
            "stage": candidate.stage,
            "members": candidate.members,
            "width": _width(plan, candidate),
            "real_time_factor": sum(plan.costs[m].real_time_factor for m in candidate.members),
            "mean_rank": _one_based(ranks["linear"][candidate.name]),
            "validation": {
                probe: {task: _validation(record) for task, record in per_task.items()}
                for probe, per_task in candidate.validation.items()
            },
            "config": candidate.config.to_dict(),
        }
        if result.probe != "linear":
            row[f"mean_rank_{result.probe}"] = _one_based(ranks[result.probe][candidate.name])
        candidates.append(row)
    return {
        "members": [
            {
                "member": name,
                "family": member.config.family,
                "checkpoint": member.config.checkpoint,
                "from": member.source.name,
                "states": plan.num_states[name],
                "width": plan.widths[name],
                "best_state": plan.best_states.get(name),
                "real_time_factor": plan.costs[name].real_time_factor,
                "embed_s": plan.costs[name].embed_s,
                "audio_s": plan.costs[name].audio_s,
                "timed_on_a_sample": plan.costs[name].sampled,
            }
            for name, member in plan.members.items()
        ],
        "tasks": [
            {"task": task.name, "kind": task.embedding_type, "metric": task.primary_metric} for task in plan.tasks
        ],
        "device": plan.settings.device,
        "probe": result.probe,
        "search": "paper" if plan.paper else plan.search,
        "space": None if plan.paper else {"candidates": plan.space_size(), "definition": plan.space.describe()},
        "scored": len(plan.candidates),
        "stages": plan.stage_counts(),
        "choice": {"per_task": result.per_task, "all_tasks": result.all_tasks},
        "reported": [
            {
                "row": r.row,
                "candidate": r.candidate,
                "task": r.task,
                "status": r.result.get("status"),
                "test": r.result.get("test"),
                "validation_score": r.result.get("validation_score"),
                **_interval(sure, r.candidate, r.task),
            }
            for r in result.reported
        ],
        "bootstrap": {"resamples": sure.resamples, "seed": SEED, "confidence": CONFIDENCE},
        "comparisons": comparisons(result, sure),
        "paper_tables": [{"table": t, "row": row, "candidate": name} for t, row, name in result.paper_rows],
        "candidates": candidates,
        "timings": result.timings,
    }


#: The reported rows a plan compares with its baselines, and those baselines (rows of the report).
COMPARED = ("chosen for the task", "chosen for all tasks")
BASELINES = ("best single member", "the paper's recipe")


@dataclass
class Certainty:
    """How sure a plan's test scores are: per task, the paired bootstrap (:func:`.uncertainty.compare`)
    of its reported candidates' test predictions, the best single member as the reference and the
    paper's recipe as the baseline (differences to each); and why a reported result has no interval."""

    resamples: int
    by_task: dict[str, Comparison] = field(default_factory=dict)
    unavailable: dict[tuple[str, str], str] = field(default_factory=dict)  # (candidate, task) -> why

    def score(self, candidate: str, task: str) -> Estimate | None:
        comparison = self.by_task.get(task)
        return comparison.scores.get(candidate) if comparison else None


def certainty(result: PlanResult, resamples: int = RESAMPLES) -> Certainty:
    """The paired bootstrap of every task's reported candidates (none when ``resamples`` is 0)."""
    sure = Certainty(resamples)
    if not resamples:
        return sure
    plan = result.plan
    for task in plan.tasks:
        rows = _scored_rows(result, task.name)
        stored = {}
        for reported in rows.values():
            if reported.candidate in stored or (reported.candidate, task.name) in sure.unavailable:
                continue
            try:
                stored[reported.candidate] = plan.test_predictions(reported.candidate, task, reported.result)
            except ValueError as error:
                sure.unavailable[reported.candidate, task.name] = str(error)
        if not stored:
            continue
        reference, baseline = (rows[row].candidate if row in rows else None for row in BASELINES)
        comparison = compare(
            stored,
            task.primary_metric,
            reference=reference if reference in stored else None,
            baseline=baseline,
            resamples=resamples,
        )
        sure.by_task[task.name] = comparison
        sure.unavailable.update({(name, task.name): why for name, why in comparison.unavailable.items()})
    return sure


def _scored_rows(result: PlanResult, task: str) -> dict[str, Reported]:
    """A task's reported rows that have a test score, by row."""
    return {r.row: r for r in result.reported if r.task == task and r.result.get("status") == "ok"}


def comparisons(result: PlanResult, sure: Certainty) -> list[dict]:
    """Per task, each choice's test score minus the best single member's and minus the paper's recipe's
    (in the metric's units), with the paired bootstrap's 95 % interval, whether it excludes 0, and per fold
    on a k-fold task; the plain difference where there are no intervals."""
    out = []
    for task in result.plan.tasks:
        rows = _scored_rows(result, task.name)
        comparison = sure.by_task.get(task.name)
        for row in COMPARED:
            for baseline in BASELINES:
                if row not in rows or baseline not in rows:
                    continue
                ours, theirs = rows[row], rows[baseline]
                entry = {
                    "task": task.name,
                    "metric": task.primary_metric,
                    "row": row,
                    "candidate": ours.candidate,
                    "against": baseline,
                    "baseline": theirs.candidate,
                }
                estimate = _difference(comparison, ours.candidate, theirs.candidate)
                if estimate is not None:
                    entry |= _estimate(estimate)
                    entry["significant"] = estimate.significant
                    if len(estimate.folds) > 1:
                        entry["folds"] = [
                            _estimate(fold) | {"significant": fold.significant} for fold in estimate.folds
                        ]
                else:
                    mine, other = (
                        score_of(ours.result, task.primary_metric),
                        score_of(theirs.result, task.primary_metric),
                    )
                    entry["difference"] = None if mine is None or other is None else mine[0] - other[0]
                out.append(entry)
    return out


def _interval(sure: Certainty, candidate: str, task: str) -> dict:
    """A reported test score's interval, or why it has none."""
    estimate = sure.score(candidate, task)
    if estimate is not None:
        return {"interval": [estimate.interval.low, estimate.interval.high]}
    why = sure.unavailable.get((candidate, task))
    return {"no_interval": why} if why else {}


def _difference(comparison: Comparison | None, candidate: str, baseline: str) -> Estimate | None:
    if comparison is None or candidate not in comparison.scores:
        return None
    if baseline == comparison.reference:
        return comparison.differences[candidate]
    if baseline == comparison.baseline:
        return comparison.baseline_differences[candidate]
    return None


def _estimate(estimate: Estimate) -> dict:
    interval = estimate.interval
    return {"difference": estimate.value, "low": interval.low, "high": interval.high}


def plan_markdown(result: PlanResult, table: dict, chart: str, sure: Certainty) -> str:
    plan = result.plan
    tasks = [task.name for task in plan.tasks]
    parts = [f"# hearfuse plan: {' + '.join(plan.members)}, chosen by the {result.probe} probe on validation\n"]
    parts.append("| Member | from | states | width | best state | real-time factor |")
    parts.append("|:---|:---|---:|---:|---:|---:|")
    for member in table["members"]:
        timed = " (sample)" if member["timed_on_a_sample"] else ""
        best = "–" if member["best_state"] is None else str(member["best_state"])
        parts.append(
            f"| {md_escape(member['member'])} | {md_escape(member['from'])} | {member['states']} | {member['width']} "
            f"| {best} | {member['real_time_factor']:.3g}{timed} |"
        )
    timings = result.timings
    parts.append(
        f"\nDevice {plan.settings.device}. Members' passes {timings['embed_s']:.0f} s, search "
        f"{timings['search_s']:.0f} s, test scores {timings['test_s']:.0f} s.\n"
    )
    if not plan.paper:
        stages = ", ".join(f"{stage}: {count}" for stage, count in table["stages"].items())
        parts.append(
            f"Space: **{table['space']['candidates']}** candidates ({table['space']['definition']}). Scored on "
            f"validation ({plan.search} search): **{table['scored']}** ({stages}).\n"
        )
        configs = f"configs-{result.probe}"
        parts.append("## Choice\n")
        parts.append("| Task | chosen on validation | config |\n|:---|:---|:---|")
        for task in tasks:
            name = result.per_task.get(task)
            parts.append(f"| {task} | {md_escape(name or MISSING)} | {f'{configs}/{task}.toml' if name else MISSING} |")
        if result.all_tasks:
            parts.append(
                f"\nFor all tasks (best mean rank): **{md_escape(result.all_tasks)}**, `{configs}/all_tasks.toml`.\n"
            )
        parts.append("## Test scores of what is reported\n")
        parts.append(_reported_table(result, tasks, sure))
        parts.append(_differences_markdown(table["comparisons"], tasks, sure))
    else:
        parts.append(paper_markdown(result, sure))
    parts.append(f"## Candidates on validation ({len(table['candidates'])}, linear probe)\n")
    parts.append(_candidates_table(plan, table, tasks))
    parts.append(f"\n![score against cost]({chart})\n")
    return "\n".join(parts)


def paper_markdown(result: PlanResult, sure: Certainty) -> str:
    """Tables 3-6 of the paper on the plan's members, in its layout: one table each, rows as it names
    them, test scores (x100) per task, the best of each column in bold."""
    plan = result.plan
    tested = {(r.candidate, r.task): r.result for r in result.reported}
    parts = []
    for number, caption in PAPER_TABLES.items():
        rows = [(row, name) for table, row, name in result.paper_rows if table == number]
        if not rows:
            continue
        parts.append(f"Table {number}: {caption}.\n")
        header = ["Task and measure"] + [
            f"{task.name} ({metric_heading(task.primary_metric, METRICS[task.primary_metric].higher_is_better)})"
            for task in plan.tasks
        ]
        parts.append("| " + " | ".join(md_escape(h) for h in header) + " |")
        parts.append("|:---|" + ":---:|" * len(plan.tasks))
        cells = {}
        for task in plan.tasks:
            values = {}
            for row, name in rows:
                record = tested.get((name, task.name)) or {}
                score = score_of(record, task.primary_metric) if record.get("status") == "ok" else None
                cells[row, task.name] = (
                    MISSING
                    if score is None
                    else _score_cell(score[0], None, task.primary_metric, sure, name, task.name)
                )
                if score is not None:
                    values[row] = displayed_mean(score[0], task.primary_metric)
            if len(values) > 1:
                best = (max if METRICS[task.primary_metric].higher_is_better else min)(values.values())
                for row, value in values.items():
                    if value == best:
                        cells[row, task.name] = f"**{cells[row, task.name]}**"
        for row, _ in rows:
            parts.append("| " + " | ".join([md_escape(row)] + [cells[row, t.name] for t in plan.tasks]) + " |")
        parts.append("")
    if sure.by_task:
        parts.append(_bootstrap_note(sure))
    return "\n".join(parts)


def _reported_table(result: PlanResult, tasks: list[str], sure: Certainty) -> str:
    rows = list(dict.fromkeys(r.row for r in result.reported))
    cells = {(r.row, r.task): r for r in result.reported}
    lines = ["| | " + " | ".join(tasks) + " |", "|:---|" + ":---:|" * len(tasks)]
    for row in rows:
        shown = []
        for task in tasks:
            reported = cells.get((row, task))
            record = reported.result if reported else {}
            score = score_of(record, record["metric"]) if record.get("status") == "ok" else None
            shown.append(
                MISSING if score is None else _score_cell(*score, record["metric"], sure, reported.candidate, task)
            )
        label = f"{row}: {result.all_tasks}" if row == "chosen for all tasks" else row
        lines.append("| " + " | ".join([md_escape(label), *shown]) + " |")
    if sure.by_task:
        lines.append("\n" + _bootstrap_note(sure).rstrip())
    return "\n".join(lines) + "\n"


def _score_cell(mean: float, std: float | None, metric: str, sure: Certainty, candidate: str, task: str) -> str:
    """A test score as the tables show it, with its 95 % interval where there is one."""
    estimate = sure.score(candidate, task)
    interval = None if estimate is None else (estimate.interval.low, estimate.interval.high)
    return format_score_interval(mean, std, metric, interval)


def _bootstrap_note(sure: Certainty) -> str:
    return (
        f"95 % intervals: paired bootstrap over each task's test clips (scene) or files (event), {sure.resamples} "
        f"resamples, seed {SEED}; they cover the test sample's noise, not training's.\n"
    )


def _differences_markdown(differences: list[dict], tasks: list[str], sure: Certainty) -> str:
    """Each choice minus each baseline per task: ``+3.1 [+0.4, +5.9]``, bold where the interval excludes 0;
    a k-fold task's folds below."""
    if not differences:
        return ""
    pairs = list(dict.fromkeys((d["row"], d["against"]) for d in differences))
    cells = {(d["row"], d["against"], d["task"]): d for d in differences}
    lines = [
        "Differences on test (choice − baseline, the metric's units as above), on the same bootstrap resamples"
        + (
            "; **bold**: the interval excludes 0 (significant at 5 %, not corrected for several comparisons)"
            if sure.by_task
            else ""
        )
        + ":\n",
        "| | " + " | ".join(tasks) + " |",
        "|:---|" + ":---:|" * len(tasks),
    ]
    for row, against in pairs:
        shown = []
        for task in tasks:
            entry = cells.get((row, against, task))
            shown.append(MISSING if entry is None or entry["difference"] is None else difference_text(entry))
        lines.append("| " + " | ".join([md_escape(f"{row} − {against}"), *shown]) + " |")
    folds = [d for d in differences if d.get("folds")]
    for entry in folds:
        each = ", ".join(
            f"fold {i}: {difference_text(fold | {'metric': entry['metric']})}" for i, fold in enumerate(entry["folds"])
        )
        lines.append(f"\n{entry['task']}, {md_escape(entry['row'])} − {entry['against']}, per fold: {each}")
    return "\n".join(lines) + "\n"


def difference_text(entry: dict) -> str:
    """A :func:`comparisons` entry as the tables show it: the difference with its interval, bold when
    significant (the bare difference where it has no interval)."""
    interval = (entry["low"], entry["high"]) if "low" in entry else None
    return format_difference_interval(entry["difference"], entry["metric"], interval, entry.get("significant", False))


def _candidates_table(plan, table: dict, tasks: list[str]) -> str:
    header = ["Candidate", "stage", "width", "RTF", "mean rank", *tasks]
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|:---|:---|---:|---:|---:|" + ":---:|" * len(tasks),
    ]
    best = {}
    for task in tasks:
        values = [row["validation"].get("linear", {}).get(task) for row in table["candidates"]]
        values = [v for v in values if v and v["value"] is not None]
        if values:
            best[task] = max(v["shown"] for v in values)
    for row in table["candidates"]:
        cells = []
        for task in tasks:
            entry = row["validation"].get("linear", {}).get(task)
            if not entry or entry["value"] is None:
                cells.append(MISSING)
            else:
                text = entry["text"]
                cells.append(f"**{text}**" if entry["shown"] == best.get(task) else text)
        rank = MISSING if row["mean_rank"] is None else f"{row['mean_rank']:.2f}"
        lines.append(
            "| "
            + " | ".join(
                [md_escape(row["candidate"]), row["stage"], str(row["width"]), f"{row['real_time_factor']:.3g}", rank]
                + cells
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def _validation(record: dict) -> dict:
    """A validation result as the tables show it: the score x100 (a loss as it is), and a value that is
    higher when better, to mark the best."""
    value = record.get("validation_score")
    if record.get("status") != "ok" or not isinstance(value, (int, float)) or not math.isfinite(value):
        return {"value": None, "status": record.get("status"), "error": record.get("error")}
    if record.get("monitor") == "score":
        higher = record.get("higher_is_better", True)
        shown = displayed_mean(value, record["metric"])
        return {
            "value": value,
            "monitor": "score",
            "text": format_score(value, None, record["metric"]),
            "shown": shown if higher else -shown,
        }
    return {"value": value, "monitor": "loss", "text": f"{value:.4f} (loss)", "shown": -round(value, 4)}


def _width(plan, candidate: Candidate) -> int:
    native = {name: plan.widths[name] for name in candidate.members}
    return candidate.config.embedding_sizes(native)[0]


def _one_based(rank: float) -> float | None:
    return rank + 1 if math.isfinite(rank) else None
