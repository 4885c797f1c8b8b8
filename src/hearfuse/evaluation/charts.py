"""The report's charts, in one style: tasks along x, each tick naming the task, its metric and which way
is better; scores along y as the tables show them (x100, d_prime as is, which the axis says); light
horizontal grid lines and no top or right frame; the legend outside on the right. Drawn on matplotlib's
Agg canvas directly (no pyplot, no display, the global backend untouched)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from .. import hear2021
from ..hear2021 import Published
from .formatting import UNSCALED_METRICS, displayed_mean, format_score, metric_scale, score_of
from .metrics import higher_is_better
from .published import Beside, beside
from .results import Column, result_grid

_MAX_WIDTH = 24.0  # inches


def bar_chart(results: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Grouped bar chart of the primary metric: one group per task, one bar per model.

    Bars show the same (scaled) mean as the table, error bars its std (when shown in the table);
    failed runs are marked with a red ``×`` on the baseline, missing ones leave a gap.
    """
    models, columns, cells = result_grid(results) if results else ([], [], {})
    figure, ax = _figure(max(6.0, 2.5 + len(columns) * (0.45 + 0.13 * len(models))), 6.5)
    ax.set_title(title or "Primary metric per task (mean ± std over folds)")
    if not models or not columns:
        return _nothing_to_show(figure, ax, path)
    group = min(0.8, 0.3 * len(models))  # a lone bar should not fill its whole group
    width = group / len(models)
    handles, lowest, failed = [], 0.0, []
    for i, (model, color) in enumerate(zip(models, _palette(len(models)))):
        offset = -group / 2 + (i + 0.5) * width
        records = [cells.get((model, column.task)) for column in columns]
        bars, low, model_failed = _model_bars(ax, records, columns, offset, width, color, len(models))
        handles.append(bars)
        lowest, failed = min(lowest, low), failed + model_failed
    if failed:
        crosses = ax.scatter(failed, [0.0] * len(failed), marker="x", color="crimson", s=30, zorder=3, clip_on=False)
        handles.append(crosses)
    _task_axis(ax, columns)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if lowest < 0:
        ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylim(bottom=min(0.0, lowest * 1.05))
    ax.margins(y=0.08)
    _score_axis(ax, [c.metric for c in columns])
    _legend(figure, handles, models + (["failed"] if failed else []), title="model")
    return _save(figure, path)


def _model_bars(ax, records: list, columns: list[Column], offset: float, width: float, color, models: int):
    """One model's bars, at each task's index + ``offset``, labelled with their values when few bars share
    the chart (``models`` of them per task); returns them, the lowest point they reach and where the
    model's failed runs sit."""
    xs, heights, errors, labels, failed = [], [], [], [], []
    for index, (record, column) in enumerate(zip(records, columns)):
        if record is None or record["status"] == "skipped":
            continue
        if record["status"] != "ok":
            failed.append(index + offset)
            continue
        score = score_of(record, column.metric) if column.metric else None
        if score is None or not math.isfinite(score[0]):
            continue
        factor, _ = metric_scale(column.metric)
        xs.append(index + offset)
        heights.append(score[0] * factor)
        errors.append(0.0 if score[1] is None or not math.isfinite(score[1]) else score[1] * factor)
        labels.append(format_score(score[0], None, column.metric))
    bars = ax.bar(
        xs,
        heights,
        width * 0.92,
        yerr=errors if any(errors) else None,
        color=color,
        edgecolor="white",
        linewidth=0.4,
        error_kw={"elinewidth": 0.8, "capsize": min(3.0, 30 / models), "ecolor": "0.2"},
    )
    if heights and models * len(columns) <= 30:
        ax.bar_label(bars, labels=labels, padding=2, fontsize=8)
    return bars, min([0.0] + [h - e for h, e in zip(heights, errors)]), failed


