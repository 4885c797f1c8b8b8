"""Stored results: where each is written, how a folder of them is read back, and how they are laid out
as a model x task grid for the report's tables and charts.

One JSON file per (model, task, probe)::

    RESULTS_DIR/<model>/<task>.json            the kit's MLP
    RESULTS_DIR/<model>/<task>.<probe>.json    any other probe (linear, knn, ...): one table each
    RESULTS_DIR/<model>/<task>[.<probe>].predictions.npz
                                               the test predictions it was scored from (:mod:`.predictions`)

    {"model": "fusion_cat_xwc", "task": "gm_pitch-v1-full", "status": "ok" | "failed" | "skipped",
     "error": "message when failed", "metric": "pitch_acc", "higher_is_better": true,
     "test": {"pitch_acc": {"mean": 0.871, "std": 0.012, "folds": [0.86, 0.88]}, ...},
     "training_seeds": {"seeds": [42, 43, 44], "test": {"pitch_acc": [0.871, 0.866, 0.874], ...}},
     ...}

``training_seeds`` only when ``hearfuse evaluate --seeds N`` asked for the spread across training
seeds: each seed's score (mean over folds), the first being the reported one.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .formatting import metric_heading
from .metrics import higher_is_better
from .protocol import KIT_PROBE, PROBES

#: The folder of a results directory where ``hearfuse layers`` keeps its views' results and its tables:
#: not ``<model>/<task>.json`` records of ``hearfuse evaluate`` (one report each).
LAYERS_FOLDER = "layers"
#: The folder where ``hearfuse plan`` keeps its candidates' scores, its tables and the configs it chose.
PLAN_FOLDER = "plan"
#: A result's scores under several training seeds (``hearfuse evaluate --seeds``).
SEEDS_KEY = "training_seeds"
_REQUIRED_KEYS = ("model", "task", "status")
_STATUSES = ("ok", "failed", "skipped")


def result_path(results_dir: Path, model_name: str, task_name: str, probe: str = KIT_PROBE) -> Path:
    """``<model>/<task>.json`` for the kit's probe, ``<model>/<task>.<probe>.json`` for the others, so
    results of different probes live side by side."""
    name = f"{task_name}.json" if probe == KIT_PROBE else f"{task_name}.{probe}.json"
    return Path(results_dir) / model_name / name


def load_results(results_dir: str | Path) -> list[dict]:
    """Read every ``<model>/<task>.json`` under ``results_dir``, sorted by (model, task).

    Files that do not end in ``.json`` (and hidden files such as editors' or writers'
    temporaries), and the :data:`LAYERS_FOLDER` of ``hearfuse layers`` and :data:`PLAN_FOLDER` of ``hearfuse
    plan``, are skipped. A file
    that is not valid JSON, is not a JSON object, lacks
    ``model``/``task``/``status``, has an unknown status, or (for ``status == "ok"``) lacks
    ``metric`` or the ``test`` scores raises ``ValueError`` naming the file. Two files for the
    same (model, task, probe) also raise.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory not found: {root}")
    records: list[dict] = []
    seen: dict[tuple[str, str, str], Path] = {}
    for path in sorted(root.glob("*/*.json")):
        if path.name.startswith(".") or path.parent.name.startswith(".") or not path.is_file():
            continue
        if path.parent.name in (LAYERS_FOLDER, PLAN_FOLDER):
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


def probe_of(record: dict) -> str:
    """The downstream probe a result was scored with (results before probes existed: the kit's mlp)."""
    protocol = record.get("protocol") if isinstance(record.get("protocol"), dict) else {}
    return str(record.get("probe") or protocol.get("probe") or KIT_PROBE)


def by_probe(results: Sequence[dict]) -> dict[str, list[dict]]:
    """Results grouped by probe, in the registry's order (the kit's first); a probe no longer registered
    after them, by name."""
    groups: dict[str, list[dict]] = {}
    for record in results:
        groups.setdefault(probe_of(record), []).append(record)
    order = {probe: index for index, probe in enumerate(PROBES)}
    return dict(sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


# --------------------------------------------------------------------------------------------
# the model x task grid


@dataclass(frozen=True)
class Column:
    """One task of a grid: its primary metric (None when no run names one) and which way is better."""

    task: str
    metric: str | None
    higher_is_better: bool

    def heading(self, separator: str = " ") -> str:
        """``task (top1_acc ↑)``: how tables head the column, and charts label its tick (on two lines)."""
        return (
            self.task
            if self.metric is None
            else f"{self.task}{separator}({metric_heading(self.metric, self.higher_is_better)})"
        )


def _ordered_unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


def columns(results: Sequence[dict]) -> list[Column]:
    """One column per task, sorted by task name. The primary metric of the successful runs decides
    (failed runs only as a fallback); its direction is the one the runs recorded, else the metric
    table's (:func:`.metrics.higher_is_better`). Disagreements are warned about, the first one wins."""
    by_task: dict[str, list[dict]] = {}
    for record in results:
        by_task.setdefault(record["task"], []).append(record)
    found = []
    for task in sorted(by_task):
        records = by_task[task]
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
        found.append(Column(task, metric, directions[0] if directions else higher_is_better(metric)))
    return found


def result_grid(results: Sequence[dict]) -> tuple[list[str], list[Column], dict[tuple[str, str], dict]]:
    """Rows (models in first-seen order), columns (tasks by name) and each (model, task)'s result."""
    models = _ordered_unique(r["model"] for r in results)
    cells: dict[tuple[str, str], dict] = {}
    for record in results:
        key = (record["model"], record["task"])
        if key in cells:
            raise ValueError(f"duplicate result for model {key[0]!r}, task {key[1]!r}")
        cells[key] = record
    return models, columns(results), cells
