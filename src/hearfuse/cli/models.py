"""``hearfuse models``: every preset, its members, sizes, hop and whether its weights are here."""

from __future__ import annotations

import argparse
import json


def add(commands) -> None:
    models = commands.add_parser(
        "models",
        help="list presets: members, dimensions, hop, local weights",
        description="List every preset with its members, embedding sizes, hop and whether its weights are here.",
        epilog="example:\n  hearfuse models\n  hearfuse models --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--available", action="store_true", help="only the names of presets whose weights are here")
    models.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import catalogue

    rows = [catalogue.describe(catalogue.get(name)) for name in catalogue.names()]
    if args.available:
        print("\n".join(row["name"] for row in rows if row["weights_available"]))
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'preset':22} {'dims (timestamp/scene)':>22} {'hop':>6}  {'weights':8} members"
    print(header)
    print("-" * len(header))
    for row in rows:
        dims = f"{row['timestamp_embedding_size']}/{row['scene_embedding_size']}"
        available = "local" if row["weights_available"] else "missing"
        print(f"{row['name']:22} {dims:>22} {row['hop_ms']:>4g}ms  {available:8} {' + '.join(row['members'])}")
    print("\nweights 'missing': run `hearfuse download PRESET` where the network is available.")
    return 0
