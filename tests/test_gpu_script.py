"""benchmarks/gpu.sh cannot rot between GPU runs: its CPU rehearsal runs every step, through the same code
paths (bf16 included), on tiny architectures and sizes, with results in a folder of its own. Whatever it
started ends with the test, also when the test gives up on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .processes import end_session, run, session_members

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["member_profile_cpu", "member_profile_cpu_conv-conv", "throughput_cpu", "mixed_lengths_cpu"]
STEPS += ["memory_sweep_cpu", "feature_encoders_cpu"]

#: The rehearsal takes about 2 minutes on 2 cores whether the CPU has native bfloat16 or emulates it
#: (docs/getting-started.md); this limit leaves room for cores shared with other work.
REHEARSAL_LIMIT_S = 900


def test_every_step_of_the_gpu_script_runs_in_its_rehearsal(tmp_path):
    committed = {path: path.stat().st_mtime_ns for path in (ROOT / "benchmarks" / "results").rglob("*")}
    env = {**os.environ, "GPU_SH_REHEARSAL": "1", "PYTHON": sys.executable, "HEARFUSE_BENCH_RESULTS": str(tmp_path)}
    result = run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, timeout=REHEARSAL_LIMIT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for step in STEPS:
        assert (tmp_path / f"{step}.json").is_file() and (tmp_path / f"{step}.md").is_file(), step
    throughput = json.loads((tmp_path / "throughput_cpu.json").read_text())
    ours = next(row for row in throughput["results"] if row["side"] == "ours")
    assert ours["dtype"] == "bfloat16" and ours["cosine_to_float32_min"] > 0.99  # the float32 reference works
    assert "TINY" in throughput["weights"] and "CREPE tiny" in throughput["weights"]
    environment = throughput["environment"]  # which kind of CPU compared bfloat16 with float32
    assert {"bfloat16", "float16"} <= set(environment["matmul_slowdown_vs_float32"])
    assert "cpu_flags" in environment
    assert {path: path.stat().st_mtime_ns for path in (ROOT / "benchmarks" / "results").rglob("*")} == committed


@pytest.fixture
def hanging_python(tmp_path):
    """A stand-in for python that starts a grandchild and hangs, as a stuck benchmark would; its file of
    pids lists both."""
    pids = tmp_path / "pids"
    fake = tmp_path / "python"
    fake.write_text(f"#!/usr/bin/env bash\nsleep 600 &\necho $! >> {pids}\necho $$ >> {pids}\nsleep 600\n")
    fake.chmod(0o755)
    return fake, pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _started(pids: Path, count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pids.is_file() and len(found := pids.read_text().split()) >= count:
            return [int(pid) for pid in found]
        time.sleep(0.05)
    raise AssertionError("the stand-in step never started")


def test_a_test_that_gives_up_on_the_script_ends_every_step_it_started(hanging_python, tmp_path):
    fake, pids = hanging_python
    env = {**os.environ, "GPU_SH_REHEARSAL": "1", "PYTHON": str(fake), "HEARFUSE_BENCH_RESULTS": str(tmp_path)}
    with pytest.raises(subprocess.TimeoutExpired):
        run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, timeout=3)
    started = _started(pids, 2)
    assert not [pid for pid in started if _alive(pid)]  # the step (in timeout's own group) and its child


def test_a_signal_to_the_script_ends_the_running_step(hanging_python, tmp_path):
    """Ctrl-C or a caller's SIGTERM reaches the script, not the group ``timeout`` made for the step."""
    fake, pids = hanging_python
    env = {**os.environ, "GPU_SH_REHEARSAL": "1", "PYTHON": str(fake), "HEARFUSE_BENCH_RESULTS": str(tmp_path)}
    script = subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")], env=env, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        step, grandchild = _started(pids, 2)[::-1]
        assert os.getpgid(step) != os.getpgid(script.pid)  # why killpg on the script's group is not enough
        os.kill(script.pid, signal.SIGTERM)
        assert script.wait(timeout=30) == 130
        deadline = time.monotonic() + 10
        while _alive(step) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(step)
    finally:
        end_session(script.pid)
    assert not session_members(script.pid) and not _alive(grandchild)
