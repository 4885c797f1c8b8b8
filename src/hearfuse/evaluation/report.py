"""Paper-style reports of evaluation results (cf. Table 2 of the paper).

Input: a results folder as :mod:`.results` reads it (one table per probe).

Formatting rules (shared by the table, the secondary-metric table and the chart):

* Rows are models in **first-seen order** of the ``results`` list; ``load_results`` returns
  records sorted by (model, task), so a report built from a directory lists models
  alphabetically. Columns are tasks sorted by name (:func:`.results.result_grid`).
* Every metric is shown x100 with one decimal (``87.1``) except ``d_prime``, which is kept as is
  with two decimals (``2.31``). This covers accuracies, mAP, F-measures and error rates alike.
* ``± std`` is appended when the score has at least two folds (or, when ``folds`` is absent,
  when a ``std`` is given); with a single fold it is omitted.
* Ranking uses the *displayed* (rounded) mean and dense ranks, as the paper does: every cell
  holding the best value of a column is **bold**, every cell holding the next distinct value is
  <u>underlined</u>; "best" follows the column's ``higher_is_better`` (as its runs recorded it, else
  :func:`.metrics.higher_is_better`). Nothing is marked in a column with fewer than two scores.
* A failed run shows ``failed`` (its error is listed under the table), a missing
  (model, task) combination shows ``–``, a run whose scores lack the column's metric ``n/a``.
* A run whose recorded downstream ``protocol`` (grid points, epoch cap, seed, batch shuffling) differs from
  the most common one among the runs is marked ``†`` in the main table and listed under it:
  its score was not reached the same way as its neighbours'.
* Under each probe's table, how sure its scores are (:mod:`.uncertainty`): each primary score with
  its 95 % paired-bootstrap interval, and each model's difference to the task's best model with its
  interval, **bold** when the interval excludes 0; k-fold tasks also per fold. Runs without stored
  test predictions (written by an older hearfuse) show ``n/a`` there, and one line says how to get them.
* Runs on HEAR 2021 tasks get a section and a chart of their own beside the published results
  (:mod:`hearfuse.evaluation.published`); the tables above, and the intervals, hold only the
  folder's own scores: published numbers are never part of a bootstrap.
* A "Tasks" section says where each task comes from: the suite of ``hearfuse tasks build`` it belongs to
  (synthetic or recorded, as its task_metadata.json says and its runs recorded) and, for recorded tasks,
  the Debian packages, versions and licences of its sources.

The charts are drawn by :mod:`.charts`.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from . import predictions, published
from .charts import bar_chart, published_chart
from .formatting import (
    displayed_mean,
    format_difference_interval,
    format_interval,
    format_score,
    format_score_interval,
    md_escape,
    score_of,
)
from .protocol import KIT_PROBE, PROBES
from .results import SEEDS_KEY, Column, by_probe, load_results, probe_of, result_grid, result_path
from .uncertainty import CONFIDENCE, RESAMPLES, SEED, Comparison, Estimate, compare

__all__ = [
    "failures",
    "intervals_markdown",
    "markdown_table",
    "protocols",
    "secondary_table",
    "tasks_table",
    "write_report",
]

MISSING = "–"
FAILED = "failed"
NOT_AVAILABLE = "n/a"
OTHER_PROTOCOL = "†"
#: A task whose runs record no suite: not built by ``hearfuse tasks build`` (a HEAR task), or run before
#: results recorded it.
NO_SUITE = "elsewhere"
_MAX_ERROR_CHARS = 500


# --------------------------------------------------------------------------------------------
# tables


def _rank_marks(values: dict[str, float], higher_is_better: bool) -> dict[str, int]:
    """Dense ranks 1 and 2 (ties share a rank) of the finite values; empty below two values."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if len(finite) < 2:
        return {}
    distinct = sorted(set(finite.values()), reverse=higher_is_better)
    rank = {value: i + 1 for i, value in enumerate(distinct[:2])}
    return {k: rank[v] for k, v in finite.items() if v in rank}


