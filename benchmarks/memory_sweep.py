"""Memory sweep: peak memory of one clip's embedding as the clip grows from 10 s to an hour.

What it measures: for each ``--lengths`` (seconds), in a fresh process, the peak memory
of building ``--preset`` (RANDOM full-size transformers, real CREPE weights, see
:mod:`benchmarks.architectures`) and embedding ONE clip of that length with
:meth:`hearfuse.FusionModel.embed` (``--kind scene``, the default, or ``timestamp``). CPU:
the process's peak RSS (``resource.getrusage``), both after building the model and at the
end; GPU: ``torch.cuda.max_memory_allocated``. Also the wall time and the real-time factor.

Why: the paper's models ran out of memory on 10-minute clips. ``hearfuse`` embeds long
clips in windows (default 30 s with 5 s of context each side) and pools scene embeddings
window by window, so what grows with the clip should be only the audio itself (64 KB per
second at 16 kHz float32) and, for timestamp embeddings, the output (3072 floats per 20 ms
frame for ``fusion_cat_xwc``, 2.2 GB per hour; that one cannot stay flat).

Clips longer than a minute repeat a 60 s synthetic clip (:mod:`benchmarks.signals`);
memory and time depend on length, not content.

Run: ``python -m benchmarks.memory_sweep [--lengths 10 60 600 3600] [--dtype bfloat16]``.
Writes ``benchmarks/results/memory_sweep_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from ._env import DTYPES, emit, environment, machine, peak_rss_mib, run_worker, synchronize, write_results
from .architectures import random_fusion_model, weights_label
from .signals import synthetic_clip


def long_clip(seconds: float) -> torch.Tensor:
    """``(1, samples)``: a synthetic clip, repeating its first minute past 60 s."""
    base = synthetic_clip(min(seconds, 60.0), seed=0)
    samples = round(seconds * 16000)
    return base.repeat(1, math.ceil(samples / base.shape[1]))[:, :samples].contiguous()


def measure(seconds: float, args: argparse.Namespace) -> dict:
    """Worker: build the model, embed one clip of ``seconds``, report peak memory."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    model = random_fusion_model(args.preset, dtype=DTYPES[args.dtype]).to(device)
    audio = long_clip(seconds).to(device)
    rss_after_build = peak_rss_mib()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        gpu_after_build = torch.cuda.memory_allocated() / 2**20
    start = time.perf_counter()
    result = model.embed(audio, timestamp=args.kind == "timestamp", scene=args.kind == "scene")
    synchronize(device)
    wall = time.perf_counter() - start
    output = result.timestamp_embeddings if args.kind == "timestamp" else result.scene_embeddings
    return {
        "seconds": seconds,
        "wall_s": wall,
        "real_time_factor": seconds / wall,
        "output_shape": list(output.shape),
        "peak_rss_after_build_mib": rss_after_build,
        "peak_rss_mib": peak_rss_mib(),
        "gpu_after_build_mib": gpu_after_build if device.type == "cuda" else None,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }


def _length(seconds: float) -> str:
    return (
        f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    )


def table(rows: list[dict], gpu: bool) -> str:
    key = "peak_gpu_mib" if gpu else "peak_rss_mib"
    after_build = "gpu_after_build_mib" if gpu else "peak_rss_after_build_mib"
    reference = next((row[key] for row in rows if row["seconds"] == 60), None)
    lines = [
        f"| clip | wall | real-time factor | {'peak GPU memory' if gpu else 'peak RSS'} | after build | vs 1 min |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = f"{row[key] / reference:.3f}" if reference else "–"
        lines.append(
            f"| {_length(row['seconds'])} | {row['wall_s']:.1f} s | {row['real_time_factor']:.2f}x "
            f"| {row[key] / 1024:.2f} GiB | {row[after_build] / 1024:.2f} GiB | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fusion_cat_xwc")
    parser.add_argument("--lengths", type=float, nargs="+", default=[10, 60, 600, 3600], help="clip lengths, s")
    parser.add_argument("--kind", choices=["scene", "timestamp"], default="scene")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        emit(measure(args.worker, args))
        return

    common = ["--preset", args.preset, "--kind", args.kind, "--device", args.device, "--dtype", args.dtype,
              "--threads", str(args.threads)]  # fmt: skip
    started = time.perf_counter()
    rows = []
    for seconds in args.lengths:
        print(f"embedding one {_length(seconds)} clip ...", flush=True)
        rows.append(run_worker("benchmarks.memory_sweep", ["--worker", str(seconds), *common]))
        print(f"  {rows[-1]['wall_s']:.1f} s, peak RSS {rows[-1]['peak_rss_mib'] / 1024:.2f} GiB", flush=True)

    device_type = torch.device(args.device).type
    data = {
        "benchmark": "memory_sweep",
        "preset": args.preset,
        "kind": args.kind,
        "weights": weights_label(),
        "environment": environment(args.threads, args.device, args.dtype),
        "total_runtime_s": time.perf_counter() - started,
        "results": rows,
    }
    env = data["environment"]
    lengths = " ".join(f"{s:g}" for s in args.lengths)
    markdown = (
        f"`python -m benchmarks.memory_sweep --kind {args.kind} --device {args.device} --dtype {args.dtype} "
        f"--lengths {lengths}` on {machine(env)}, {env['date'][:10]}; {weights_label()}; {args.preset} {args.kind} "
        f"embeddings of one clip.\n\n{table(rows, device_type == 'cuda')}\n"
    )
    write_results(f"memory_sweep_{device_type}", data, markdown)


if __name__ == "__main__":
    main()
