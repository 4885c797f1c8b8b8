"""``hearfuse plan``: the best fusion of some members for some tasks, chosen on validation data."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    checked_device,
    checked_resamples,
    checked_seeds,
    evaluation_options,
    report_failures,
    resamples_option,
    seeds_option,
    settings_from,
    writable_folder,
)


def add(commands) -> None:
    plan = commands.add_parser(
        "plan",
        help="find the best fusion of some members for HEAR-layout tasks (states, subsets, combination, "
        "reference, pooling), chosen on validation",
        description="Embed every hidden state of every member once per clip (cached: nothing is embedded twice, "
        "across runs too), build every candidate fusion from those states with the fusion step the model itself "
        "runs, score the candidates on validation data with the linear probe (the best again with the kit's MLP "
        "under --probe mlp), and test only what is reported. The space: per member its last state, the mean of "
        "all (the paper) or its best single state; every non-empty subset of the members; cat, avg or cat with "
        "members weighted equally (every member interpolated to the reference's width, the paper's); each member "
        "of a subset as the alignment reference; scene pooling by the mean or 5 groups. Writes OUT: "
        "configs-<probe>/<task>.toml (the choice per task) and configs-<probe>/all_tasks.toml (best mean rank), "
        "which `hearfuse "
        "embed` and `evaluate` load; plan-<probe>.md/.json (candidates x tasks, test scores of what is reported) "
        "with 95 % intervals from a paired bootstrap over the test items and the choice's differences to the best "
        "single member and to the paper's recipe, and pareto-<probe>.png (score against the members' real-time "
        "factor and the width). Rerun to resume: "
        "stored scores are reused while their provenance holds.",
        epilog="examples:\n"
        "  hearfuse plan --member crepe_tiny --member whisper_tiny_en --member resemblyzer --tasks tasks/\n"
        "  hearfuse plan --member fusion_cat_xwc --tasks tasks/ --paper\n"
        "  hearfuse plan --member crepe_tiny --member crepe_small --tasks tasks/ --states mean --combine cat,avg\n"
        "  hearfuse plan --member examples/whisper_crepe_ge2e_wakeword.toml:whisper --member crepe_tiny "
        "--tasks tasks/ --task gm_pitch --probe mlp\n\n"
        "Exit status: 0 when every candidate was scored on every task, 1 when any failed, 2 on usage errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument(
        "--member",
        action="append",
        required=True,
        metavar="MEMBER",
        help="a real model or preset name, or a .toml/.json config (each of its members), or NAME_OR_FILE:MEMBER "
        "(that member); repeatable, member names unique",
    )
    plan.add_argument("--tasks", required=True, help="a task directory or a folder of task directories")
    plan.add_argument(
        "--out", help="where the plan writes its scores, tables, chart and configs (default: RESULTS/plan)"
    )
    space = plan.add_argument_group("the candidate space")
    space.add_argument(
        "--states",
        default="last,mean,best",
        help="each member's state choices, comma-separated, from last, mean, best and learned (softmax weights "
        "over its states fitted jointly with a linear head per task, as `hearfuse layers --choose learned`; one "
        "joint fit per member) (default: last,mean,best)",
    )
    space.add_argument(
        "--combine",
        default="cat,avg,cat_eq",
        help="combinations, comma-separated, from cat, avg, cat_eq (cat with members weighted equally) "
        "(default: all three)",
    )
    space.add_argument(
        "--min-members",
        type=int,
        default=1,
        help="only fusions of at least this many members may be chosen (default: 1; single members are still "
        "scored, to compare with)",
    )
    space.add_argument(
        "--search",
        choices=("staged", "exhaustive"),
        default="staged",
        help="staged: one factor at a time, as the paper's ablation (states; subsets x combinations; reference "
        "and pooling of the best); exhaustive: every candidate of the space (default: staged)",
    )
    space.add_argument(
        "--paper",
        action="store_true",
        help="score only the rows of the paper's Tables 3-6 on these members (all of them tested) and print "
        "them in its layout",
    )
    evaluation_options(plan, default_probe="linear")
    resamples_option(plan)
    seeds_option(plan)
    plan.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from ..dtypes import resolve_dtype
    from ..evaluation.plan import Plan, Space, resolve_members, run_plan
    from ..evaluation.plan_report import certainty, paper_markdown, write_outputs
    from ..evaluation.results import PLAN_FOLDER

    logging.getLogger("hearfuse").setLevel(logging.INFO)  # what is recomputed and why
    resamples, seeds = checked_resamples(args), checked_seeds(args)
    members = resolve_members(args.member)
    space = Space(_listed(args.states), _listed(args.combine), args.min_members)
    results_dir = Path(args.results).expanduser().resolve()
    out = writable_folder("--out", args.out or str(results_dir / PLAN_FOLDER)).resolve()
    settings = dataclasses.replace(
        settings_from(args, results_dir, checked_device(args.device)), results_dir=out, training_seeds=seeds
    )
    plan = Plan(
        members,
        args.tasks,
        settings,
        only=args.task or (),
        dtype=resolve_dtype(args.dtype, settings.device),
        probe=args.probe,
        search=args.search,
        paper=args.paper,
        space=space,
    )
    result = run_plan(plan)
    sure = certainty(result, resamples)
    written = write_outputs(result, settings.results_dir, sure)
    if args.paper:
        print(paper_markdown(result, sure))
    print(f"table: {written['markdown']}, {written['json']}; chart: {written['chart']}")
    for task, path in written.items():
        if task not in ("markdown", "json", "chart"):
            print(f"config for {task}: {path}")
    return report_failures(
        [record for c in plan.candidates.values() for per_task in c.validation.values() for record in per_task.values()]
        + [r.result for r in result.reported]
    )


def _listed(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
