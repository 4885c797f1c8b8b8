"""benchmarks/gpu.sh cannot rot between GPU runs: its CPU rehearsal runs every step, through the same code
paths (bf16 included), on tiny architectures and sizes, with results in a folder of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["member_profile_cpu", "member_profile_cpu_conv-conv", "throughput_cpu", "mixed_lengths_cpu"]
STEPS += ["memory_sweep_cpu", "feature_encoders_cpu"]


def test_every_step_of_the_gpu_script_runs_in_its_rehearsal(tmp_path):
    committed = {path: path.stat().st_mtime_ns for path in (ROOT / "benchmarks" / "results").rglob("*")}
    env = {**os.environ, "GPU_SH_REHEARSAL": "1", "PYTHON": sys.executable, "HEARFUSE_BENCH_RESULTS": str(tmp_path)}
    script = subprocess.Popen(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends the benchmarks it started too
    )
    try:
        output, _ = script.communicate(timeout=1500)
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 0, output[-6000:]
    for step in STEPS:
        assert (tmp_path / f"{step}.json").is_file() and (tmp_path / f"{step}.md").is_file(), step
    throughput = json.loads((tmp_path / "throughput_cpu.json").read_text())
    ours = next(row for row in throughput["results"] if row["side"] == "ours")
    assert ours["dtype"] == "bfloat16" and ours["cosine_to_float32_min"] > 0.99  # the float32 reference works
    assert "TINY" in throughput["weights"]
    assert {path: path.stat().st_mtime_ns for path in (ROOT / "benchmarks" / "results").rglob("*")} == committed
