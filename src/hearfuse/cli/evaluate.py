"""``hearfuse evaluate``: presets and configs scored on HEAR-layout tasks as heareval 2021 scores them."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .common import (
    baseline_option,
    checked_device,
    checked_seeds,
    evaluation_options,
    ray_option,
    report_failures,
    seeds_option,
    settings_from,
    writable_folder,
)


def add(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score presets/configs on HEAR-layout tasks (shallow MLP on frozen embeddings)",
        description="For every model x task: embed every split (cached, resumable), draw the HEAR kit's grid points, "
        "search them on the first data split, train the chosen one on every split and score it with the task's "
        "metrics, exactly as heareval 2021.1.3 does. With --embeddings, score embeddings that heareval's own "
        "embedding runner wrote instead. Writes RESULTS/<model>/<task>.json, beside it the test predictions it was "
        "scored from (<task>.predictions.npz: the report's 95 % intervals and paired differences are computed from "
        "them), RESULTS/report.md and RESULTS/report.png. A stored result is reused only while everything it was "
        "computed from holds (config numbers, dtype, embedding code, task files and audio, protocol) and its "
        "predictions are stored; otherwise it is recomputed and the log says why. A failing task is reported and "
        "the others go on.",
        epilog="examples:\n  hearfuse evaluate --model crepe --tasks tasks/ --results results/\n"
        "  hearfuse evaluate --model crepe --model my_fusion.toml --tasks tasks/ --task gm_pitch --device cuda\n"
        "  hearfuse evaluate --embeddings embeddings/hearfuse.presets.crepe --results results/\n"
        "  hearfuse evaluate --model crepe --model cat_wc --tasks /shared/tasks --results /shared/results --ray\n\n"
        "Exit status: 0 when every task was scored, 1 when any failed, 2 on usage errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model", "-m", action="append", help="preset name or .toml/.json config; repeat for several models"
    )
    evaluate.add_argument("--tasks", help="a task directory or a folder of task directories")
    evaluate.add_argument(
        "--embeddings",
        metavar="DIR",
        help="score heareval's embeddings instead: EMBEDDINGS/<module>/ (or one task folder in it)",
    )
    evaluation_options(evaluate, default_probe="mlp")
    baseline_option(evaluate)
    seeds_option(evaluate)
    ray_option(evaluate)
    evaluate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..evaluation.evaluate import evaluate, evaluate_embeddings
    from ..evaluation.report import write_report

    if bool(args.embeddings) == bool(args.model or args.tasks):
        raise UsageError("give either --model and --tasks (embed here) or --embeddings DIR (heareval's embeddings)")
    if not args.embeddings and not (args.model and args.tasks):
        missing = "--tasks (the folder of task directories)" if args.model else "--model (a preset or config)"
        raise UsageError(f"embedding here needs both --model and --tasks; missing {missing}")
    seeds = checked_seeds(args)
    logging.getLogger("hearfuse").setLevel(logging.INFO)  # what is recomputed and why
    results_dir = writable_folder("--results", args.results).resolve()
    if args.baseline is not None and args.model:
        args.baseline = baseline_name(args.baseline, args.model, results_dir)
    with contextlib.ExitStack() as stack:
        if args.ray is not None:
            from ..cluster import cluster_device, connect

            stack.enter_context(connect(args.ray))
            device = cluster_device(args.device)
            # work travels as paths: every worker must find them wherever it starts
            args.tasks = args.tasks and str(Path(args.tasks).resolve())
            args.embeddings = args.embeddings and str(Path(args.embeddings).resolve())
        else:
            device = checked_device(args.device)
        settings = replace(settings_from(args, results_dir, device), training_seeds=seeds)
        on_ray = args.ray is not None
        if args.embeddings:
            results = evaluate_embeddings(args.embeddings, settings, only=args.task or (), on_ray=on_ray)
        else:
            results = evaluate(args.model, args.tasks, settings, only=args.task or (), dtype=args.dtype, on_ray=on_ray)
    markdown, chart = write_report(results_dir, baseline=args.baseline)
    print(Path(markdown).read_text())
    print(f"report: {markdown}, chart: {chart}")
    for result in results:
        if result["status"] == "skipped":
            print(f"skipped: {result['model']} on {result['task']}: {result['reason']}")
    return report_failures(results)


def baseline_name(baseline: str, models: list[str], results_dir: Path) -> str:
    """The name of the model ``--baseline`` gives, checked before any work: a model of this run (its name,
    or the --model argument that gives it) or one whose results are already in the folder."""
    from ..evaluation.results import load_results
    from ..hear import resolve_config

    names = {reference: resolve_config(reference).name for reference in models}
    known = set(names.values()) | {record["model"] for record in load_results(results_dir)}
    if baseline in names:
        return names[baseline]
    if baseline not in known:
        raise UsageError(
            f"--baseline {baseline!r} is none of the models evaluated or stored in {results_dir}; "
            f"give one of: {', '.join(sorted(known))}"
        )
    return baseline
