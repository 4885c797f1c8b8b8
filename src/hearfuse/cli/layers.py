"""``hearfuse layers``: every hidden state of every member probed on HEAR-layout tasks."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError
from .common import checked_device, evaluation_options, report_failures, settings_from, writable_folder


def add(commands) -> None:
    layers = commands.add_parser(
        "layers",
        help="probe every hidden state of every member on HEAR-layout tasks (which layers carry what)",
        description="For every member of the model and every hidden state (a transformer's embedding output and "
        "each block; CREPE's pool-1 to pool-5), probe the member alone with only that state (aggregation [i]) on "
        "every task, from one pass of the member per clip. Writes RESULTS/layers/<model>-layers-<probe>.md and "
        ".json (state x task) and one heatmap per member; each state's results are stored as `hearfuse "
        "evaluate` stores those of that config, and reused while they hold. --write-config writes the model "
        "with each analysed member's aggregation learned (softmax weights trained jointly with a linear probe "
        "per task, as s3prl's featurizer) or set to its best state on validation.",
        epilog="examples:\n  hearfuse layers --model crepe --tasks tasks/ --results results/\n"
        "  hearfuse layers --model fusion_cat_xwc --members hubert --tasks tasks/ --probe knn\n"
        "  hearfuse layers --model crepe --tasks tasks/ --task gm_pitch --write-config crepe_pitch.toml\n\n"
        "Exit status: 0 when every state was scored on every task, 1 when any failed, 2 on usage errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    layers.add_argument("--model", "-m", required=True, help="preset name or .toml/.json config")
    layers.add_argument("--tasks", required=True, help="a task directory or a folder of task directories")
    layers.add_argument("--members", nargs="+", metavar="NAME", help="only these members (default: all)")
    layers.add_argument("--write-config", metavar="FILE", help="write the model with chosen layers (.toml or .json)")
    layers.add_argument(
        "--choose",
        choices=("learned", "best"),
        default="learned",
        help="--write-config's aggregation: learned weights over all states, or the best single state on "
        "validation (default: learned)",
    )
    evaluation_options(layers, default_probe="linear")
    layers.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from ..evaluation.layers import analyse_layers, chosen_config, write_outputs
    from ..evaluation.results import LAYERS_FOLDER

    logging.getLogger("hearfuse").setLevel(logging.INFO)  # what is recomputed and why
    if args.write_config and Path(args.write_config).suffix not in (".toml", ".json"):
        raise UsageError(f"--write-config {args.write_config}: expected a .toml or .json file name")
    if args.write_config:
        writable_folder("--write-config", str(Path(args.write_config).expanduser().parent))
    results_dir = writable_folder("--results", args.results).resolve()
    settings = settings_from(args, results_dir, checked_device(args.device))
    # the views' results live apart from evaluate's models (one report each); embeddings are shared
    settings = dataclasses.replace(settings, results_dir=results_dir / LAYERS_FOLDER)
    config, analysed = analyse_layers(
        args.model,
        args.tasks,
        settings,
        members=args.members or (),
        only=args.task or (),
        dtype=args.dtype,
        learn_weights=bool(args.write_config) and args.choose == "learned",
    )
    markdown, table, pictures = write_outputs(config, analysed, args.probe, settings.results_dir)
    print(markdown.read_text())
    print(f"table: {markdown}, {table}; heatmaps: {', '.join(str(p) for p in pictures)}")
    if args.write_config:
        written = chosen_config(config, analysed, args.choose).save(Path(args.write_config).expanduser())
        print(f"config ({args.choose} layers): {written}")
    return report_failures([r for layers in analysed for per_task in layers.results for r in per_task])
