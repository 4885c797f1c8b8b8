"""How scores are shown, in reports and beside published numbers alike: x100 with one decimal
(``d_prime`` as is, two decimals), and ranks taken on the displayed value."""

from __future__ import annotations

import math

UNSCALED_METRICS = frozenset({"d_prime"})


def metric_scale(metric: str) -> tuple[float, int]:
    """(factor, decimals) used to display ``metric``: x100 / 1 decimal, d_prime as is / 2."""
    return (1.0, 2) if metric in UNSCALED_METRICS else (100.0, 1)


def score_of(record: dict, metric: str) -> tuple[float, float | None] | None:
    """(mean, std or None) of ``metric`` in ``record['test']``; None when absent or unusable.
    The std is None when there are fewer than two folds."""
    entry = (record.get("test") or {}).get(metric)
    if isinstance(entry, bool):
        return None
    if isinstance(entry, (int, float)):
        return float(entry), None
    if not isinstance(entry, dict) or not isinstance(entry.get("mean"), (int, float)):
        return None
    mean = float(entry["mean"])
    std = entry.get("std")
    folds = entry.get("folds")
    if not isinstance(std, (int, float)) or (isinstance(folds, list) and len(folds) < 2):
        std = None
    return mean, None if std is None else float(std)


def rounded(value: float, decimals: int) -> float:
    return round(value, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0


def format_score(mean: float, std: float | None, metric: str) -> str:
    """``87.1 ± 1.2`` (x100 unless d_prime); the std part only when ``std`` is not None."""
    factor, decimals = metric_scale(metric)
    if not math.isfinite(mean):
        return str(mean)
    text = f"{rounded(mean * factor, decimals):.{decimals}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {rounded(std * factor, decimals):.{decimals}f}"
    return text


def format_interval(low: float, high: float, metric: str, signed: bool = False) -> str:
    """``[55.0, 67.5]`` in the score's units (``[-6.0, +0.4]`` for a difference, ``signed``)."""
    factor, decimals = metric_scale(metric)
    sign = "+" if signed else ""
    ends = [
        f"{rounded(end * factor, decimals):{sign}.{decimals}f}" if math.isfinite(end) else str(end)
        for end in (low, high)
    ]
    return f"[{ends[0]}, {ends[1]}]"


def format_difference(value: float, metric: str) -> str:
    """``-3.1`` / ``+0.4`` in the score's units."""
    factor, decimals = metric_scale(metric)
    return f"{rounded(value * factor, decimals):+.{decimals}f}" if math.isfinite(value) else str(value)


def format_score_interval(
    mean: float, std: float | None, metric: str, interval: tuple[float, float] | None = None
) -> str:
    """``87.1 [80.2, 93.0]``: a score (:func:`format_score`) with its interval when it has one."""
    text = format_score(mean, std, metric)
    return text if interval is None else f"{text} {format_interval(*interval, metric)}"


def format_difference_interval(
    value: float, metric: str, interval: tuple[float, float] | None = None, significant: bool = False
) -> str:
    """``+3.1 [+0.4, +5.9]``: a difference with its interval when it has one, in bold (``**…**``) when
    ``significant`` (its interval excludes 0)."""
    text = format_difference(value, metric)
    if interval is None:
        return text
    text += " " + format_interval(*interval, metric, signed=True)
    return f"**{text}**" if significant else text


def displayed_mean(mean: float, metric: str) -> float:
    factor, decimals = metric_scale(metric)
    return rounded(mean * factor, decimals)


def metric_heading(metric: str, higher_is_better: bool) -> str:
    """``top1_acc ↑``: a metric and which way is better, as tables and charts head a column."""
    return f"{metric} {'↑' if higher_is_better else '↓'}"


def md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")
