"""Building the offline suite: registry, caching, determinism, HEAR layout, command line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from hearfuse.cli import main

if not (shutil.which("fluidsynth") and shutil.which("espeak-ng")):
    pytest.skip("the suite's Debian programs are not installed (make system-deps)", allow_module_level=True)

from hearfuse.suite.build import SUITE, build_suite  # noqa: E402

ISSUE_TASKS = {
    "gm_pitch",
    "gm_instrument",
    "gm_percussion",
    "piano_onsets",
    "spoken_words",
    "spoken_language",
    "speaker_count",
    "office_events",
    "sound_mixtures",
}


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_every_task_of_the_issue_is_registered_and_described(capsys):
    assert ISSUE_TASKS <= set(SUITE)
    assert main(["tasks", "list"]) == 0
    listing = capsys.readouterr().out
    for name in ISSUE_TASKS:
        assert name in listing
    assert "NSynth" in listing and "Speech Commands" in listing and "DCASE 2016" in listing


def test_build_is_cached_deterministic_and_valid(tmp_path, capsys):
    first = build_suite(tmp_path / "a", size="ci", seed=3, only=["gm_percussion"], progress=False)
    (directory,) = first
    before = _digest(directory)
    mtime = (directory / "task_metadata.json").stat().st_mtime_ns
    assert build_suite(tmp_path / "a", size="ci", seed=3, only=["gm_percussion"], progress=False) == first
    assert (directory / "task_metadata.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    (again,) = build_suite(tmp_path / "b", size="ci", seed=3, only=["gm_percussion"], progress=False)
    assert _digest(again) == before
    (other,) = build_suite(tmp_path / "a", size="ci", seed=4, only=["gm_percussion"], progress=False)
    assert _digest(other) != before  # a new seed rebuilds
    assert main(["tasks", "check", str(tmp_path / "a")]) == 0
    assert "ok: gm_percussion-v1-ci" in capsys.readouterr().out


def test_cli_build_and_errors(tmp_path, capsys):
    assert main(["tasks", "build", "--out", str(tmp_path), "--only", "gm_percussion", "-q"]) == 0
    assert (tmp_path / "gm_percussion-v1-ci" / "task_metadata.json").is_file()
    assert main(["tasks", "build", "--out", str(tmp_path), "--only", "nsynth"]) == 2
    assert "unknown suite tasks" in capsys.readouterr().err


def test_missing_program_is_named_with_its_install_command(monkeypatch, tmp_path, capsys):
    import hearfuse.suite.synth as synth

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    assert main(["tasks", "build", "--out", str(tmp_path), "--only", "gm_percussion"]) == 2
    error = capsys.readouterr().err
    assert "fluidsynth" in error and "apt-get install" in error