def markdown_table(results: Sequence[dict], row_header: str = "Model") -> str:
    """The main table: one row per model (first-seen order), one column per task (by name).

    See the module docstring for the formatting and ranking rules.
    """
    if not results:
        return "_No results._\n"
    models, columns, cells = result_grid(results)
    _, other_protocol = protocols(results)
    marked = {(r["model"], r["task"]) for r in other_protocol}
    body: dict[tuple[str, str], str] = {}
    for column in columns:
        task, metric = column.task, column.metric
        shown: dict[str, float] = {}
        for model in models:
            record = cells.get((model, task))
            if record is None:
                body[model, task] = MISSING
            elif record["status"] == "skipped":
                body[model, task] = NOT_AVAILABLE
            elif record["status"] != "ok":
                body[model, task] = FAILED
            else:
                score = score_of(record, metric) if metric else None
                if score is None:
                    body[model, task] = NOT_AVAILABLE
                else:
                    body[model, task] = format_score(*score, metric)
                    shown[model] = displayed_mean(score[0], metric)
        for model, rank in _rank_marks(shown, column.higher_is_better).items():
            body[model, task] = f"**{body[model, task]}**" if rank == 1 else f"<u>{body[model, task]}</u>"
        for model in models:
            if (model, task) in marked:
                body[model, task] += f" {OTHER_PROTOCOL}"

    header = [row_header] + [c.heading() for c in columns]
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join([":---"] + [":---:"] * len(columns)) + "|",
    ]
    for model in models:
        row = [md_escape(model)] + [body[model, c.task] for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def failures(results: Sequence[dict]) -> list[tuple[str, str, str]]:
    """(model, task, error message) of every failed run, in table order (tasks by name)."""
    models, columns, cells = result_grid(results)
    out = []
    for model in models:
        for column in columns:
            record = cells.get((model, column.task))
            if record is not None and record["status"] == "failed":
                out.append((model, column.task, str(record.get("error") or "no error message recorded")))
    return out


def _failures_markdown(results: Sequence[dict]) -> str:
    lines = []
    for model, task, error in failures(results):
        error = " ".join(error.split())
        if len(error) > _MAX_ERROR_CHARS:
            error = error[: _MAX_ERROR_CHARS - 1] + "…"
        lines.append(f"- **{md_escape(model)}** on `{task}`: {md_escape(error)}")
    return "\n".join(lines) + "\n" if lines else ""


def protocols(results: Sequence[dict]) -> tuple[dict | None, list[dict]]:
    """The most common downstream protocol among the successful runs that record one
    (None when none does), and the runs recorded under another protocol."""
    recorded = [r for r in results if r["status"] == "ok" and isinstance(r.get("protocol"), dict)]
    if not recorded:
        return None, []
    counts = Counter(json.dumps(r["protocol"], sort_keys=True) for r in recorded)
    common = json.loads(counts.most_common(1)[0][0])
    return common, [r for r in recorded if r["protocol"] != common]


def _describe_protocol(protocol: dict) -> str:
    points, epochs = protocol.get("grid_points"), protocol.get("max_epochs")
    parts = [
        f"{points} grid configuration{'' if points == 1 else 's'}" if points is not None else None,
        f"at most {epochs} epochs" if epochs is not None else None,
        f"seed {protocol['seed']}" if protocol.get("seed") is not None else None,
        "training batches shuffled" if protocol.get("shuffle_batches") else None,
    ]
    described = ", ".join(part for part in parts if part) or "unspecified"
    if "kit" in protocol:
        default = {"grid_points": 8, "seed": 42, "max_epochs": None, "shuffle_batches": False}
        same = all(protocol.get(key) == value for key, value in default.items())
        return f"the {protocol['kit']} protocol ({described})" + ("" if same else ", which departs from the kit")
    return described + " (recorded before hearfuse followed the kit's protocol point by point)"


def _protocol_markdown(results: Sequence[dict]) -> str:
    common, other = protocols(results)
    if common is None:
        return ""
    lines = [f"Downstream models trained with {_describe_protocol(common)}."]
    if other:
        lines[0] += f" Runs marked {OTHER_PROTOCOL} in the primary table differ:\n"
        lines += [f"- **{md_escape(r['model'])}** on `{r['task']}`: {_describe_protocol(r['protocol'])}" for r in other]
    unrecorded = sum(r["status"] == "ok" and not isinstance(r.get("protocol"), dict) for r in results)
    if unrecorded:
        lines.append(f"\n{unrecorded} run(s) do not record their protocol.")
    return "\n".join(lines) + "\n"


def secondary_table(results: Sequence[dict]) -> str:
    """Secondary (non-primary) test metrics: one row per (task, metric), one column per model.

    Same number formatting as the main table; no ranking marks (their direction is unknown).
    Returns an empty string when no run has a secondary metric.
    """
    if not results:
        return ""
    models, columns, cells = result_grid(results)
    rows = []
    for column in columns:
        task = column.task
        ok = [cells[m, task] for m in models if (m, task) in cells and cells[m, task]["status"] == "ok"]
        metrics = sorted({name for r in ok for name in r.get("test", {})} - {column.metric})
        for metric in metrics:
            row = [md_escape(task), md_escape(metric)]
            for model in models:
                record = cells.get((model, task))
                if record is None:
                    row.append(MISSING)
                elif record["status"] == "skipped":
                    row.append(NOT_AVAILABLE)
                elif record["status"] != "ok":
                    row.append(FAILED)
                else:
                    score = score_of(record, metric)
                    row.append(NOT_AVAILABLE if score is None else format_score(*score, metric))
            rows.append(row)
    if not rows:
        return ""
    lines = [
        "| " + " | ".join(["Task", "Metric"] + [md_escape(m) for m in models]) + " |",
        "|" + "|".join([":---", ":---"] + [":---:"] * len(models)) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def tasks_table(results: Sequence[dict]) -> str:
    """One row per task (by name): its suite and, for recorded tasks, each package read with its version,
    licences and how many of the task's sources it gave."""
    origin: dict[str, tuple[str, list]] = {}
    for record in sorted(results, key=lambda r: r["task"]):
        if record["task"] not in origin or record.get("task_suite"):
            origin[record["task"]] = (record.get("task_suite") or NO_SUITE, record.get("task_sources") or [])
    lines = ["| Task | Suite | Sources |", "|:---|:---|:---|"]
    for task, (suite, sources) in origin.items():
        packages: dict[tuple[str, str], list[str]] = {}
        for source in sources:
            packages.setdefault((source["package"], source["version"]), []).append(source["licence"])
        described = "; ".join(
            f"{package} {version} ({', '.join(sorted(set(licences)))}; {len(licences)} source"
            f"{'' if len(licences) == 1 else 's'})"
            for (package, version), licences in sorted(packages.items())
        )
        lines.append(f"| {md_escape(task)} | {suite} | {md_escape(described) or MISSING} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# how sure


def _comparisons(
    results_dir: Path, group: Sequence[dict], resamples: int, baseline: str | None
) -> tuple[list[str], list[Column], dict[str, Comparison], dict[tuple[str, str], str]]:
    """Per task, the paired bootstrap of its successful runs that have their test predictions; and
    why each other successful run has no interval."""
    models, columns, cells = result_grid(group)
    comparisons: dict[str, Comparison] = {}
    unavailable: dict[tuple[str, str], str] = {}
    for column in columns:
        stored = {}
        for model in models:
            record = cells.get((model, column.task))
            if record is None or record["status"] != "ok" or score_of(record, column.metric or "") is None:
                continue
            path = result_path(results_dir, model, column.task, probe_of(record))
            try:
                stored[model] = predictions.read(path, record)
            except ValueError as error:
                unavailable[model, column.task] = str(error)
        if stored:
            comparison = compare(
                stored,
                column.metric,
                higher_is_better=column.higher_is_better,
                baseline=baseline,
                resamples=resamples,
            )
            comparisons[column.task] = comparison
            unavailable.update({(model, column.task): why for model, why in comparison.unavailable.items()})
    return models, columns, comparisons, unavailable


def intervals_markdown(
    results_dir: str | Path, group: Sequence[dict], resamples: int = RESAMPLES, baseline: str | None = None
) -> str:
    """One probe's runs, how sure: scores with 95 % intervals, differences to each task's best model
    and, when ``baseline`` names a model, to it; per fold for k-fold tasks (see :mod:`.uncertainty`);
    '' when no run succeeded."""
    models, columns, comparisons, unavailable = _comparisons(Path(results_dir), group, resamples, baseline)
    if not comparisons and not unavailable:
        return ""
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    parts = [
        f"Paired bootstrap over each task's test clips (scene tasks) or audio files (event tasks): {resamples} "
        f"resamples (seed {SEED}), each scored with the task's metric; the {level} interval runs from the "
        f"{(1 - CONFIDENCE) / 2 * 100:g}th to the {(1 + CONFIDENCE) / 2 * 100:g}th percentile of the resampled "
        "scores. It covers the noise of the test sample, not that of training. k-fold tasks: each fold "
        "resampled on its own, the score the mean over folds.\n",
    ]
    if comparisons:
        parts += [_interval_table(models, columns, comparisons, unavailable)]
        roles = {"best": "the best model of each task"}
        if baseline is not None:
            roles["baseline"] = f"the baseline {md_escape(baseline)}"
        for role, described in roles.items():
            parts += [
                f"Difference to {described} (model − {role}, same units) on the same resamples, with its {level} "
                "interval; **bold**: the interval excludes 0, a difference significant at the 5 % level (not "
                "corrected for the number of comparisons).\n",
                _difference_table(models, columns, comparisons, unavailable, role),
            ]
            parts += [
                _fold_table(task, comparison, role)
                for task, comparison in comparisons.items()
                if _folds(comparison) > 1 and _against(comparison, role)[0] is not None
            ]
        if baseline is not None:
            missing = sorted(task for task, comparison in comparisons.items() if comparison.baseline is None)
            if missing:
                parts.append(
                    f"The baseline {md_escape(baseline)} has no run with test predictions on "
                    + ", ".join(f"`{task}`" for task in missing)
                    + ": no difference to it there.\n"
                )
        parts += [_undefined_note(comparisons, resamples)]
    if unavailable:
        reasons = sorted(set(unavailable.values()))
        parts.append(
            f"No interval for {len(unavailable)} run(s) (`{NOT_AVAILABLE}`): {'; '.join(reasons)}. Run "
            "`hearfuse evaluate` again with the same models and tasks to get them: those runs are recomputed, "
            "the others reused.\n"
        )
    return "\n".join(part for part in parts if part)


def seeds_table(results: Sequence[dict]) -> str:
    """The spread of each primary score across training seeds, where runs recorded it (``hearfuse
    evaluate --seeds``): mean ± standard deviation over the seeds [lowest, highest]; '' when none did."""
    models, columns, cells = result_grid(results)
    spreads = {}
    for (model, task), record in cells.items():
        column = next(c for c in columns if c.task == task)
        values = ((record.get(SEEDS_KEY) or {}).get("test") or {}).get(column.metric or "")
        finite = [v for v in values or () if v is not None and math.isfinite(v)]
        if record["status"] == "ok" and len(finite) > 1:
            spreads[model, task] = (len(values), finite)
    if not spreads:
        return ""
    lines = [
        "Spread across training seeds (`--seeds`): the chosen hyperparameters trained again under the next seeds "
        "on every fold; mean ± standard deviation of their scores [lowest, highest] (n seeds). The score in the "
        "tables above is the first seed's; this spread is what the bootstrap's intervals leave out.\n",
        "| " + " | ".join(["Model"] + [md_escape(c.heading()) for c in columns]) + " |",
        "|" + "|".join([":---"] + [":---:"] * len(columns)) + "|",
    ]
    for model in models:
        row = [md_escape(model)]
        for column in columns:
            spread = spreads.get((model, column.task))
            if spread is None:
                row.append(MISSING)
                continue
            count, finite = spread
            mean, std = statistics.fmean(finite), statistics.stdev(finite)
            interval = format_interval(min(finite), max(finite), column.metric)
            row.append(f"{format_score(mean, std, column.metric)} {interval} (n={count})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _against(comparison: Comparison, role: str) -> tuple[str | None, dict[str, Estimate]]:
    """The model a comparison's differences are taken to in ``role`` ("best" or "baseline"; None: no
    baseline here), and those differences."""
    if role == "best":
        return comparison.reference, comparison.differences
    return comparison.baseline, comparison.baseline_differences


def _interval_table(models, columns, comparisons, unavailable) -> str:
    lines = [
        "| " + " | ".join(["Model"] + [md_escape(c.heading()) for c in columns]) + " |",
        "|" + "|".join([":---"] + [":---:"] * len(columns)) + "|",
    ]
    for model in models:
        row = [md_escape(model)]
        for column in columns:
            comparison = comparisons.get(column.task)
            estimate = comparison.scores.get(model) if comparison else None
            if estimate is not None:
                interval = (estimate.interval.low, estimate.interval.high)
                row.append(format_score_interval(estimate.value, None, column.metric, interval))
            else:
                row.append(NOT_AVAILABLE if (model, column.task) in unavailable else MISSING)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _difference_cell(estimate: Estimate, metric: str) -> str:
    interval = estimate.interval
    return format_difference_interval(estimate.value, metric, (interval.low, interval.high), estimate.significant)


def _difference_table(models, columns, comparisons, unavailable, role: str) -> str:
    """Each model's difference to the model in ``role`` (:func:`_against`), per task; that model itself
    is named by its role."""
    lines = [
        "| " + " | ".join(["Model"] + [md_escape(c.heading()) for c in columns]) + " |",
        "|" + "|".join([":---"] + [":---:"] * len(columns)) + "|",
    ]
    for model in models:
        row = [md_escape(model)]
        for column in columns:
            comparison = comparisons.get(column.task)
            reference, estimates = _against(comparison, role) if comparison is not None else (None, {})
            if model == reference:
                row.append(role)
            elif model in estimates:
                row.append(_difference_cell(estimates[model], comparison.metric))
            else:
                row.append(NOT_AVAILABLE if (model, column.task) in unavailable else MISSING)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _folds(comparison: Comparison) -> int:
    return len(next(iter(comparison.scores.values())).folds)


def _fold_table(task: str, comparison: Comparison, role: str) -> str:
    """A k-fold task's differences to the model in ``role``, fold by fold."""
    reference, estimates = _against(comparison, role)
    count = _folds(comparison)
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    lines = [
        f"`{task}`, per fold: difference to {md_escape(reference)}, {level} interval\n",
        "| " + " | ".join(["Model"] + [f"fold {i + 1}" for i in range(count)]) + " |",
        "|" + "|".join([":---"] + [":---:"] * count) + "|",
    ]
    for model, estimate in estimates.items():
        if model != reference:
            cells = [_difference_cell(fold, comparison.metric) for fold in estimate.folds]
            lines.append("| " + " | ".join([md_escape(model)] + cells) + " |")
    return "\n".join(lines) + "\n"


def _undefined_note(comparisons: dict[str, Comparison], resamples: int) -> str:
    """Where a score is undefined (NaN) on some resamples, which were left out of its interval."""
    notes = [
        f"{md_escape(model)} on `{task}` ({estimate.interval.undefined} of {resamples})"
        for task, comparison in comparisons.items()
        for model, estimate in comparison.scores.items()
        if estimate.interval.undefined
    ]
    if not notes:
        return ""
    return "Resamples on which the score is undefined, left out of its interval: " + ", ".join(notes) + ".\n"


# --------------------------------------------------------------------------------------------
# report


def write_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    resamples: int = RESAMPLES,
    baseline: str | None = None,
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` for ``results_dir`` into ``out_dir``
    (default: ``results_dir``) and return their paths; ``resamples``: the bootstrap's (0: no
    intervals); ``baseline``: a model every other is also compared with. Raises ``ValueError`` when
    the directory holds no result files, ``UsageError`` when ``baseline`` is not one of its models."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise ValueError(f"{results_dir}: no result files (<model>/<task>.json) found")
    known = sorted({r["model"] for r in results})
    if baseline is not None and baseline not in known:
        raise UsageError(f"baseline {baseline!r} is not a model of {results_dir}; its models: {', '.join(known)}")
    out = Path(out_dir) if out_dir is not None else results_dir
    out.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out / "report.md", out / "report.png"

    models = dict.fromkeys(r["model"] for r in results)
    tasks = {r["task"] for r in results}
    n_failed = sum(r["status"] == "failed" for r in results)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()
    parts = [
        "# Evaluation report\n",
        (
            f"Generated {now} from `{results_dir}`: {len(models)} model(s), {len(tasks)} task(s), "
            f"{len(results)} run(s), {n_failed} failed.\n"
        ),
    ]
    groups = by_probe(results)
    charts = {probe: png_path if index == 0 else out / f"report-{probe}.png" for index, probe in enumerate(groups)}
    for probe, group in groups.items():
        parts += _primary_section(probe, group, charts[probe])
        how_sure = [
            intervals_markdown(results_dir, group, resamples, baseline) if resamples else "",
            seeds_table(group),
        ]
        if any(how_sure):
            parts += [f"### How sure{_of_probe(probe)}\n", *filter(None, how_sure)]
    parts += [
        "## Tasks\n",
        "Where each task comes from: `synthetic` tasks are rendered (FluidR3 GM, espeak-ng), `recorded` ones are "
        f"built from recordings that Debian packages ship (`hearfuse tasks build --suite`); `{NO_SUITE}`: not "
        "built by `hearfuse tasks build`, or evaluated before results recorded a task's suite.\n",
        tasks_table(results),
    ]
    comparison = published.markdown(results)
    comparison_chart = out / "report-published.png"
    if comparison:
        parts += [
            "## Beside the published HEAR 2021 results\n",
            comparison,
            f"![Yours beside HEAR 2021's published scores]({comparison_chart.name})\n",
        ]
    parts += ["## Failed runs\n", "".join(_failures_markdown(group) for group in groups.values()) or "None.\n"]
    protocol = _protocol_markdown(groups.get(KIT_PROBE, []))
    if protocol:
        parts += ["## Downstream protocol\n", protocol]
    for probe, group in groups.items():
        secondary = secondary_table(group)
        if secondary:
            parts += [f"## Secondary metrics{_of_probe(probe)}\n", "Same formatting, no ranking.\n", secondary]
    md_path.write_text("\n".join(parts), encoding="utf-8")
    for probe, group in groups.items():
        bar_chart(group, charts[probe])
    if comparison:
        published_chart(results, comparison_chart)
    else:
        comparison_chart.unlink(missing_ok=True)  # from an earlier report of this folder
    return md_path, png_path


def _of_probe(probe: str) -> str:
    """How a heading names a probe: the kit's not at all, as in reports from before there were others."""
    return "" if probe == KIT_PROBE else f", {probe} probe"


def _primary_section(probe: str, group: Sequence[dict], chart: Path) -> list[str]:
    """One probe's table of primary scores, what the probe says of it, and its chart."""
    return [
        f"## Primary metric{_of_probe(probe)}\n",
        (
            "Test scores, mean ± std over folds (std omitted for a single fold), ×100 except d_prime. "
            "Best per task in **bold**, second best <u>underlined</u> (ties share the rank); "
            f"`{FAILED}`: the run failed, `{MISSING}`: not run, `{NOT_AVAILABLE}`: the probe does not "
            "apply or the metric is missing.\n"
            + ("" if probe == KIT_PROBE else f"Scored with the {probe} probe (`--probe {probe}`), not the kit's MLP.\n")
            + (PROBES[probe].report_note(group) if probe in PROBES else "")
        ),
        markdown_table(group),
        f"![Primary metric per task{_of_probe(probe)}]({chart.name})\n",
    ]
