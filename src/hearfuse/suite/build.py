"""Building the suite: every registered task, deterministic for a seed, cached, with progress."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from . import music, speech  # noqa: F401  (registration)
from .registry import SIZES, SUITE, SuiteTask
from .synth import require, soundfont

#: Bumped whenever a builder changes what it writes, so cached tasks are rebuilt.
SUITE_VERSION = 1


def task_rng(seed: int, name: str) -> np.random.Generator:
    """Each task draws from its own stream: adding or rebuilding one task never changes another."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def build_suite(
    out: str | Path,
    *,
    size: str = "ci",
    seed: int = 0,
    only: Sequence[str] = (),
    progress: bool = True,
) -> list[Path]:
    """Build (or reuse) the selected tasks under ``out``; returns their directories."""
    from tqdm import tqdm

    if size not in SIZES:
        raise UsageError(f"size must be one of {SIZES}, got {size!r}")
    unknown = sorted(set(only) - set(SUITE))
    if unknown:
        raise UsageError(f"unknown suite tasks {unknown}; tasks: {', '.join(SUITE)}")
    require("fluidsynth"), require("espeak-ng"), soundfont()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selected: list[SuiteTask] = [task for name, task in SUITE.items() if not only or name in only]
    stamp = {"seed": seed, "size": size, "suite_version": SUITE_VERSION}
    directories = []
    bar = tqdm(selected, unit="task", disable=not progress)
    for task in bar:
        directory = out / f"{task.name}-v1-{size}"
        marker = directory / ".complete"
        if marker.is_file() and json.loads(marker.read_text()) == stamp:
            bar.set_postfix_str(f"{task.name}: cached")
            directories.append(directory)
            continue
        bar.set_postfix_str(f"{task.name}: building")
        writer = task.build(out, size, task_rng(seed, task.name))
        directories.append(writer.finish(stamp))
    return directories
