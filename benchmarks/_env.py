"""Helpers shared by the benchmark scripts: environment record, peak RSS, FLOP counts, worker subprocesses.

Each measured configuration runs in its own Python process so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark that never goes down)
belongs to that configuration alone.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hearfuse.dtypes import (
    DTYPE_NAMES,
    NATIVE_CPU_FLAGS,
    NATIVE_SLOWDOWN_LIMIT,
    cpu_flags,
    cpu_precision,
    torch_dtype,
)
from hearfuse.upstream.base import Upstream

#: Where results are written; the CPU rehearsal of benchmarks/gpu.sh points it elsewhere (HEARFUSE_BENCH_RESULTS)
#: so that it never overwrites measured figures.
RESULTS = Path(os.environ.get("HEARFUSE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")
_RESULT_PREFIX = "@@RESULT@@ "


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: The CPU flags a result records: the vector width and the native reduced-precision instructions.
_PRECISION_FLAGS = {"avx2", "avx512f", "amx_tile"} | {flag for flags in NATIVE_CPU_FLAGS.values() for flag in flags}

#: Model precisions the benchmarks take by name (``--dtype``).
DTYPES = {name: torch_dtype(name) for name in DTYPE_NAMES}  # hearfuse's one table, as a dict for argparse


def environment(threads: int, device: str = "cpu", dtype: str = "float32") -> dict:
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": device,
        "dtype": dtype,
    }
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    else:  # what decides whether bfloat16 and float16 run natively here, and what torch makes of it
        env["cpu_flags"] = sorted(cpu_flags() & _PRECISION_FLAGS)
        env["onednn_max_cpu_isa"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
        env["matmul_slowdown_vs_float32"] = {name: round(cpu_precision(name).slowdown, 2) for name in NATIVE_CPU_FLAGS}
    return env


def machine(env: dict) -> str:
    """The measuring device in words, for result headers (on a CPU: whether bfloat16 is native there)."""
    if "gpu" in env:
        return env["gpu"]
    slowdown = env.get("matmul_slowdown_vs_float32", {}).get("bfloat16")
    bf16 = "" if slowdown is None else f", bf16 {'native' if slowdown <= NATIVE_SLOWDOWN_LIMIT else 'emulated'}"
    return f"{env['cpu_model']}, {env['torch_threads']} threads{bf16}"


def median_ms(run: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall milliseconds of ``run()`` over ``repeats`` calls, after one warm-up call."""
    run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that wall-clock timers measure it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(run, modules: list[torch.nn.Module], device: torch.device) -> int:
    """FLOPs of ``run()`` (matmuls, convolutions and attention; elementwise ops are not counted).

    Convolutions are counted in their reference form: the matrix-product forms do more arithmetic
    for the same result (:mod:`hearfuse.upstream.conv_matmul`), which is not more of the model's work.
    """
    for module in modules:  # the counter's module tracker hooks autograd, which inference_mode forbids
        module.requires_grad_(False)
    forms = {
        part: part.conv_form
        for module in modules
        for part in module.modules()
        if isinstance(part, Upstream) and hasattr(part, "conv_form")
    }
    extra = {}
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_attention is not None:  # not in torch's FLOP registry: count it like the GPU kernels
        extra[cpu_attention] = _attention_flops
    try:
        for part in forms:
            part.conv_form = "conv"
        with FlopCounterMode(display=False, custom_mapping=extra) as counter:
            run()
        synchronize(device)
    finally:
        for part, form in forms.items():
            part.conv_form = form
    return counter.get_total_flops()


def emit(result: dict) -> None:
    """Worker side: hand a JSON result to the parent on stdout."""
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def run_worker(module: str, args: list[str]) -> dict:
    """Parent side: run ``python -m module --worker ...`` and return the result it emitted."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = proc.stdout.splitlines()
    results = [json.loads(line[len(_RESULT_PREFIX) :]) for line in lines if line.startswith(_RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"worker {module} {args} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
    return results[-1]


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def write_results(stem: str, data: dict, markdown: str) -> None:
    """``results/<stem>.json`` and ``results/<stem>.md``; the markdown is also printed."""
    path = write_json(f"{stem}.json", data)
    path.with_suffix(".md").write_text(markdown)
    print()
    print(markdown)
    print(f"written to {path} and {path.with_suffix('.md')}")
