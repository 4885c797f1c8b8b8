"""``hearfuse tasks``: check, build and list HEAR-layout task directories."""

from __future__ import annotations

import argparse
import sys

from .common import quiet_option


def add(commands) -> None:
    tasks = commands.add_parser(
        "tasks",
        help="work with HEAR-layout task directories",
        description="Work with task directories in the layout HEAR's preprocessing writes.",
    )
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    check = task_commands.add_parser(
        "check",
        help="validate task directories and say exactly what is malformed",
        description="Validate task directories (metadata, label vocabulary, split files, labels) and read the "
        "header of every audio file; each problem is named with its task, split and file.",
        epilog="example:\n  hearfuse tasks check tasks/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("dirs", nargs="+", metavar="DIR", help="a task directory or a folder of task directories")
    check.set_defaults(run=check_tasks)

    build = task_commands.add_parser(
        "build",
        help="build the offline suite (synthetic, or recorded from Debian packages) in the HEAR layout",
        description="Build the offline benchmark suite into DIR/<task>-v1-<size>/ in the HEAR task layout. "
        "Deterministic for a seed (same bytes on rerun); finished tasks are reused until their seed, size, suite "
        "version or the Debian packages they read change. The synthetic suite renders FluidR3 GM instruments "
        "and espeak-ng voices (Debian packages fluidsynth, fluid-soundfont-gm, espeak-ng, sox); the recorded "
        "suite reads recordings people made from the Debian packages tuxpaint-stamps-default, ktuberling-data, "
        "klettres-data and hydrogen-drumkits (`make system-deps` installs them all).",
        epilog="examples:\n  hearfuse tasks build --out tasks/ --size ci\n"
        "  hearfuse tasks build --out tasks/ --suite all\n"
        "  hearfuse tasks build --out tasks/ --size full --only gm_pitch spoken_words",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--out", "-o", required=True, help="directory to write the tasks into")
    build.add_argument(
        "--size",
        choices=("ci", "full"),
        default="ci",
        help="ci: minutes to build, for tests and demos; full: enough to separate models (default: ci)",
    )
    build.add_argument(
        "--suite",
        choices=("synthetic", "recorded", "all"),
        default="synthetic",
        help="synthetic: rendered; recorded: recordings from Debian packages; all: both (default: synthetic)",
    )
    build.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these tasks (of the suite chosen)")
    quiet_option(build)
    build.set_defaults(run=build_tasks)

    listing = task_commands.add_parser(
        "list", help="describe the suite's tasks", description="Describe each task of the offline suite."
    )
    listing.set_defaults(run=list_tasks)


def check_tasks(args: argparse.Namespace) -> int:
    from ..evaluation.tasks import TaskError, load_task, select_tasks

    status = 0
    for root in args.dirs:
        for path in select_tasks(root):
            try:
                task = load_task(path, read_headers=True)
                print(
                    f"ok: {task.name} ({task.embedding_type}, {task.prediction_type}, {task.split_mode}, "
                    f"{len(task.labels)} labels, metrics {', '.join(task.metrics)})"
                )
            except TaskError as error:
                print(error, file=sys.stderr)
                status = 1
    return status


def build_tasks(args: argparse.Namespace) -> int:
    import time

    from ..suite.build import build_suite

    started = time.perf_counter()
    directories = build_suite(
        args.out, suite=args.suite, size=args.size, seed=args.seed, only=args.only or (), progress=not args.quiet
    )
    for directory in directories:
        print(directory)
    print(f"{len(directories)} tasks in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0


def list_tasks(args: argparse.Namespace) -> int:
    from ..suite.build import SUITE

    width = max(len(name) for name in SUITE)
    for task in SUITE.values():
        print(f"{task.name:{width}} {task.suite:9} {task.kind:20} stands in for {task.stands_in_for}")
        print(f"{'':{width}} labels: {task.labels}; metric: {task.metric}")
    return 0
