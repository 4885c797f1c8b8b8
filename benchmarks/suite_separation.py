"""Suite separation: do a suite's test scores tell two models apart beyond their spread?

What it measures, for every task evaluated for both ``--models`` in ``--results`` (the
directory ``hearfuse evaluate`` wrote): the primary test score of each model, its spread,
and whether the difference exceeds the sum of the two spreads. The spread is

- the fold-to-fold standard deviation for k-fold tasks (as ``hearfuse evaluate`` stores it);
- for single-split tasks with an accuracy metric, the binomial standard error of the test
  accuracy, ``sqrt(p (1 - p) / n_test)``: what test-set sampling alone moves the score by;
- not available otherwise (mAP, event F-measures on one split): shown as "–".

Why: the ``full`` suite is meant to be large enough that scores separate models by more
than their spread (issue #5); this is how that is checked.

Run: ``python -m benchmarks.suite_separation --results RESULTS --tasks TASKS --models A B``.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hearfuse.evaluation.results import load_results
from hearfuse.evaluation.tasks import find_tasks, load_task

ACCURACY_METRICS = {"top1_acc", "pitch_acc", "chroma_acc"}


def spread(record: dict, test_size: int) -> float | None:
    score = record["test"][record["metric"]]
    if len(score["folds"]) > 1:
        return score["std"]
    if record["metric"] in ACCURACY_METRICS:
        p = score["mean"]
        return math.sqrt(p * (1 - p) / test_size)
    return None


def separation_table(results_dir: Path, tasks_dir: Path, models: tuple[str, str]) -> str:
    tasks = {task.name: task for task in map(lambda p: load_task(p, check_audio=False), find_tasks(tasks_dir))}
    records = {(r["model"], r["task"]): r for r in load_results(results_dir) if r["status"] == "ok"}
    a, b = models
    lines = [
        f"| task | metric | test clips per fold | {a} | {b} | difference | spread sum | separated |",
        "|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for name in sorted({task for _, task in records}):
        if (a, name) not in records or (b, name) not in records or name not in tasks:
            continue
        task = tasks[name]
        sizes = [len(task.split_labels(fold.test)) for fold in task.folds()]
        test_size = round(sum(sizes) / len(sizes))
        ra, rb = records[a, name], records[b, name]
        mean_a, mean_b = ra["test"][ra["metric"]]["mean"], rb["test"][rb["metric"]]["mean"]
        spreads = [spread(ra, test_size), spread(rb, test_size)]
        difference = mean_a - mean_b
        if None in spreads:
            total, verdict = "–", "–"
        else:
            total = f"{100 * sum(spreads):.1f}"
            verdict = "yes" if abs(difference) > sum(spreads) else "no"

        def score(record: dict, s: float | None) -> str:
            mean = 100 * record["test"][record["metric"]]["mean"]
            return f"{mean:.1f}" if s is None else f"{mean:.1f} ± {100 * s:.1f}"

        lines.append(
            f"| {name} | {ra['metric']} | {test_size} | {score(ra, spreads[0])} | {score(rb, spreads[1])} "
            f"| {100 * difference:+.1f} | {total} | {verdict} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, help="results directory of hearfuse evaluate")
    parser.add_argument("--tasks", type=Path, required=True, help="the suite's task directories")
    parser.add_argument("--models", nargs=2, required=True, metavar=("A", "B"))
    args = parser.parse_args(argv)
    print(separation_table(args.results, args.tasks, tuple(args.models)))
    print("\nScores x100, ± spread (fold std for k-fold tasks, binomial standard error of the test accuracy")
    print("for single-split accuracy tasks); separated: |difference| > sum of both spreads.")


if __name__ == "__main__":
    main()
