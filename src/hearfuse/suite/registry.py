"""The suite's tasks by name: what each stands in for, and the function that builds it."""

from __future__ import annotations

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


SUITE: dict[str, SuiteTask] = {}


def suite_task(name: str, *, stands_in_for: str, kind: str, labels: str, metric: str, suite: str = "synthetic"):
    """Register a task builder under ``name`` in ``suite``."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")

    def register(build: Builder) -> Builder:
        if name in SUITE:
            raise ValueError(f"suite task {name!r} is already registered")
        SUITE[name] = SuiteTask(name, stands_in_for, kind, labels, metric, build, suite)
        return build

    return register
