"""Reduced precision on a CPU: the probe that tells native from emulated, the one-line warning (library and
real CLI, once per process, none where it is native), and what ``--dtype auto`` picks and records. The
check is injected (HEARFUSE_CPU_SLOWDOWN) so both kinds of CPU are tested on any machine; the probe itself is
checked against oneDNN told to behave as an AVX2-only CPU."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hearfuse
from hearfuse import dtypes
from hearfuse.model import FusionModel

from .processes import run
from .taskgen import scene_task

ROOT = Path(__file__).resolve().parents[1]
CREPE_TINY = str(ROOT / "examples" / "crepe_tiny.toml")
BIN = Path(sys.executable).parent
EMULATED = "bfloat16=60,float16=60"
NATIVE = "bfloat16=0.8,float16=60"


@pytest.fixture
def fresh_probe(monkeypatch):
    """A process that has neither probed nor warned yet."""
    dtypes.cpu_precision.cache_clear()
    monkeypatch.setattr(dtypes, "_warned", set())
    yield monkeypatch
    dtypes.cpu_precision.cache_clear()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "hearfuse.dtypes" and r.levelno == logging.WARNING]


def test_the_probe_tells_an_emulating_cpu_from_its_flags_and_timing():
    """oneDNN limited to AVX2 emulates bfloat16 on any x86 CPU: the probe must see it (tens of times slower)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("ONEDNN_MAX_CPU_ISA=AVX2 limits x86 CPUs only")
    code = "from hearfuse import dtypes; p = dtypes.cpu_precision('bfloat16'); print(p.slowdown, p.native)"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env.pop(dtypes.SLOWDOWN_ENV, None)
    slowdown, native = run([sys.executable, "-c", code], env=env, timeout=120).stdout.split()
    assert float(slowdown) > 10 and native == "False"


def test_assumed_slowdowns_replace_the_probe_and_bad_ones_are_refused(fresh_probe):
    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, NATIVE)
    assert dtypes.cpu_precision("bfloat16").native and not dtypes.cpu_precision("bfloat16").measured
    assert not dtypes.cpu_precision("float16").native
    dtypes.cpu_precision.cache_clear()
    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, "bfloat16=fast")
    with pytest.raises(ValueError, match="HEARFUSE_CPU_SLOWDOWN"):
        dtypes.cpu_precision("bfloat16")


def test_the_warning_names_what_the_cpu_lacks_and_what_to_expect(fresh_probe):
    fresh_probe.setattr(dtypes, "cpu_flags", lambda: {"avx2", "fma"})
    line = dtypes.CpuPrecision("bfloat16", 84.0, ()).warning()
    assert "\n" not in line
    assert "no AVX512_BF16 or AMX_BF16" in line and "84x" in line and "float32 is faster" in line
    fresh_probe.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    line = dtypes.CpuPrecision("bfloat16", 60.0, ("avx512_bf16",)).warning()
    assert "reports AVX512_BF16 but ONEDNN_MAX_CPU_ISA=AVX2" in line


def test_the_library_warns_once_per_process_and_runs_as_asked(fresh_probe, caplog):
    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, EMULATED)
    with caplog.at_level(logging.WARNING, logger="hearfuse"):
        model = hearfuse.load_model(CREPE_TINY, dtype=torch.bfloat16)
        assert model.autocast_dtype == torch.bfloat16  # goes on as asked
        hearfuse.load_model(CREPE_TINY, dtype=torch.bfloat16)
        hearfuse.load_model(CREPE_TINY, dtype="bfloat16")
    (line,) = _warnings(caplog)
    assert line.startswith("bfloat16 is emulated on this CPU") and "60x" in line
    with caplog.at_level(logging.WARNING, logger="hearfuse"):
        hearfuse.load_model(CREPE_TINY, dtype=torch.float16)  # another precision: its own line
        hearfuse.load_model(CREPE_TINY)  # float32: nothing to say
    assert len(_warnings(caplog)) == 2 and _warnings(caplog)[1].startswith("float16 is emulated")