def layer_heatmap(results: Sequence[dict], path: str | Path, title: str) -> Path:
    """Heatmap of the primary metric: one row per hidden state (rows named ``state i``, state 0 at the
    bottom), one column per task. Colour is the score relative to the column (its worst state 0, its
    best 1, following ``higher_is_better``), so tasks on different scales share one colour map; each
    cell is annotated with the score as the table shows it. Failed and not-applicable cells stay blank."""
    import numpy as np

    states, columns, cells = result_grid(results) if results else ([], [], {})
    figure, ax = _figure(max(4.5, 1.6 + 1.1 * len(columns), 0.08 * len(title)), 1.4 + 0.42 * max(len(states), 1))
    figure.suptitle(title, fontsize=10)
    if not states or not columns:
        return _nothing_to_show(figure, ax, path)
    relative, labels = _within_task(states, columns, cells)
    image = ax.imshow(np.ma.masked_invalid(relative), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for i, row in enumerate(labels):
        for j, label in enumerate(row):
            if label:
                dark = not np.isnan(relative[i, j]) and relative[i, j] < 0.6
                ax.text(j, i, label, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    _task_axis(ax, columns)
    ax.set_yticks(range(len(states)))
    ax.set_yticklabels(states, fontsize=8)
    ax.set_ylabel("hidden state")
    colorbar = figure.colorbar(image, ax=ax, shrink=0.8)
    colorbar.set_label("within task: worst 0, best 1", fontsize=8)
    return _save(figure, path)


def _within_task(states: list[str], columns: list[Column], cells: dict):
    """Each (state, task) score relative to its task (worst 0, best 1, following the column's direction;
    NaN where there is none) and as the table shows it ('' where there is none)."""
    import numpy as np

    relative = np.full((len(states), len(columns)), np.nan)
    labels = [["" for _ in columns] for _ in states]
    for j, column in enumerate(columns):
        shown = {}
        for i, state in enumerate(states):
            record = cells.get((state, column.task))
            score = score_of(record, column.metric) if record and record["status"] == "ok" and column.metric else None
            if score is not None and math.isfinite(score[0]):
                shown[i] = displayed_mean(score[0], column.metric)
                labels[i][j] = format_score(score[0], None, column.metric)
        low, high = min(shown.values(), default=0.0), max(shown.values(), default=0.0)
        for i, value in shown.items():
            fraction = 1.0 if high == low else (value - low) / (high - low)
            relative[i, j] = fraction if column.higher_is_better else 1.0 - fraction
    return relative, labels


def published_chart(results: Sequence[dict], path: str | Path, published: Published | None = None) -> Path | None:
    """Per HEAR 2021 task of the results (primary metric), the published scores as grey points, their
    median as a black bar, the reproduced submissions ringed, and the user's models marked on the same
    axis; None when no result is on a HEAR 2021 task."""
    published = published or hear2021.load()
    rows = [r for r in beside(results, published)[0] if r.metric == published.tasks[r.task]["primary"]]
    if not rows:
        return None
    tasks = sorted({r.record["task"] for r in rows})
    models = list(dict.fromkeys(_yours(r) for r in rows))
    palette = dict(zip(models, _palette(len(models))))
    figure, ax = _figure(max(6.0, 2.8 + 1.0 * len(tasks)), 6.0)
    ax.set_title("Your scores beside HEAR 2021's (primary metric)")
    handles: dict[str, object] = {}
    columns = []
    for x, task in enumerate(tasks):
        task_rows = [r for r in rows if r.record["task"] == task]
        handles.update(_beside_task(ax, x, task_rows, published, palette, models))
        columns.append(Column(task, task_rows[0].metric, higher_is_better(task_rows[0].metric)))
    _task_axis(ax, columns)
    ax.set_xlim(-0.6, len(tasks) - 0.4 + 0.1 * len(models))
    _score_axis(ax, [c.metric for c in columns])
    labels = ["HEAR 2021 (published)"] + [f"{m}, yours" for m in models]
    _legend(figure, [handles[k] for k in ["published", *models]], labels)
    figure.text(
        0.01,
        0.005,
        "Grey: the HEAR 2021 submissions (published), bar: their median, ring: the published score of the\n"
        f"submission your preset reproduces. Source: {published.sources['results_by_task']['cite']}.",
        fontsize=7,
        color="0.35",
    )
    return _save(figure, path)


def _yours(row: Beside) -> str:
    return f"{row.record['model']} ({row.probe})"


def _beside_task(ax, x: int, rows: list[Beside], published: Published, palette: dict, models: list[str]) -> dict:
    """One task at ``x``: the published scores spread around it with their median, each of the user's
    results to the right, and the submission its preset reproduces ringed in its colour."""
    first = rows[0]
    factor, _ = metric_scale(first.metric)
    scores = sorted(published.task_scores(first.task, first.metric), key=lambda s: s.value)
    spread = [x - 0.18 + 0.36 * i / max(len(scores) - 1, 1) for i in range(len(scores))]
    handles = {"published": ax.scatter(spread, [s.value * factor for s in scores], s=14, color="0.6", zorder=2)}
    ax.hlines(first.median * factor, x - 0.25, x + 0.25, color="0.1", linewidth=1.6, zorder=3)
    for row in rows:
        name = _yours(row)
        handles[name] = ax.scatter(
            [x + 0.3 + 0.08 * models.index(name)],
            [row.value * factor],
            marker="D",
            s=46,
            color=palette[name],
            zorder=4,
            edgecolor="black",
            linewidth=0.5,
        )
        if row.reproduced is not None:
            ax.scatter(
                [spread[scores.index(row.reproduced)]],
                [row.reproduced.value * factor],
                s=70,
                facecolor="none",
                edgecolor=palette[name],
                linewidth=1.5,
                zorder=3,
            )
    return handles


# --------------------------------------------------------------------------------------------
# the style


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(min(width, _MAX_WIDTH), height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _nothing_to_show(figure, ax, path: str | Path) -> Path:
    ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return _save(figure, path)


def _task_axis(ax, columns: Sequence[Column]) -> None:
    """One tick per task (:meth:`.results.Column.heading`), slanted when there are several."""
    slanted = len(columns) > 1
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(
        [column.heading("\n") for column in columns],
        rotation=30 if slanted else 0,
        ha="right" if slanted else "center",
        rotation_mode="anchor",
        fontsize=8,
    )


def _score_axis(ax, metrics: Iterable[str | None]) -> None:
    """Scores as the tables show them; the label names any metric shown unscaled."""
    unscaled = sorted({metric for metric in metrics if metric in UNSCALED_METRICS})
    ax.set_ylabel("score (×100)" + (f"; {', '.join(unscaled)} unscaled" if unscaled else ""))
    ax.grid(axis="y", color="0.85", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend(figure, handles: list, labels: list[str], title: str | None = None) -> None:
    figure.legend(
        handles,
        labels,
        loc="outside right upper",
        fontsize=8,
        frameon=False,
        ncols=1 if len(labels) <= 24 else 2,
        title=title,
    )


def _palette(n: int) -> list:
    """``n`` colours that tell neighbours apart."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        cmap = colormaps["tab20"]
        # dark shades first, then the light ones, so that neighbouring bars differ clearly
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [cmap(order[i]) for i in range(n)]
    cmap = colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def pareto_chart(points: Sequence[tuple[str, float, float, float]], path: str | Path, title: str) -> Path:
    """Score against cost: each candidate ``(name, real-time factor, width, mean rank)`` in two panels,
    mean rank (1 = best) against the members' real-time factor and against the embedding width, both on log
    axes; the candidates no other beats on both (the Pareto front) joined and named."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13.0, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    shown = [p for p in points if all(math.isfinite(v) and v > 0 for v in p[1:])]
    labels = ("members' real-time factor (s per s of audio)", "embedding width (timestamp embedding)")
    for column, label in enumerate(labels):
        ax = figure.add_subplot(1, 2, column + 1)
        if not shown:
            ax.text(0.5, 0.5, "no candidate scored on every task", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        cost = [p[1 + column] for p in shown]
        rank = [p[3] for p in shown]
        ax.scatter(cost, rank, s=14, color="0.6", zorder=2)
        front = _pareto_front(list(zip(cost, rank)))
        ax.plot([cost[i] for i in front], [rank[i] for i in front], "-o", color="crimson", markersize=4, zorder=3)
        for i in front:
            ax.annotate(shown[i][0], (cost[i], rank[i]), fontsize=6, xytext=(4, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.set_ylabel("mean rank on validation (1 = best)")
        ax.grid(color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return _save(figure, path)


def _pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point matches or beats on both cost and rank (lower is better on
    both), by increasing cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front
