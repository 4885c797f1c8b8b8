"""A real collection's lengths: `hearfuse embed` on files of mixed durations, against the model alone.

What it measures, on a folder of ``--files`` clips whose durations are drawn uniformly from
``--min-seconds`` to ``--max-seconds`` (synthetic music-like audio, half 16 kHz WAV, half
44.1 kHz FLAC that is decoded and resampled), for ``--preset`` (RANDOM full-size transformers,
:mod:`benchmarks.architectures`; time depends on shapes, not values) under ``--dtype``:

- **model only, mixed**: ``FusionModel.embed_each`` on the batches ``hearfuse embed`` plans
  (length buckets of up to ``--batch-seconds`` of padded audio), audio decoded beforehand;
- **model only, equal lengths**: the same clips in the batches planned before mixed-length
  batching (only clips of identical length together: here nearly every clip alone; cuDNN
  autotuning off, as its docstring advises for all-different lengths);
- **one process**: ``collection.writer.embed_files`` (headers, decoding in threads ahead of the model, the
  model, atomic writes and the manifest in a thread behind it), model already loaded, timestamp
  and scene embeddings written (about 9.5 MB per 15 s file for ``fusion_cat_xwc``); its share of
  "model only, mixed" is the pipeline's efficiency (target on a GPU: at least 80 %).

Run: ``python -m benchmarks.mixed_lengths --device cuda --dtype bfloat16`` (500 files of 1-30 s,
about 2 h of audio; a few minutes on an H200) or on CPU e.g. ``--preset crepe --files 40
--max-seconds 5 --dtype float32``. Writes ``benchmarks/results/mixed_lengths_<device>.{json,md}``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hearfuse.collection.writer import embed_files

from ._env import DTYPES, environment, machine, write_results
from .architectures import random_fusion_model, weights_label
from .embed_pipeline import make_folder, model_only


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fusion_cat_xwc")
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--batch-seconds", type=float, default=160.0, help="padded audio seconds per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--skip-equal", action="store_true", help="skip the equal-length baseline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    durations = np.random.default_rng(0).uniform(args.min_seconds, args.max_seconds, args.files).round(3).tolist()
    model = random_fusion_model(args.preset, dtype=DTYPES[args.dtype]).to(args.device)
    scratch = Path(tempfile.mkdtemp(prefix="mixed_lengths-"))
    try:
        folder = scratch / "in"
        audio_s = make_folder(folder, durations)
        print(f"{args.files} files, {audio_s / 3600:.2f} h of audio", flush=True)
        model_only(model, folder, args.batch_seconds)  # warm-up: kernels, allocator, cuDNN autotuning
        mixed_s, decode_s = model_only(model, folder, args.batch_seconds)
        print(f"model only, mixed: {audio_s / mixed_s:.1f}x", flush=True)
        equal_s = None
        if not args.skip_equal:  # nearly every clip alone, each a new shape: cuDNN autotuning would dominate
            model.cudnn_benchmark = False
            equal_s = model_only(model, folder, args.batch_seconds, mixed_batch_limit=0)[0]
            model.cudnn_benchmark = True
        if equal_s is not None:
            print(f"model only, equal lengths: {audio_s / equal_s:.1f}x", flush=True)
        summary = embed_files(model, [folder], scratch / "out", batch_seconds=args.batch_seconds, progress=False)
        assert not summary.failures and summary.embedded == args.files, summary.line()
        print(f"one process: {audio_s / summary.wall_seconds:.1f}x", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    data = {
        "benchmark": "mixed_lengths",
        "preset": args.preset,
        "weights": weights_label(),
        "files": args.files,
        "seconds_range": [args.min_seconds, args.max_seconds],
        "audio_s": audio_s,
        "batch_seconds": args.batch_seconds,
        "mixed_batch_limit_s": model.mixed_batch_limit / model.sample_rate,
        "model_only_mixed_s": mixed_s,
        "model_only_equal_s": equal_s,
        "one_process_s": summary.wall_seconds,
        "decode_all_s": decode_s,
        "environment": environment(args.threads, args.device, args.dtype),
        "total_runtime_s": time.perf_counter() - started,
    }
    env = data["environment"]
    speed = {
        key: audio_s / data[key] for key in ("model_only_mixed_s", "model_only_equal_s", "one_process_s") if data[key]
    }
    lines = [
        f"`python -m benchmarks.mixed_lengths --preset {args.preset} --device {args.device} --dtype {args.dtype} "
        f"--files {args.files} --min-seconds {args.min_seconds:g} --max-seconds {args.max_seconds:g} "
        f"--batch-seconds {args.batch_seconds:g}` on {machine(env)}, {env['date'][:10]}; {weights_label()}; "
        f"{audio_s / 3600:.2f} h of audio (half 44.1 kHz FLAC).",
        "",
        "| run | real-time factor | seconds | share of model only, mixed |",
        "|---|---:|---:|---:|",
    ]
    names = {
        "model_only_mixed_s": "model only, mixed-length batches",
        "model_only_equal_s": "model only, equal-length batches (before)",
        "one_process_s": "`hearfuse embed` pipeline, one process",
    }
    for key, label in names.items():
        if key in speed:
            share = speed[key] / speed["model_only_mixed_s"]
            lines.append(f"| {label} | {speed[key]:.1f}x | {data[key]:.1f} | {share:.0%} |")
    lines += ["", f"Decoding every file once, serially: {decode_s:.1f} s."]
    write_results(f"mixed_lengths_{torch.device(args.device).type}", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