def test_nothing_is_said_where_the_precision_is_native_or_not_on_the_cpu(fresh_probe, caplog):
    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, NATIVE)
    with caplog.at_level(logging.WARNING, logger="hearfuse"):
        hearfuse.load_model(CREPE_TINY, dtype=torch.bfloat16)
        dtypes.warn_if_emulated(torch.float16, "meta")  # not a CPU: not this check's business
    assert _warnings(caplog) == []


@pytest.mark.parametrize("slowdowns, picked", [(NATIVE, torch.bfloat16), (EMULATED, None)])
def test_auto_picks_bfloat16_only_where_it_is_native(fresh_probe, caplog, slowdowns, picked):
    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, slowdowns)
    with caplog.at_level(logging.WARNING, logger="hearfuse"):
        model = hearfuse.load_model(CREPE_TINY, dtype="auto")
    assert model.autocast_dtype == picked and model.dtype_requested == "auto"
    assert _warnings(caplog) == []  # auto never picks what it would warn about
    assert dtypes.auto_dtype("meta") == "float32"


def _clip(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    sf.write(folder / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return folder


def _hearfuse(*args: str, slowdowns: str | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != dtypes.SLOWDOWN_ENV}
    if slowdowns is not None:
        env[dtypes.SLOWDOWN_ENV] = slowdowns
    return run([str(BIN / "hearfuse"), *args], env=env, cwd=cwd, timeout=300)


def test_the_real_cli_says_it_in_one_line_and_nothing_where_native(tmp_path):
    audio = _clip(tmp_path / "in")
    emulated = _hearfuse("embed", str(audio), "-m", CREPE_TINY, "--dtype", "bfloat16", "--out", "a", "-q",
                         slowdowns=EMULATED, cwd=tmp_path)  # fmt: skip
    assert emulated.returncode == 0, emulated.stderr
    lines = [line for line in emulated.stderr.splitlines() if "emulated" in line]
    assert lines == [line for line in emulated.stderr.splitlines() if line.strip()]  # nothing else was said
    (line,) = lines
    assert line.startswith("hearfuse: bfloat16 is emulated on this CPU") and "going on in bfloat16" in line
    record = json.loads((tmp_path / "a" / "manifest.jsonl").read_text().splitlines()[-1])
    assert record["dtype"] == "bfloat16" and record["dtype_requested"] == "bfloat16" and record["status"] == "ok"

    native = _hearfuse("embed", str(audio), "-m", CREPE_TINY, "--dtype", "bfloat16", "--out", "b", "-q",
                       slowdowns=NATIVE, cwd=tmp_path)  # fmt: skip
    assert native.returncode == 0 and "emulated" not in native.stderr


@pytest.mark.parametrize("slowdowns, picked", [(NATIVE, "bfloat16"), (EMULATED, "float32")])
def test_embed_dtype_auto_records_its_pick_in_the_manifest(tmp_path, slowdowns, picked):
    audio = _clip(tmp_path / "in")
    result = _hearfuse("embed", str(audio), "-m", CREPE_TINY, "--dtype", "auto", "--out", "o", "-q",
                       slowdowns=slowdowns, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "emulated" not in result.stderr, result.stderr
    record = json.loads((tmp_path / "o" / "manifest.jsonl").read_text().splitlines()[-1])
    assert (record["dtype"], record["dtype_requested"]) == (picked, "auto")


def test_evaluate_dtype_auto_records_its_pick_in_the_results(tmp_path, fresh_probe):
    from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
    from hearfuse.evaluation.protocol import Protocol

    fresh_probe.setenv(dtypes.SLOWDOWN_ENV, NATIVE)
    tasks = tmp_path / "tasks"
    scene_task(tasks, clips=12)
    settings = EvaluationSettings(
        cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", protocol=Protocol(probe="linear"),
        progress=False,
    )  # fmt: skip
    (result,) = evaluate([CREPE_TINY], tasks, settings, dtype="auto")
    assert result["status"] == "ok", result.get("error")
    assert result["dtype_requested"] == "auto" and result["embedding_key"]["dtype"] == "bfloat16"
    assert result["provenance"]["dtype"] == "bfloat16"


def test_from_config_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="dtype must be one of"):
        FusionModel.from_config(hearfuse.hear.resolve_config(CREPE_TINY), dtype="half")
