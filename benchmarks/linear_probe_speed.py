"""The linear probe's cost on real embeddings: its whole L2 search and the other folds, per task.

What it measures: for each model x task, the wall time of ``score_task`` with ``--probe linear`` (the
twelve-candidate L2 search on the first fold, the chosen penalty fitted on the other folds, the test
scores), with the solver's iterations per candidate, how many stopped at the iteration cap
(``converged: false``), the chosen penalty and the scores. Embedding is cached and not timed.

Why: on frame-level event tasks the probe, not the model, dominated an evaluation (piano_onsets'
L2 search took minutes, most fits at the cap). Runs are kept side by side under a ``--label``, so a
solver can be compared with an earlier one on the same machine in one sitting: run the earlier code
with ``--label before`` (e.g. ``PYTHONPATH=<old checkout>/src``), then this one with ``--label after``.

Run: ``python -m benchmarks.linear_probe_speed --tasks demo/tasks --model examples/crepe_tiny.toml
[--only piano_onsets office_events] [--label after]``. Writes ``benchmarks/results/linear_probe_speed.json``
(every label so far) and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hearfuse.evaluation.evaluate import EvaluationSettings, embed_task, score_task
from hearfuse.evaluation.protocol import LINEAR_DEFINITION, Protocol
from hearfuse.evaluation.splits import from_cache
from hearfuse.evaluation.tasks import load_task, select_tasks
from hearfuse.hear import resolve_config
from hearfuse.model import FusionModel

from ._env import RESULTS, environment, write_results


def measure(model_ref: str, task_path: Path, settings: EvaluationSettings, model: FusionModel) -> dict:
    task = load_task(task_path)
    embedded = embed_task(model, task, settings)
    data = {split: from_cache(task, split, parts) for split, (parts,) in embedded.items()}
    started = time.perf_counter()
    result = score_task(task, data, settings)
    seconds = time.perf_counter() - started
    grid = result["grid"]
    return {
        "model": model_ref,
        "task": task.name,
        "rows": int(sum(len(data[split].x) for split in task.folds()[0].train)),
        "width": int(next(iter(data.values())).x.shape[1]),
        "seconds": seconds,
        "search_s": result["timings"]["grid_s"],
        "iterations": [candidate["epochs_run"] for candidate in grid],
        "at_cap": sum(not candidate.get("converged", True) for candidate in grid),
        "l2": result["selected_hyperparameters"]["l2"],
        "validation_score": result["validation_score"],
        "test": {name: value["mean"] for name, value in result["test"].items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True, type=Path, help="a directory of tasks (hearfuse tasks build)")
    parser.add_argument("--model", action="append", required=True, help="preset, real model or config (repeatable)")
    parser.add_argument("--only", nargs="+", default=["piano_onsets", "office_events"], help="task names")
    parser.add_argument("--label", default="after", help="the name this run is kept under")
    parser.add_argument("--cache", type=Path, help="embedding cache (default: a temporary directory)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="hearfuse-probe-speed-"))
    settings = EvaluationSettings(cache, cache / "results", protocol=Protocol(probe="linear"), progress=False)
    path = RESULTS / "linear_probe_speed.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    rows: list[dict] = []
    runs[args.label] = {
        "environment": environment(args.threads),
        "solver": LINEAR_DEFINITION.get("solver", "torch.optim.LBFGS on the standardised inputs"),
        "tolerance": LINEAR_DEFINITION["tolerance"],
        "results": rows,
    }
    for model_ref in args.model:
        model = FusionModel.from_config(resolve_config(model_ref), device="cpu")
        for task_path in select_tasks(args.tasks, tuple(args.only)):
            rows.append(measure(model_ref, task_path, settings, model))
            print(f"{model_ref} {rows[-1]['task']}: {rows[-1]['seconds']:.1f} s, {rows[-1]['at_cap']} at the cap")
            # written after every task, so a run stopped early keeps what it measured
            write_results("linear_probe_speed", {"benchmark": "linear_probe_speed", "runs": runs}, markdown(runs))


def markdown(runs: dict) -> str:
    """One row per model x task, each label's seconds, candidates at the cap and test score side by side."""
    labels = list(runs)
    keys = list(dict.fromkeys((row["model"], row["task"]) for run in runs.values() for row in run["results"]))
    by_key = {label: {(row["model"], row["task"]): row for row in run["results"]} for label, run in runs.items()}
    lines = [
        "".join(
            f"- {label}: {run['solver']}, tolerance {run['tolerance']:g}; {run['environment']['cpu_model']}, "
            f"flags {' '.join(run['environment'].get('cpu_flags', []))}, {run['environment']['torch_threads']} "
            f"threads, {run['environment']['date']}\n"
            for label, run in runs.items()
        ),
        "| model | task | rows x width | "
        + " | ".join(f"{label}: s | {label}: at cap | {label}: test" for label in labels)
        + " |",
        "|---|---|---|" + "---:|---:|---:|" * len(labels),
    ]
    for key in keys:
        some = next(by_key[label][key] for label in labels if key in by_key[label])
        cells = []
        for label in labels:
            row = by_key[label].get(key)
            primary = next(iter(row["test"].values())) if row else None
            cells.append(f"{row['seconds']:.1f} | {row['at_cap']}/12 | {primary:.3f}" if row else "– | – | –")
        lines.append(f"| `{key[0]}` | {key[1]} | {some['rows']:,} x {some['width']} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
