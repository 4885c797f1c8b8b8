"""Paper-style reports of evaluation results (cf. Table 2 of the paper).

Input layout: one JSON file per (model, task, probe)::

    RESULTS_DIR/<model>/<task>.json            the kit's MLP
    RESULTS_DIR/<model>/<task>.<probe>.json    the fast probes (linear, knn): one table each

    {"model": "fusion_cat_xwc", "task": "gm_pitch-v1-full", "status": "ok" | "failed",
     "error": "message when failed", "metric": "pitch_acc", "higher_is_better": true,
     "test": {"pitch_acc": {"mean": 0.871, "std": 0.012, "folds": [0.86, 0.88]}, ...},
     ...}

Formatting rules (shared by the table, the secondary-metric table and the chart):

* Rows are models in **first-seen order** of the ``results`` list; ``load_results`` returns
  records sorted by (model, task), so a report built from a directory lists models
  alphabetically. Columns are tasks sorted by name.
* Every metric is shown x100 with one decimal (``87.1``) except ``d_prime``, which is kept as is
  with two decimals (``2.31``). This covers accuracies, mAP, F-measures and error rates alike.
* ``± std`` is appended when the score has at least two folds (or, when ``folds`` is absent,
  when a ``std`` is given); with a single fold it is omitted.
* Ranking uses the *displayed* (rounded) mean and dense ranks, as the paper does: every cell
  holding the best value of a column is **bold**, every cell holding the next distinct value is
  <u>underlined</u>; "best" follows the column's ``higher_is_better``. Nothing is marked in a
  column with fewer than two scores.
* A failed run shows ``failed`` (its error is listed under the table), a missing
  (model, task) combination shows ``–``, a run whose scores lack the column's metric ``n/a``.
* A run whose recorded downstream ``protocol`` (grid points, epoch cap, seed, batch shuffling) differs from
  the most common one among the runs is marked ``†`` in the main table and listed under it:
  its score was not reached the same way as its neighbours'.
* Runs on HEAR 2021 tasks get a section and a chart of their own beside the published results
  (:mod:`hearfuse.evaluation.published`); the tables above hold only the folder's own scores.
"""

from __future__ import annotations

import datetime
import json
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import published
from .formatting import (
    UNSCALED_METRICS,
    colors,
    displayed_mean,
    format_score,
    md_escape,
    metric_scale,
    score_of,
)

__all__ = [
    "bar_chart",
    "failures",
    "layer_heatmap",
    "load_results",
    "markdown_table",
    "protocols",
    "secondary_table",
    "write_report",
]

MISSING = "–"
FAILED = "failed"
NOT_AVAILABLE = "n/a"
OTHER_PROTOCOL = "†"
_LOWER_IS_BETTER_HINTS = ("error", "loss", "eer", "wer", "cer", "der")
_REQUIRED_KEYS = ("model", "task", "status")
_STATUSES = ("ok", "failed", "skipped")
#: Probes in report order; a report holds one table per probe (never ranks one probe against another).
_PROBE_ORDER = ("mlp", "linear", "knn")
_MAX_ERROR_CHARS = 500


# --------------------------------------------------------------------------------------------
# loading


#: The folder of a results directory where ``hearfuse layers`` keeps its views' results and its tables:
#: not ``<model>/<task>.json`` records of ``hearfuse evaluate`` (one report each).
LAYERS_FOLDER = "layers"


