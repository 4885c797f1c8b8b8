"""Core speed: how long the paper's proposed system takes per clip on a CPU, and what it costs in memory.

What it measures: wall-clock seconds to compute HEAR timestamp embeddings
(``hearfuse.get_timestamp_embeddings``) of ONE clip (default 10 s, 16 kHz) with
``fusion_cat_xwc`` (HuBERT xLarge + wav2vec 2.0 Large, each averaging all hidden states,
plus CREPE full at a 50 ms hop, interleaved), and with each of its members alone
(the single-member presets ``fusion_wav2vec2_large``, ``fusion_hubert_xlarge`` and
``crepe``, which are exactly those members). CPU, float32, ``torch.set_num_threads``
(default 2), one warm-up call, then the median of ``--repeats`` timed calls. Reported:
seconds per clip, real-time factor (audio seconds / wall seconds; > 1 is faster than real
time), the process's CPU utilisation (CPU seconds / (wall seconds x threads); well
below 1 means other processes were competing for the cores and the times are inflated),
and peak RSS of the process (``resource.getrusage``), both after building the model
(weights) and after the runs (weights + activations). Each configuration runs in its own
process so its peak RSS is its own.

Why: the system is three large models run side by side; users need to know whether it is
practical on a CPU (HEAR datasets hold hours of audio) and how the cost splits among the
members, e.g. whether the 1B-parameter HuBERT xLarge dominates.

The transformer members have RANDOM weights (full-size architectures built from their
configs, see ``benchmarks.architectures``: the checkpoints cannot be downloaded here);
run time and memory depend on shapes, not values, so the numbers stand for the real
checkpoints. CREPE uses its real published weights.

Run: ``python -m benchmarks.core_speed [--repeats 3] [--seconds 10] [--threads 2]``.
Writes ``benchmarks/results/core_speed.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from ._env import emit, environment, peak_rss_mib, run_worker, write_json
from .architectures import random_fusion_model, weights_label
from .signals import synthetic_clip

#: (preset, description) in table order: the fused system, then its members alone.
CONFIGS = [
    ("fusion_cat_xwc", "fusion_cat_xwc (all three members, fused)"),
    ("fusion_wav2vec2_large", "member: wav2vec2 Large, mean of 25 states"),
    ("fusion_hubert_xlarge", "member: HuBERT xLarge, mean of 49 states"),
    ("crepe", "member: CREPE full, 50 ms hop"),
]


def measure(preset: str, seconds: float, repeats: int, threads: int) -> dict:
    """Worker: build one preset (random transformers), time timestamp embeddings of one clip."""
    import hearfuse

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = random_fusion_model(preset)
    build_s = time.perf_counter() - start
    rss_after_build = peak_rss_mib()
    params = sum(p.numel() for p in model.parameters())
    audio = synthetic_clip(seconds, seed=0)

    def once() -> tuple[float, float, tuple[int, ...]]:
        start, cpu_start = time.perf_counter(), time.process_time()
        embeddings, _ = hearfuse.get_timestamp_embeddings(audio, model)
        return time.perf_counter() - start, time.process_time() - cpu_start, tuple(embeddings.shape)

    load_before = os.getloadavg()
    warmup_s, _, shape = once()
    runs = [once() for _ in range(repeats)]
    times, cpu_times = [r[0] for r in runs], [r[1] for r in runs]
    median = statistics.median(times)
    return {
        "preset": preset,
        "parameters": params,
        "build_s": build_s,
        "warmup_s": warmup_s,
        "times_s": times,
        "median_s": median,
        "min_s": min(times),
        # CPU seconds of this process per call / (wall seconds x threads): near 1 when the
        # cores were ours; well below 1 means other processes competed for them.
        "cpu_utilisation": statistics.median(c / (t * threads) for c, t in zip(cpu_times, times)),
        "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
        "real_time_factor": seconds / median,
        "embedding_shape": list(shape),
        "peak_rss_after_build_mib": rss_after_build,
        "peak_rss_mib": peak_rss_mib(),
    }


def table(results: list[dict], seconds: float) -> str:
    lines = [
        f"| configuration ({seconds:g} s clip, CPU fp32) | params | s / clip (median) | real-time factor "
        "| peak RSS after build | peak RSS after runs | CPU util |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        lines.append(
            f"| {row['description']} | {row['parameters'] / 1e6:.0f} M | {row['median_s']:.2f} "
            f"| {row['real_time_factor']:.2f}x | {row['peak_rss_after_build_mib'] / 1024:.2f} GiB "
            f"| {row['peak_rss_mib'] / 1024:.2f} GiB | {row['cpu_utilisation']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the warm-up (median reported)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--only", nargs="*", help="run only these presets")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        emit(measure(args.worker, args.seconds, args.repeats, args.threads))
        return

    common = ["--repeats", str(args.repeats), "--seconds", str(args.seconds), "--threads", str(args.threads)]
    results = []
    started = time.perf_counter()
    for preset, description in CONFIGS:
        if args.only and preset not in args.only:
            continue
        print(f"measuring {preset} ...", flush=True)
        row = run_worker("benchmarks.core_speed", ["--worker", preset, *common])
        row["description"] = description
        print(f"  median {row['median_s']:.2f} s (times {', '.join(f'{t:.2f}' for t in row['times_s'])})", flush=True)
        results.append(row)

    data = {
        "benchmark": "core_speed",
        "weights": weights_label(),
        "task": "HEAR timestamp embeddings of one clip (batch of 1)",
        "clip_seconds": args.seconds,
        "repeats": args.repeats,
        "warmup_calls": 1,
        "environment": environment(args.threads),
        "total_runtime_s": time.perf_counter() - started,
        "results": results,
    }
    path = write_json("core_speed.json", data)
    env = data["environment"]
    print()
    print(
        f"Core speed ({weights_label()}); {env['cpu_model']}, {args.threads} torch threads, "
        f"torch {env['torch']}, {env['date']}; median of {args.repeats} after 1 warm-up"
    )
    print()
    print(table(results, args.seconds))
    print("\nCPU util = process CPU s / (wall s x threads); < ~0.9 means the cores were shared and times are inflated.")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
