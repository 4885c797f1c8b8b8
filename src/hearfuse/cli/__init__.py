"""The ``hearfuse`` command line: one module per command, its parser beside its handler, the options they
share defined once (:mod:`.common`). Only the standard library at import time: ``hearfuse --help`` must not
wait for torch."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import UsageError
from . import download, embed, evaluate, export, layers, models, plan, reference, report, tasks
from .common import settle_ray_address

#: The commands in the order ``hearfuse --help`` lists them.
COMMANDS = (embed, export, models, download, evaluate, layers, plan, report, reference, tasks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearfuse",
        description="Audio representations by fusing pretrained models (HEAR API), from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 1 some input failed (each recorded with its reason), 2 a usage error
    (one line on stderr). Anything else is a bug and shows its traceback."""
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="hearfuse: %(message)s")  # the library's warnings, one line each
    try:
        settle_ray_address(args)
        return args.run(args)
    except UsageError as error:
        print(f"hearfuse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
