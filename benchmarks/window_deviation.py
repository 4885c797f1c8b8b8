"""Window deviation: how far long-audio windowing moves the embeddings from a full-context pass.

What it measures: ``hearfuse.fusion.windowing.windowed_aggregate`` embeds a clip longer
than ``window_seconds`` in overlapping windows that keep ``context_seconds`` of audio on
each side of the frames they contribute. With self-attention every frame depends on
the whole input, so the windowed result differs from a full-context pass. This script
runs the full-size wav2vec 2.0 Large architecture on one synthetic clip (default 60 s;
chirps, harmonic notes with vibrato, noise bursts, fixed seed: ``benchmarks.signals``)
once with full context and once per (window, context) setting, all shorter than the clip
so windowing is really used, and compares per frame, for ``LayerAggregation("mean")``
(the paper's fusion) and ``LayerAggregation("last")``:

- cosine similarity per frame (mean and minimum over frames);
- the same after subtracting the full-context mean frame from both ("centred"); raw
  cosines of transformer features are inflated by a large component shared by every
  frame, the centred ones are not;
- relative L2 error ``||windowed - full|| / ||full||`` over the whole clip;
- wall time and peak RSS of each run (each in its own process, so the peak is its own).

Both aggregations come from one model pass per window: the library's ``windowed_aggregate``
takes several aggregations and accumulates each from the same states.

Why: the default window (``hearfuse.config.DEFAULT_WINDOW``) trades memory on long clips
for a deviation from full context; this quantifies that deviation and the memory saved.

CAVEAT, read before using the numbers: the model has RANDOM weights (the checkpoints
cannot be downloaded here). Randomly initialised attention is nearly uniform over the
whole input, so every frame mixes in the entire clip and cutting the context changes it
everywhere; trained speech models attend mostly locally (a few hundred ms to a few
seconds), so these numbers probably OVERSTATE how far windowing moves the trained
checkpoints. They are a pessimistic bound on mechanics, not a measurement of the paper's
models; rerun with real weights before relying on them.

Run: ``python -m benchmarks.window_deviation [--seconds 60] [--settings 10:2 20:2.5 20:5 30:5]``.
Writes ``benchmarks/results/window_deviation.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

from hearfuse.fusion.aggregation import LayerAggregation
from hearfuse.fusion.windowing import Windowing, windowed_aggregate

from ._env import emit, environment, peak_rss_mib, run_worker, write_json
from .architectures import random_wav2vec2_large, weights_label
from .signals import synthetic_clip

AGGREGATIONS = ("mean", "last")
DEFAULT_SETTINGS = ("10:2", "20:2.5", "20:5", "30:5")


def _parse_setting(text: str) -> Windowing:
    window, context = text.split(":")
    return Windowing(float(window), float(context))


def measure(setting: str, seconds: float, threads: int, out_dir: Path) -> dict:
    """Worker: one full-context or windowed pass; saves the features, reports time and peak RSS."""
    torch.set_num_threads(threads)
    upstream = random_wav2vec2_large()
    calls = []
    upstream.model.register_forward_pre_hook(lambda *_: calls.append(1))
    audio = synthetic_clip(seconds, seed=0)
    result: dict = {"setting": setting}
    windowing = None if setting == "full" else _parse_setting(setting)
    rss_before = peak_rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        features = windowed_aggregate(upstream, audio, [LayerAggregation(name) for name in AGGREGATIONS], windowing)
    wall = time.perf_counter() - start
    torch.save(dict(zip(AGGREGATIONS, features)), out_dir / f"{setting.replace(':', '_')}.pt")
    result.update(
        wall_s=wall,
        cpu_utilisation=(time.process_time() - cpu_start) / (wall * threads),
        model_calls=len(calls),
        frames=features[0].shape[1],
        peak_rss_before_run_mib=rss_before,
        peak_rss_mib=peak_rss_mib(),
    )
    return result


def compare(windowed: Tensor, full: Tensor) -> dict:
    """Per-frame agreement of ``(1, T, C)`` features with the full-context reference."""
    w, f = windowed[0].double(), full[0].double()
    cos = torch.nn.functional.cosine_similarity(w, f, dim=-1)
    centre = f.mean(dim=0, keepdim=True)
    centred = torch.nn.functional.cosine_similarity(w - centre, f - centre, dim=-1)
    return {
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
        "centred_cos_mean": float(centred.mean()),
        "centred_cos_min": float(centred.min()),
        "rel_l2": float((w - f).norm() / f.norm()),
        "worst_frame": int(cos.argmin()),
    }


def baseline(full: Tensor) -> dict:
    """Scale of the metrics: agreement between full-context frames 1 s (50 frames) apart."""
    f = full[0].double()
    centre = f.mean(dim=0, keepdim=True)
    a, b = f[:-50], f[50:]
    return {
        "cos_frames_1s_apart": float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()),
        "centred_cos_frames_1s_apart": float(
            torch.nn.functional.cosine_similarity(a - centre, b - centre, dim=-1).mean()
        ),
    }


def _gib(run: dict) -> str:
    peak, before = run["peak_rss_mib"] / 1024, run["peak_rss_before_run_mib"] / 1024
    return f"{peak:.2f} GiB | {peak - before:+.2f} GiB"


def table(data: dict) -> str:
    lines = [
        "| window / context | model calls | aggregation | cos mean | cos min | centred cos mean | centred cos min "
        "| rel. L2 | wall s | CPU util | peak RSS | peak RSS - after build |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    full = data["full_context"]
    for name in AGGREGATIONS:
        lines.append(
            f"| full context ({data['clip_seconds']:g} s) | {full['model_calls']} | {name} | 1 | 1 | 1 | 1 | 0 "
            f"| {full['wall_s']:.0f} | {full['cpu_utilisation']:.2f} | {_gib(full)} |"
        )
    for row in data["windowed"]:
        for name in AGGREGATIONS:
            m = row["metrics"][name]
            lines.append(
                f"| {row['window_seconds']:g} s / {row['context_seconds']:g} s | {row['model_calls']} | {name} "
                f"| {m['cos_mean']:.4f} | {m['cos_min']:.4f} "
                f"| {m['centred_cos_mean']:.4f} | {m['centred_cos_min']:.4f} "
                f"| {m['rel_l2']:.4f} | {row['wall_s']:.0f} | {row['cpu_utilisation']:.2f} | {_gib(row)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="test clip length")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="WINDOW:CONTEXT seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        emit(measure(args.worker, args.seconds, args.threads, Path(args.out_dir)))
        return

    for setting in args.settings:
        if _parse_setting(setting).window_seconds >= args.seconds:
            parser.error(f"window {setting} is not shorter than the {args.seconds:g} s clip (windowing unused)")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="window_deviation_") as tmp:
        common = ["--seconds", str(args.seconds), "--threads", str(args.threads), "--out-dir", tmp]
        print("full context ...", flush=True)
        full_run = run_worker("benchmarks.window_deviation", ["--worker", "full", *common])
        print(f"  {full_run['wall_s']:.0f} s", flush=True)
        full = torch.load(os.path.join(tmp, "full.pt"))
        windowed = []
        for setting in args.settings:
            print(f"window:context {setting} ...", flush=True)
            run = run_worker("benchmarks.window_deviation", ["--worker", setting, *common])
            features = torch.load(os.path.join(tmp, f"{setting.replace(':', '_')}.pt"))
            if run["frames"] != full_run["frames"]:
                raise RuntimeError(f"{setting}: {run['frames']} frames, full context has {full_run['frames']}")
            windowing = _parse_setting(setting)
            run.update(
                window_seconds=windowing.window_seconds,
                context_seconds=windowing.context_seconds,
                metrics={name: compare(features[name], full[name]) for name in AGGREGATIONS},
            )
            print(f"  {run['wall_s']:.0f} s, {run['model_calls']} windows", flush=True)
            windowed.append(run)

    data = {
        "benchmark": "window_deviation",
        "weights": weights_label(),
        "caveat": (
            "Random weights give near-uniform attention over the whole input; trained models attend mostly "
            "locally, so these deviations probably overstate how far windowing moves the real checkpoints."
        ),
        "model": "wav2vec2 Large (lv60 architecture), RANDOM weights",
        "signal": "benchmarks.signals.synthetic_clip(seed=0): harmonic notes with vibrato, chirps, noise bursts",
        "clip_seconds": args.seconds,
        "environment": environment(args.threads),
        "total_runtime_s": time.perf_counter() - started,
        "full_context": full_run,
        "baseline": {name: baseline(full[name]) for name in AGGREGATIONS},
        "windowed": windowed,
    }
    path = write_json("window_deviation.json", data)
    env = data["environment"]
    print()
    print(
        f"Window deviation vs full context, {data['model']}, {args.seconds:g} s synthetic clip; "
        f"{env['cpu_model']}, {args.threads} threads, torch {env['torch']}, {env['date']}"
    )
    print("CAVEAT: random weights -> near-uniform attention; probably overstates the deviation of trained models.")
    print()
    print(table(data))
    print()
    for name, b in data["baseline"].items():
        print(
            f"scale ({name}): full-context frames 1 s apart have cos {b['cos_frames_1s_apart']:.4f}, "
            f"centred cos {b['centred_cos_frames_1s_apart']:.4f}"
        )
    print("CPU util = process CPU s / (wall s x threads); < ~0.9 means the cores were shared and times are inflated.")
    print("peak RSS - after build: growth of the high-water mark during the run (activations; a lower bound).")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
