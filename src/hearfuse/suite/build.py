"""Building the suite: the registered tasks of the synthetic or recorded suite (or both), deterministic for
a seed, cached, with progress."""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from . import debian, music, recorded_drums, recorded_speech, speech  # noqa: F401  (registration)
from .registry import SIZES, SUITE, SUITES, SuiteTask
from .synth import require, soundfont

log = logging.getLogger(__name__)

#: Bumped whenever a builder of the suite changes what it writes, so its cached tasks are rebuilt (synthetic 2:
#: every task's metadata says its suite).
SUITE_VERSIONS = {"synthetic": 2, "recorded": 1}
#: What ``--suite`` accepts: one suite, or both.
SUITE_CHOICES = (*SUITES, "all")


def task_rng(seed: int, name: str) -> np.random.Generator:
    """Each task draws from its own stream: adding or rebuilding one task never changes another."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def select_tasks(suite: str, only: Sequence[str] = ()) -> list[SuiteTask]:
    """The tasks of ``suite`` ("synthetic", "recorded" or "all"), or those of them named in ``only``."""
    if suite not in SUITE_CHOICES:
        raise UsageError(f"suite must be one of {SUITE_CHOICES}, got {suite!r}")
    unknown = sorted(set(only) - set(SUITE))
    if unknown:
        raise UsageError(f"unknown suite tasks {unknown}; tasks: {', '.join(SUITE)}")
    elsewhere = sorted(name for name in only if suite not in ("all", SUITE[name].suite))
    if elsewhere:
        other = SUITE[elsewhere[0]].suite
        raise UsageError(f"{elsewhere} are not in the {suite} suite; build them with --suite {other} or --suite all")
    return [task for task in SUITE.values() if suite in ("all", task.suite) and (not only or task.name in only)]


def package_versions(tasks: Sequence[SuiteTask]) -> dict[str, str]:
    """Check that what ``tasks`` read is installed (one line naming the install command when not) and return
    the installed version of each Debian package the recorded ones read."""
    if any(task.suite == "synthetic" for task in tasks):
        require("fluidsynth"), require("espeak-ng"), soundfont()
    return {package: debian.package_version(package) for package in sorted({p for t in tasks for p in t.packages})}


def task_stamp(task: SuiteTask, seed: int, size: str, versions: dict[str, str]) -> dict:
    """Everything that changes a task's bytes: a built task is reused only while its stamp is the same."""
    stamp = {"seed": seed, "size": size, "suite_version": SUITE_VERSIONS[task.suite]}
    if task.packages:
        stamp["packages"] = {package: versions[package] for package in task.packages}
    return stamp


def stale_because(built: dict, stamp: dict) -> str:
    """Why a task built with stamp ``built`` is rebuilt for ``stamp``, in words."""
    reasons = [
        f"{key} {built[key]} -> {stamp[key]}"
        for key in ("seed", "suite_version")
        if key in built and built[key] != stamp[key]
    ]
    was, now = built.get("packages", {}), stamp.get("packages", {})
    reasons += [f"{name} {was.get(name, 'not read')} -> {now[name]}" for name in now if was.get(name) != now[name]]
    return ", ".join(reasons) or "it was built differently"


def build_suite(
    out: str | Path,
    *,
    suite: str = "synthetic",
    size: str = "ci",
    seed: int = 0,
    only: Sequence[str] = (),
    progress: bool = True,
) -> list[Path]:
    """Build (or reuse) the selected tasks of ``suite`` under ``out``; returns their directories."""
    from tqdm import tqdm

    if size not in SIZES:
        raise UsageError(f"size must be one of {SIZES}, got {size!r}")
    selected = select_tasks(suite, only)
    versions = package_versions(selected)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    directories = []
    bar = tqdm(selected, unit="task", disable=not progress)
    for task in bar:
        directory = out / f"{task.name}-v1-{size}"
        marker = directory / ".complete"
        stamp = task_stamp(task, seed, size, versions)
        built = json.loads(marker.read_text()) if marker.is_file() else None
        if built == stamp:
            bar.set_postfix_str(f"{task.name}: cached")
            directories.append(directory)
            continue
        if built is not None:
            log.warning("rebuilding %s: %s", directory, stale_because(built, stamp))
        bar.set_postfix_str(f"{task.name}: building")
        writer = task.build(out, size, task_rng(seed, task.name))
        directories.append(writer.finish(stamp))
    return directories
