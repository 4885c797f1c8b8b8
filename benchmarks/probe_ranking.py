"""Probe ranking: do the fast probes order two models as the kit's MLP does?

What it measures: for every task scored for both ``--models`` under the MLP and under another
probe (in any of the ``--results`` directories ``hearfuse evaluate`` wrote), the difference of
the primary test score A - B under each probe, and whether each fast probe puts the two models
in the MLP's order. A task where the MLP (or the probe) shows no difference counts for neither.

Why: a fast probe is only a stand-in for the HEAR protocol if it ranks representations as the
protocol does (issue #15).

Run: ``python -m benchmarks.probe_ranking --results R1 [R2 ...] --models A B``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hearfuse.evaluation.formatting import metric_scale
from hearfuse.evaluation.results import load_results, probe_of

PROBES = ("mlp", "linear", "knn")


def differences(results: list[dict], first: str, second: str) -> dict[str, dict[str, float | None]]:
    """task -> probe -> score(first) - score(second), scaled as reports show it (None: not both scored)."""
    scores: dict[tuple[str, str, str], float] = {}
    for record in results:
        if record["status"] == "ok" and record["model"] in (first, second):
            mean = record["test"][record["metric"]]["mean"]
            if mean is not None and math.isfinite(mean):
                factor, _ = metric_scale(record["metric"])
                scores[record["task"], probe_of(record), record["model"]] = mean * factor
    tasks = sorted({task for task, _, _ in scores})
    return {
        task: {
            probe: (
                scores[task, probe, first] - scores[task, probe, second]
                if (task, probe, first) in scores and (task, probe, second) in scores
                else None
            )
            for probe in PROBES
        }
        for task in tasks
    }


def agreement(table: dict[str, dict[str, float | None]], probe: str) -> tuple[int, int]:
    """(tasks where the probe orders the models as the MLP, tasks where it orders them the other way)."""
    agree = disagree = 0
    for row in table.values():
        mlp, other = row["mlp"], row[probe]
        if mlp is None or other is None or round(mlp, 1) == 0 or round(other, 1) == 0:
            continue
        if (mlp > 0) == (other > 0):
            agree += 1
        else:
            disagree += 1
    return agree, disagree


def markdown(table: dict[str, dict[str, float | None]], first: str, second: str) -> str:
    def cell(value: float | None) -> str:
        return "–" if value is None else f"{value:+.1f}"

    lines = [f"| task ({first} − {second}, ×100) | " + " | ".join(PROBES) + " |", "|---|" + "---:|" * len(PROBES)]
    for task, row in table.items():
        lines.append(f"| {task} | " + " | ".join(cell(row[p]) for p in PROBES) + " |")
    for probe in PROBES:
        shared = [row[probe] for row in table.values() if row[probe] is not None and row["mlp"] is not None]
        if probe != "mlp" and shared:
            agree, disagree = agreement(table, probe)
            lines.append(f"\n{probe}: same order as the MLP on {agree} task(s), the other order on {disagree}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="+", required=True, help="results directories")
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"))
    args = parser.parse_args()
    results = [record for directory in args.results for record in load_results(directory)]
    print(markdown(differences(results, *args.models), *args.models))


if __name__ == "__main__":
    main()