def load_results(results_dir: str | Path) -> list[dict]:
    """Read every ``<model>/<task>.json`` under ``results_dir``, sorted by (model, task).

    Files that do not end in ``.json`` (and hidden files such as editors' or writers'
    temporaries), and the :data:`LAYERS_FOLDER` of ``hearfuse layers``, are skipped. A file
    that is not valid JSON, is not a JSON object, lacks
    ``model``/``task``/``status``, has an unknown status, or (for ``status == "ok"``) lacks
    ``metric`` or the ``test`` scores raises ``ValueError`` naming the file. Two files for the
    same (model, task) also raise.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory not found: {root}")
    records: list[dict] = []
    seen: dict[tuple[str, str], Path] = {}
    for path in sorted(root.glob("*/*.json")):
        if path.name.startswith(".") or path.parent.name.startswith(".") or not path.is_file():
            continue
        if path.parent.name == LAYERS_FOLDER:
            continue
        record = _read_record(path)
        key = (record["model"], record["task"], probe_of(record))
        if key in seen:
            raise ValueError(
                f"{path}: duplicate result for model {key[0]!r}, task {key[1]!r}, probe {key[2]!r} "
                f"(also in {seen[key]})"
            )
        seen[key] = path
        records.append(record)
    records.sort(key=lambda r: (r["model"], r["task"]))
    return records


def probe_of(record: dict) -> str:
    """The downstream probe a result was scored with (results before probes existed: the kit's mlp)."""
    protocol = record.get("protocol") if isinstance(record.get("protocol"), dict) else {}
    return str(record.get("probe") or protocol.get("probe") or "mlp")


def _linear_definitions(group: Sequence[dict]) -> str:
    """Which definition of the linear probe produced the table's results (each result records it)."""
    lines = []
    for candidates in _ordered_unique(json.dumps((r.get("protocol") or {}).get("candidates")) for r in group):
        recorded = json.loads(candidates)
        if isinstance(recorded, dict):
            decades = recorded.get("l2_decades", [])
            lines.append(
                f"Linear probe: {recorded.get('probe')}; L2 chosen on validation among {len(decades)} decades "
                f"({max(decades):g} to {min(decades):g}) refined around the best, solver tolerance "
                f"{recorded.get('tolerance'):g}.\n"
            )
        elif recorded is not None:
            lines.append(
                "Some results are from the earlier linear probe (a linear layer trained with Adam, learning rate "
                f"chosen among {', '.join(f'{value:g}' for value in recorded)}): rerun `hearfuse evaluate --probe "
                "linear` to recompute them with the current definition.\n"
            )
    return "".join(lines)


def by_probe(results: Sequence[dict]) -> dict[str, list[dict]]:
    """Results grouped by probe, mlp first."""
    groups: dict[str, list[dict]] = {}
    for record in results:
        groups.setdefault(probe_of(record), []).append(record)
    order = {probe: index for index, probe in enumerate(_PROBE_ORDER)}
    return dict(sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: malformed result JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{path}: a result must be a JSON object, got {type(record).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"{path}: result lacks required key(s) {', '.join(missing)}")
    for key in ("model", "task"):
        if not isinstance(record[key], str) or not record[key]:
            raise ValueError(f"{path}: {key!r} must be a non-empty string, got {record[key]!r}")
    if record["status"] not in _STATUSES:
        raise ValueError(f"{path}: status must be one of {_STATUSES}, got {record['status']!r}")
    if record["status"] == "ok":
        if not isinstance(record.get("metric"), str):
            raise ValueError(f"{path}: an 'ok' result needs its primary 'metric' name")
        if not isinstance(record.get("test"), dict):
            raise ValueError(f"{path}: an 'ok' result needs a 'test' object of scores")
    return record


# --------------------------------------------------------------------------------------------
# scores and formatting


def _infer_higher_is_better(metric: str | None) -> bool:
    name = (metric or "").lower()
    return not any(hint in name for hint in _LOWER_IS_BETTER_HINTS)


def _ordered_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _columns(results: Sequence[dict]) -> list[dict]:
    """One descriptor per task, sorted by task name: task, metric, higher_is_better."""
    by_task: dict[str, list[dict]] = {}
    for record in results:
        by_task.setdefault(record["task"], []).append(record)
    columns = []
    for task in sorted(by_task):
        records = by_task[task]
        # the primary metric of the successful runs decides; failed runs only as a fallback
        metrics = _ordered_unique(
            r["metric"] for r in records if r["status"] == "ok" and isinstance(r.get("metric"), str)
        )
        if not metrics:
            metrics = _ordered_unique(r["metric"] for r in records if isinstance(r.get("metric"), str))[:1]
        metric = metrics[0] if metrics else None
        if len(metrics) > 1:
            warnings.warn(
                f"task {task!r}: results disagree on the primary metric {metrics}; using {metric!r}", stacklevel=2
            )
        directions = _ordered_unique(
            bool(r["higher_is_better"])
            for r in records
            if r.get("higher_is_better") is not None and r.get("metric") == metric
        )
        if len(directions) > 1:
            warnings.warn(
                f"task {task!r}: results disagree on higher_is_better for {metric!r}; using {directions[0]}",
                stacklevel=2,
            )
        higher = directions[0] if directions else _infer_higher_is_better(metric)
        columns.append({"task": task, "metric": metric, "higher_is_better": higher})
    return columns


def _grid(results: Sequence[dict]) -> tuple[list[str], list[dict], dict[tuple[str, str], dict]]:
    models = _ordered_unique(r["model"] for r in results)
    cells: dict[tuple[str, str], dict] = {}
    for record in results:
        key = (record["model"], record["task"])
        if key in cells:
            raise ValueError(f"duplicate result for model {key[0]!r}, task {key[1]!r}")
        cells[key] = record
    return models, _columns(results), cells


def _rank_marks(values: dict[str, float], higher_is_better: bool) -> dict[str, int]:
    """Dense ranks 1 and 2 (ties share a rank) of the finite values; empty below two values."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    if len(finite) < 2:
        return {}
    distinct = sorted(set(finite.values()), reverse=higher_is_better)
    rank = {value: i + 1 for i, value in enumerate(distinct[:2])}
    return {k: rank[v] for k, v in finite.items() if v in rank}


def _tick_label(column: dict) -> str:
    """A chart's label for a task column: the task, and below it the metric and its direction."""
    if column["metric"] is None:
        return column["task"]
    return f"{column['task']}\n({column['metric']} {'↑' if column['higher_is_better'] else '↓'})"


def _header(column: dict) -> str:
    if column["metric"] is None:
        return column["task"]
    arrow = "↑" if column["higher_is_better"] else "↓"
    return f"{column['task']} ({column['metric']} {arrow})"


def markdown_table(results: Sequence[dict], row_header: str = "Model") -> str:
    """The main table: one row per model (first-seen order), one column per task (by name).

    See the module docstring for the formatting and ranking rules.
    """
    if not results:
        return "_No results._\n"
    models, columns, cells = _grid(results)
    _, other_protocol = protocols(results)
    marked = {(r["model"], r["task"]) for r in other_protocol}
    body: dict[tuple[str, str], str] = {}
    for column in columns:
        task, metric = column["task"], column["metric"]
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
        for model, rank in _rank_marks(shown, column["higher_is_better"]).items():
            body[model, task] = f"**{body[model, task]}**" if rank == 1 else f"<u>{body[model, task]}</u>"
        for model in models:
            if (model, task) in marked:
                body[model, task] += f" {OTHER_PROTOCOL}"

    header = [row_header] + [_header(c) for c in columns]
    lines = [
        "| " + " | ".join(md_escape(h) for h in header) + " |",
        "|" + "|".join([":---"] + [":---:"] * len(columns)) + "|",
    ]
    for model in models:
        row = [md_escape(model)] + [body[model, c["task"]] for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def failures(results: Sequence[dict]) -> list[tuple[str, str, str]]:
    """(model, task, error message) of every failed run, in table order (tasks by name)."""
    models, columns, cells = _grid(results)
    out = []
    for model in models:
        for column in columns:
            record = cells.get((model, column["task"]))
            if record is not None and record["status"] == "failed":
                out.append((model, column["task"], str(record.get("error") or "no error message recorded")))
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
    models, columns, cells = _grid(results)
    rows = []
    for column in columns:
        task = column["task"]
        ok = [cells[m, task] for m in models if (m, task) in cells and cells[m, task]["status"] == "ok"]
        metrics = sorted({name for r in ok for name in r.get("test", {})} - {column["metric"]})
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


# --------------------------------------------------------------------------------------------
# chart


def bar_chart(results: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Grouped bar chart of the primary metric: one group per task, one bar per model.

    Bars show the same (scaled) mean as the table, error bars its std (when shown in the table);
    failed runs are marked with a red ``×`` on the baseline, missing ones leave a gap. Rendered
    with matplotlib's Agg canvas directly (no pyplot, no display, global backend untouched).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    models, columns, cells = _grid(results) if results else ([], [], {})
    n_models, n_tasks = len(models), len(columns)

    width = min(max(6.0, 2.5 + n_tasks * (0.45 + 0.13 * n_models)), 24.0)
    fig = Figure(figsize=(width, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title or "Primary metric per task (mean ± std over folds)")

    if not n_models or not n_tasks:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        fig.savefig(path, format="png")
        return path

    group = min(0.8, 0.3 * n_models)  # a lone bar should not fill its whole group
    bar_width = group / n_models
    palette = colors(n_models)
    lowest = 0.0
    failed_x = []
    legend_handles = []
    any_labels = n_models * n_tasks <= 30
    for i, model in enumerate(models):
        xs, heights, errs, labels = [], [], [], []
        for j, column in enumerate(columns):
            x = j - group / 2 + (i + 0.5) * bar_width
            record = cells.get((model, column["task"]))
            if record is None or record["status"] == "skipped":
                continue
            if record["status"] != "ok":
                failed_x.append(x)
                continue
            score = score_of(record, column["metric"]) if column["metric"] else None
            if score is None or not math.isfinite(score[0]):
                continue
            factor, decimals = metric_scale(column["metric"])
            labels.append(f"{score[0] * factor:.{decimals}f}")
            xs.append(x)
            heights.append(score[0] * factor)
            errs.append(0.0 if score[1] is None or not math.isfinite(score[1]) else score[1] * factor)
            lowest = min(lowest, score[0] * factor - errs[-1])
        bars = ax.bar(
            xs,
            heights,
            bar_width * 0.92,
            yerr=errs if any(errs) else None,
            color=palette[i],
            edgecolor="white",
            linewidth=0.4,
            error_kw={"elinewidth": 0.8, "capsize": min(3.0, 30 / n_models), "ecolor": "0.2"},
        )
        legend_handles.append(bars)
        if any_labels and heights:
            ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
    if failed_x:
        legend_handles.append(
            ax.scatter(failed_x, [0.0] * len(failed_x), marker="x", color="crimson", s=30, zorder=3, clip_on=False)
        )

    ax.set_xticks(range(n_tasks))
    ax.set_xticklabels(
        [_tick_label(c) for c in columns],
        rotation=30 if n_tasks > 1 else 0,
        ha="right" if n_tasks > 1 else "center",
        rotation_mode="anchor",
        fontsize=9,
    )
    ax.set_xlim(-0.6, n_tasks - 0.4)
    if lowest < 0:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylim(bottom=min(0.0, lowest * 1.05))
    ax.margins(y=0.08)
    unscaled = sorted({c["metric"] for c in columns if c["metric"] in UNSCALED_METRICS})
    ylabel = "score (×100)" + (f"; {', '.join(unscaled)} unscaled" if unscaled else "")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    labels = models + (["failed"] if failed_x else [])
    fig.legend(
        legend_handles,
        labels,
        loc="outside right upper",
        fontsize=9,
        frameon=False,
        ncols=1 if len(labels) <= 24 else 2,
        title="model",
    )
    fig.savefig(path, format="png")
    return path


def layer_heatmap(results: Sequence[dict], path: str | Path, title: str) -> Path:
    """Heatmap of the primary metric: one row per hidden state (rows named ``state i``, state 0 at the
    bottom), one column per task. Colour is the score relative to the column (its worst state 0, its
    best 1, following ``higher_is_better``), so tasks on different scales share one colour map; each
    cell is annotated with the score as the table shows it. Failed and not-applicable cells stay blank."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    states, columns, cells = _grid(results) if results else ([], [], {})
    relative = np.full((len(states), len(columns)), np.nan)
    labels = [["" for _ in columns] for _ in states]
    for j, column in enumerate(columns):
        shown = {}
        for i, state in enumerate(states):
            record = cells.get((state, column["task"]))
            score = (
                score_of(record, column["metric"]) if record and record["status"] == "ok" and column["metric"] else None
            )
            if score is not None and math.isfinite(score[0]):
                shown[i] = displayed_mean(score[0], column["metric"])
                labels[i][j] = format_score(score[0], None, column["metric"])
        if shown:
            low, high = min(shown.values()), max(shown.values())
            for i, value in shown.items():
                fraction = 1.0 if high == low else (value - low) / (high - low)
                relative[i, j] = fraction if column["higher_is_better"] else 1.0 - fraction
    fig = Figure(
        figsize=(min(max(4.5, 1.6 + 1.1 * len(columns), 0.08 * len(title)), 24.0), 1.4 + 0.42 * max(len(states), 1)),
        dpi=110,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.suptitle(title, fontsize=10)
    if not states or not columns:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        fig.savefig(path, format="png")
        return path
    image = ax.imshow(np.ma.masked_invalid(relative), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for i in range(len(states)):
        for j in range(len(columns)):
            if labels[i][j]:
                dark = not np.isnan(relative[i, j]) and relative[i, j] < 0.6
                ax.text(j, i, labels[i][j], ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(
        [_tick_label(c) for c in columns],
        rotation=20 if len(columns) > 2 else 0,
        ha="right" if len(columns) > 2 else "center",
        rotation_mode="anchor",
        fontsize=8,
    )
    ax.set_yticks(range(len(states)))
    ax.set_yticklabels(states, fontsize=8)
    ax.set_ylabel("hidden state")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("within task: worst 0, best 1", fontsize=8)
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------------------------
# report


def write_report(results_dir: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` for ``results_dir`` into ``out_dir``
    (default: ``results_dir``) and return their paths. Raises ``ValueError`` when the
    directory holds no result files."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise ValueError(f"{results_dir}: no result files (<model>/<task>.json) found")
    out = Path(out_dir) if out_dir is not None else results_dir
    out.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out / "report.md", out / "report.png"

    models = _ordered_unique(r["model"] for r in results)
    tasks = sorted({r["task"] for r in results})
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
    charts = []
    for index, (probe, group) in enumerate(groups.items()):
        chart = png_path if index == 0 else out / f"report-{probe}.png"
        charts.append((group, chart))
        parts += [
            "## Primary metric\n" if probe == "mlp" else f"## Primary metric, {probe} probe\n",
            (
                "Test scores, mean ± std over folds (std omitted for a single fold), ×100 except d_prime. "
                "Best per task in **bold**, second best <u>underlined</u> (ties share the rank); "
                f"`{FAILED}`: the run failed, `{MISSING}`: not run, `{NOT_AVAILABLE}`: the probe does not "
                "apply or the metric is missing.\n"
                + ("" if probe == "mlp" else f"Scored with the {probe} probe (`--probe {probe}`), not the kit's MLP.\n")
                + (_linear_definitions(group) if probe == "linear" else "")
            ),
            markdown_table(group),
            f"![Primary metric per task{'' if probe == 'mlp' else f', {probe} probe'}]({chart.name})\n",
        ]
    comparison = published.markdown(results)
    published_chart = out / "report-published.png"
    if comparison:
        parts += [
            "## Beside the published HEAR 2021 results\n",
            comparison,
            f"![Yours beside HEAR 2021's published scores]({published_chart.name})\n",
        ]
    parts += ["## Failed runs\n", "".join(_failures_markdown(group) for group in groups.values()) or "None.\n"]
    protocol = _protocol_markdown(groups.get("mlp", []))
    if protocol:
        parts += ["## Downstream protocol\n", protocol]
    for probe, group in groups.items():
        secondary = secondary_table(group)
        if secondary:
            title = "## Secondary metrics\n" if probe == "mlp" else f"## Secondary metrics, {probe} probe\n"
            parts += [title, "Same formatting, no ranking.\n", secondary]
    md_path.write_text("\n".join(parts), encoding="utf-8")
    for group, chart in charts:
        bar_chart(group, chart)
    if comparison:
        published.chart(results, published_chart)
    else:
        published_chart.unlink(missing_ok=True)  # from an earlier report of this folder
    return md_path, png_path
