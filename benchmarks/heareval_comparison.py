"""The same embeddings scored by heareval 2021.1.3 and by ``hearfuse evaluate --embeddings``, side by side.

What it compares: for each task, every test metric as the kit reported it (``<task>/test.predicted-scores.json``
that ``python -m heareval.predictions.runner`` writes into an embedding folder) and as hearfuse reported it
(``RESULTS/<module>/<task>.json``), each possibly under several seeds. Spread: the standard deviation over
seeds (ddof 1), or for a k-fold task under one seed the fold standard deviation. A difference is called
within the spread when it is at most the two spreads added.

Why: ``hearfuse evaluate`` claims to reproduce the kit's protocol; on identical embeddings the two
evaluators should differ by no more than the training noise both have.

heareval itself is not a dependency: it runs in a scratch environment (see docs/results/heareval.md).
Run: ``python -m benchmarks.heareval_comparison --kit KIT_DIR... --ours RESULTS_DIR...`` with one folder per seed;
writes ``benchmarks/results/heareval_comparison.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ._env import environment, write_results


def kit_scores(module_dir: Path) -> dict[str, dict[str, list[float]]]:
    """task -> metric -> test score per fold, from heareval's test.predicted-scores.json files."""
    out = {}
    for path in sorted(module_dir.glob("*/test.predicted-scores.json")):
        data = json.loads(path.read_text())
        folds = [
            data[key]
            for key in sorted(data)
            if isinstance(data[key], dict)
            and key not in ("aggregated_scores",)
            and any(k.startswith("test_") for k in data[key])
        ]
        metrics = json.loads((path.parent / "task_metadata.json").read_text())["evaluation"]
        out[path.parent.name] = {m: [float(fold[f"test_{m}"]) for fold in folds] for m in metrics}
    return out


def our_scores(results_dir: Path) -> dict[str, dict]:
    """task -> metric -> test score per fold (and the grid points), from hearfuse result files."""
    out = {}
    for path in sorted(results_dir.glob("*/*.json")):
        data = json.loads(path.read_text())
        if data.get("status") == "ok":
            scores = {m: [float("nan") if v is None else v for v in s["folds"]] for m, s in data["test"].items()}
            out[data["task"]] = {**scores, "grid_points": data["protocol"]["grid_points"]}
    return out


def _summary(runs: list[list[float]]) -> tuple[float, float | None, str]:
    """Mean over seeds (of fold means) and its spread: std over seeds, else the fold std."""
    means = [statistics.fmean(folds) for folds in runs]
    if len(runs) > 1:
        return statistics.fmean(means), statistics.stdev(means), f"{len(runs)} seeds"
    if len(runs[0]) > 1:
        return means[0], statistics.stdev(runs[0]), f"{len(runs[0])} folds"
    return means[0], None, "one run"


def compare(kit_dirs: list[Path], our_dirs: list[Path]) -> list[dict]:
    """Every task scored on both sides, by each side's runs (seeds) that hold it."""
    kit = [kit_scores(d) for d in kit_dirs]
    ours = [our_scores(d) for d in our_dirs]
    rows = []
    for task in sorted(set().union(*kit) & set().union(*ours)):
        kit_runs = [k[task] for k in kit if task in k]
        our_runs = [o[task] for o in ours if task in o]
        for metric in kit_runs[0]:
            kit_mean, kit_spread, kit_basis = _summary([k[metric] for k in kit_runs])
            our_mean, our_spread, our_basis = _summary([o[metric] for o in our_runs])
            spread = (kit_spread or 0.0) + (our_spread or 0.0)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "grid_points": our_runs[0]["grid_points"],
                    "kit": [k[metric] for k in kit_runs],
                    "ours": [o[metric] for o in our_runs],
                    "kit_mean": kit_mean,
                    "kit_spread": kit_spread,
                    "kit_basis": kit_basis,
                    "ours_mean": our_mean,
                    "ours_spread": our_spread,
                    "ours_basis": our_basis,
                    "difference": our_mean - kit_mean,
                    "within_spread": abs(our_mean - kit_mean) <= spread if kit_spread or our_spread else None,
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(mean, spread):
        return f"{100 * mean:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")

    lines = [
        "| task | metric | grid points | heareval 2021.1.3 | hearfuse --embeddings | difference | within spread |",
        "|---|---|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        within = {True: "yes", False: "**no**", None: "–"}[r["within_spread"]]
        lines.append(
            f"| {r['task']} | {r['metric']} | {r['grid_points']} | {cell(r['kit_mean'], r['kit_spread'])} "
            f"({r['kit_basis']}) | {cell(r['ours_mean'], r['ours_spread'])} ({r['ours_basis']}) | "
            f"{100 * r['difference']:+.1f} | {within} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kit", nargs="+", type=Path, required=True, help="module folders scored by heareval, one per seed"
    )
    parser.add_argument("--ours", nargs="+", type=Path, required=True, help="hearfuse results folders, one per seed")
    args = parser.parse_args()
    rows = compare(args.kit, args.ours)
    data = {
        "benchmark": "heareval_comparison",
        "environment": environment(threads=2),
        "kit": [str(d) for d in args.kit],
        "ours": [str(d) for d in args.ours],
        "rows": rows,
    }
    write_results("heareval_comparison", data, markdown(rows))


if __name__ == "__main__":
    main()
