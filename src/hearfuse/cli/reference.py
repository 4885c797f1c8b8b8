"""``hearfuse reference``: the published HEAR 2021 results and the paper's tables."""

from __future__ import annotations

import argparse
import json


def add(commands) -> None:
    reference = commands.add_parser(
        "reference",
        help="the published HEAR 2021 results and the paper's tables, to see what to aim for",
        description="Published numbers only (nothing is computed): the paper's Tables 2-6 as printed, every "
        "HEAR 2021 submission's scores on a task, or one preset's or submission's scores on every task, with "
        "their sources. Default: the paper's Table 2.",
        epilog="examples:\n  hearfuse reference\n  hearfuse reference --table 3\n"
        "  hearfuse reference --task esc50 --task nsynth_pitch\n  hearfuse reference --model fusion_cat_xwc\n"
        "  hearfuse reference --model torchcrepe --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reference.add_argument("--table", type=int, help="one of the paper's result tables, 2-6, as printed (default: 2)")
    reference.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="TASK",
        help="a HEAR 2021 task (esc50, nsynth_pitch-5h or its directory name): every submission's scores, best "
        "first; repeatable",
    )
    reference.add_argument(
        "--model",
        "-m",
        help="a preset (fusion_cat_xwc) or a HEAR 2021 submission (torchcrepe, 'CP-JKU base2levelmel', or its "
        "leaderboard name): its scores and place on every task",
    )
    reference.add_argument("--json", action="store_true", help="the same selection as JSON")
    reference.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import published

    tasks = published.resolve_tasks(args.task)
    if args.model:
        published.resolve_model(args.model)  # a wrong name fails before anything is printed
    table = args.table if args.table is not None or tasks or args.model else 2
    if table is not None:
        published.paper_table(table)
    if args.json:
        selection: dict = {"published": published.sources()}
        if table is not None:
            selection["paper_table"] = published.paper_table(table)
        if tasks:
            selection["tasks"] = [published.task_view(task) for task in tasks]
        if args.model:
            selection["model"] = published.model_view(args.model)
        print(json.dumps(selection, indent=2, ensure_ascii=False))
        return 0
    parts = []
    if table is not None:
        parts.append(published.paper_table_markdown(table))
    parts += [published.task_markdown(task) for task in tasks]
    if args.model:
        parts.append(published.model_markdown(args.model))
    print("\n".join(parts), end="")
    return 0
