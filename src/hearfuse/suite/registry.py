"""The suite's tasks by name: what each stands in for, the sources it reads, and the function that builds it."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .writer import TaskWriter

#: ``build(root, size, rng)`` renders every clip into a :class:`TaskWriter` and returns it unfinished.
Builder = Callable[[Path, str, np.random.Generator], TaskWriter]
SIZES = ("ci", "full")
#: "synthetic": rendered from a soundfont and espeak-ng; "recorded": audio people recorded, from Debian packages.
SUITES = ("synthetic", "recorded")


@dataclass(frozen=True)
class SuiteTask:
    name: str
    stands_in_for: str
    kind: str  # e.g. "scene, multiclass"
    labels: str  # what the labels are, in words
    metric: str  # primary metric (and secondary ones in brackets)
    build: Builder
    suite: str = "synthetic"
    #: The Debian packages a recorded task reads: their installed versions are part of what it is built from.
    packages: tuple[str, ...] = ()


SUITE: dict[str, SuiteTask] = {}


def suite_task(
    name: str,
    *,
    stands_in_for: str,
    kind: str,
    labels: str,
    metric: str,
    suite: str = "synthetic",
    packages: tuple[str, ...] = (),
):
    """Register a task builder under ``name`` in ``suite``; every task it builds says its suite in its
    task_metadata.json (so a report can tell recorded from synthetic tasks)."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
    if (suite == "recorded") != bool(packages):
        raise ValueError(f"suite task {name!r}: a recorded task, and only one, names the Debian packages it reads")

    def register(build: Builder) -> Builder:
        if name in SUITE:
            raise ValueError(f"suite task {name!r} is already registered")

        @functools.wraps(build)
        def build_in_suite(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
            writer = build(root, size, rng)
            writer.add_metadata(suite=suite)
            return writer

        SUITE[name] = SuiteTask(name, stands_in_for, kind, labels, metric, build_in_suite, suite, tuple(packages))
        return build

    return register
