"""Throughput: our implementation against a re-creation of the original approach, in one run.

What it measures, for ``fusion_cat_xwc`` HEAR timestamp embeddings of ``--clips`` clips of
``--seconds`` s (synthetic music-like audio, :mod:`benchmarks.signals`):

- **ours**: :class:`hearfuse.FusionModel` with batches of ``--batch`` clips under
  ``--dtype`` autocast (default bfloat16);
- **original**: :mod:`benchmarks.original`, the submission's way (one clip at a time,
  float32 with PyTorch's default settings, all hidden states kept, torchcrepe's Conv2d
  CREPE).

For each: audio seconds per wall second (the real-time factor), model FLOPs per audio
second (counted with ``torch.utils.flop_counter`` on one clip, attention included),
achieved TFLOP/s (their product), and peak memory (process peak RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU). Then the speed ratio ours / original, and how
far ours is from the fp32 path: per-frame cosine similarity of its embeddings to the same
model in float32 (min and mean over frames), plus the cosine to the original's output.

Each side runs in its own process (so its peak memory is its own), with one warm-up batch
first; embeddings stay on the device that computed them, as the HEAR API returns them. The
transformers have RANDOM weights (full-size architectures, the same seeded weights on both
sides, see :mod:`benchmarks.architectures`); time, FLOPs and memory depend on shapes, not
values. Both sides run the same CREPE weights: the published ones where installed. The
float32 reference of the precision check runs without TF32.

Run: ``python -m benchmarks.throughput`` (CPU, 2 threads, 4 clips) or, on a GPU machine,
``python -m benchmarks.throughput --device cuda --clips 64 --batch 16`` (a few minutes on an
H100). Writes ``benchmarks/results/throughput_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ._env import DTYPES, count_flops, emit, environment, machine, peak_rss_mib, run_worker, synchronize, write_results
from .architectures import (
    crepe_size,
    crepe_upstream,
    random_fusion_model,
    random_hubert_xlarge,
    random_wav2vec2_large,
    weights_label,
)
from .original import OriginalFusionCatXWC, torchcrepe_network, torchcrepe_state_dict
from .signals import synthetic_clip

PRESET = "fusion_cat_xwc"


def clips(count: int, seconds: float, device: torch.device) -> torch.Tensor:
    return torch.cat([synthetic_clip(seconds, seed=index) for index in range(count)]).to(device)


@contextlib.contextmanager
def strict_float32():
    """No TF32 in matmuls or cuDNN convolutions (PyTorch allows it in cuDNN by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def frame_cosine(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    cosine = F.cosine_similarity(a.double(), b.double(), dim=-1).flatten()
    return cosine.min().item(), cosine.mean().item()


def measure(side: str, args: argparse.Namespace) -> dict:
    """Worker: build one side, count its FLOPs on one clip, time all clips, record peak memory."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    audio = clips(args.clips, args.seconds, device)
    dtype = DTYPES[args.dtype]
    batch = args.batch
    if side == "original":
        # The same seeded random transformers and the same CREPE weights as random_fusion_model gives ours.
        crepe = torchcrepe_network(crepe_size("full"), torchcrepe_state_dict(crepe_upstream("full").net))
        original = OriginalFusionCatXWC(
            random_hubert_xlarge().model.to(device), random_wav2vec2_large().model.to(device), crepe.to(device)
        )
        embed, modules = original.timestamp_embeddings, [original.hubert, original.wav2vec2, original.crepe]
        batch = 1
    else:
        model = random_fusion_model(PRESET, dtype=dtype).to(device)
        embed, modules = (lambda x: model.timestamp_embeddings(x)[0]), [model]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    flops_per_clip = count_flops(lambda: embed(audio[:1]), modules, device)  # also warms up
    embed(audio[:batch])
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    # Embeddings stay where they were computed, as the HEAR API returns them.
    outputs = [embed(audio[first : first + batch]) for first in range(0, len(audio), batch)]
    synchronize(device)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    result = {
        "side": side,
        "dtype": "float32" if side == "original" else args.dtype,
        "batch": batch,
        "wall_s": wall,
        "audio_s": args.clips * args.seconds,
        "real_time_factor": args.clips * args.seconds / wall,
        "flops_per_audio_s": flops_per_clip / args.seconds,
        "cpu_utilisation": cpu / (wall * args.threads) if device.type == "cpu" else None,
        "loadavg_1min": os.getloadavg()[0],
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    result["achieved_tflops"] = result["flops_per_audio_s"] * result["real_time_factor"] / 1e12
    embeddings = torch.cat(outputs)[: args.compare_clips].cpu()
    torch.save(embeddings, Path(args.scratch) / f"{side}.pt")
    if side == "ours" and args.dtype != "float32":
        # The same members in float32, the precision check: the model's own weights were cast to its
        # dtype once at load, so the reference takes float32 copies of them.
        upstreams = {n: copy.deepcopy(m.upstream).float() for n, m in model.members.items()}
        reference = type(model)(model.config, upstreams).to(device)
        with strict_float32():
            exact = reference.timestamp_embeddings(audio[: args.compare_clips])[0].cpu()
        result["cosine_to_float32_min"], result["cosine_to_float32_mean"] = frame_cosine(embeddings, exact)
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict], device: str) -> str:
    memory = "peak GPU memory" if device.startswith("cuda") else "peak RSS"
    lines = [
        f"| implementation | dtype | batch | audio s / s | GFLOP / audio s | achieved TFLOP/s | {memory} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        peak = row["peak_gpu_mib"] if device.startswith("cuda") else row["peak_rss_mib"]
        lines.append(
            f"| {row['side']} | {row['dtype']} | {row['batch']} | {row['real_time_factor']:.2f}x "
            f"| {row['flops_per_audio_s'] / 1e9:.1f} | {row['achieved_tflops']:.3f} | {peak / 1024:.2f} GiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES, help="autocast precision of ours")
    parser.add_argument("--clips", type=int, default=4, help="clips timed per side")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--batch", type=int, default=4, help="clips per batch for ours")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--compare-clips", type=int, default=2, help="clips used for the cosine checks")
    parser.add_argument("--skip-original", action="store_true", help="measure ours only")
    parser.add_argument("--worker", choices=["ours", "original"], help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.compare_clips = min(args.compare_clips, args.clips)

    if args.worker:
        emit(measure(args.worker, args))
        return

    device_type = torch.device(args.device).type
    scratch = tempfile.mkdtemp(prefix="hearfuse-throughput-")
    common = [
        "--device", args.device, "--dtype", args.dtype, "--clips", str(args.clips), "--seconds", str(args.seconds),
        "--batch", str(args.batch), "--threads", str(args.threads), "--compare-clips", str(args.compare_clips),
        "--scratch", scratch,
    ]  # fmt: skip
    started = time.perf_counter()
    rows = []
    for side in ["ours"] + ([] if args.skip_original else ["original"]):
        print(f"measuring {side} ({args.clips} x {args.seconds:g} s on {args.device}) ...", flush=True)
        rows.append(run_worker("benchmarks.throughput", ["--worker", side, *common]))
        print(f"  {rows[-1]['real_time_factor']:.2f}x real time", flush=True)

    data = {
        "benchmark": "throughput",
        "preset": PRESET,
        "weights": weights_label(),
        "task": f"HEAR timestamp embeddings of {args.clips} clips of {args.seconds:g} s",
        "environment": environment(args.threads, args.device, args.dtype),
        "total_runtime_s": time.perf_counter() - started,
        "results": rows,
    }
    if len(rows) == 2:
        ours, original = (torch.load(Path(scratch) / f"{side}.pt") for side in ("ours", "original"))
        data["speedup_vs_original"] = rows[0]["real_time_factor"] / rows[1]["real_time_factor"]
        data["cosine_ours_to_original_min"], data["cosine_ours_to_original_mean"] = frame_cosine(ours, original)
    shutil.rmtree(scratch)

    env = data["environment"]
    lines = [
        f"`python -m benchmarks.throughput --device {args.device} --dtype {args.dtype} --clips {args.clips} "
        f"--batch {args.batch}` on {machine(env)}, {env['date'][:10]}; {weights_label()}; {PRESET}, "
        f"{args.clips} x {args.seconds:g} s clips.",
        "",
        table(rows, args.device),
        "",
    ]
    if "speedup_vs_original" in data:
        lines.append(f"Speed-up of ours over the original approach: **{data['speedup_vs_original']:.2f}x**.")
    if "cosine_to_float32_min" in rows[0]:
        lines.append(
            f"Per-frame cosine of ours ({args.dtype}) to the same model in float32: "
            f"min {rows[0]['cosine_to_float32_min']:.5f}, mean {rows[0]['cosine_to_float32_mean']:.5f}."
        )
    if "cosine_ours_to_original_min" in data:
        lines.append(
            f"Per-frame cosine of ours to the original approach's output: "
            f"min {data['cosine_ours_to_original_min']:.5f}, mean {data['cosine_ours_to_original_mean']:.5f}."
        )
    write_results(f"throughput_{device_type}", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
