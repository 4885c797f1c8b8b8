"""The same embeddings scored by heareval 2021.1.3 and by ``hearfuse evaluate --embeddings``, side by side.

What it compares: for each task, every test metric as the kit reported it (``<task>/test.predicted-scores.json``
that ``python -m heareval.predictions.runner`` writes into an embedding folder) and as hearfuse reported it
(``RESULTS/<module>/<task>.json``), each possibly under several seeds. Spread: the standard deviation over
seeds (ddof 1), or for a k-fold task under one seed the fold standard deviation. A difference is called
within the spread when it is at most the two spreads added.

Why: ``hearfuse evaluate`` claims to reproduce the kit's protocol; on identical embeddings the two
evaluators should differ by no more than the training noise both have.

heareval itself is not a dependency: it runs in a scratch environment (see the README, "Checked against
heareval"). Run: ``python -m benchmarks.heareval_comparison --kit KIT_DIR... --ours RESULTS_DIR...`` with
one folder per seed; writes ``benchmarks/results/heareval_comparison.{json,md}``.
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


def our_scores(results_dir: Path) -> dict[str, dict[str, list[float]]]:
    out = {}
    for path in sorted(results_dir.glob("*/*.json")):
        data = json.loads(path.read_text())
        if data.get("status") == "ok":
            out[data["task"]] = {
                m: [float("nan") if v is None else v for v in s["folds"]] for m, s in data["test"].items()
            }
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
    kit = [kit_scores(d) for d in kit_dirs]
    ours = [our_scores(d) for d in our_dirs]
    rows = []
    for task in sorted(set.intersection(*(set(k) for k in kit), *(set(o) for o in ours))):
        for metric in kit[0][task]:
            kit_mean, kit_spread, kit_basis = _summary([k[task][metric] for k in kit])
            our_mean, our_spread, our_basis = _summary([o[task][metric] for o in ours])
            spread = (kit_spread or 0.0) + (our_spread or 0.0)
            rows.append(
                {
                    "task": task,
                    "metric": metric,
                    "kit": [k[task][metric] for k in kit],
                    "ours": [o[task][metric] for o in ours],
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
        "| task | metric | heareval 2021.1.3 | hearfuse --embeddings | difference | within spread |",
        "|---|---|---:|---:|---:|:---:|",
    ]
    for r in rows:
        within = {True: "yes", False: "**no**", None: "–"}[r["within_spread"]]
        lines.append(
            f"| {r['task']} | {r['metric']} | {cell(r['kit_mean'], r['kit_spread'])} ({r['kit_basis']}) | "
            f"{cell(r['ours_mean'], r['ours_spread'])} ({r['ours_basis']}) | {100 * r['difference']:+.1f} | {within} |"
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
