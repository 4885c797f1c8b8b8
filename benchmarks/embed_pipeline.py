"""What the file pipeline costs: `hearfuse embed` in one process and through ``--ray``, against the
model alone on the same batches.

What it measures, for each model (default CREPE tiny, then CREPE full, real weights):

- **model only**: ``FusionModel.embed_each`` on the very batches ``hearfuse embed`` plans
  (``batching.plan_batches``), from audio decoded beforehand: the ceiling;
- **one process**: ``collection.writer.embed_files`` (discovery, headers, decoding + resampling, the model,
  atomic writes, the manifest), model already loaded;
- **Ray**: ``collection.ray_writer.embed_files_on_ray`` on a local cluster of this machine's CPUs, started
  beforehand (its start is reported apart); the model workers load the model inside the run, so
  that is included, as a user meets it;
- the per-item costs a scaling estimate needs: decoding one file, the driver's work per file before
  embedding (stat, header) and after (rename + manifest append with fsync).

The folder: ``--files`` clips of ``--seconds`` s from ``benchmarks.signals``, half 16 kHz WAV, half
44.1 kHz FLAC (decoded and resampled with soxr), in two subfolders. Every output of the three runs
is checked equal.

Run: ``python -m benchmarks.embed_pipeline [--files 48] [--seconds 4] [--threads 2]`` (add
``--device cuda`` on a GPU machine). Writes ``benchmarks/results/embed_pipeline.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from hearfuse.audio import AudioInfo, audio_info, load_audio, resample
from hearfuse.batching import plan_batches
from hearfuse.cluster import connect
from hearfuse.collection.layout import read_manifests
from hearfuse.collection.ray_writer import embed_files_on_ray
from hearfuse.collection.run import prepare_run, wanted_identity
from hearfuse.collection.writer import embed_files, plan_run_batches, write_output
from hearfuse.hear import resolve_config
from hearfuse.model import FusionModel

from ._env import environment, machine, synchronize, write_results
from .signals import synthetic_clip

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"crepe_tiny": str(ROOT / "examples" / "crepe_tiny.toml"), "crepe": "crepe"}


def make_folder(root: Path, durations: list[float]) -> float:
    """The input folder, one clip of each duration (s), written by a thread per core (NumPy,
    soxr and libsndfile release the GIL); returns its seconds of audio."""
    (root / "flac").mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        clip = synthetic_clip(durations[index], seed=index).numpy().reshape(-1).astype(np.float32)
        if index % 2:
            sf.write(root / "flac" / f"clip{index:03d}.flac", resample(clip, 16000, 44100), 44100)
        else:
            sf.write(root / "wav" / f"clip{index:03d}.wav", clip, 16000, subtype="FLOAT")

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write, range(len(durations))))
    return float(sum(durations))


def model_only(
    model: FusionModel, folder: Path, batch_seconds: float, mixed_batch_limit: int | None = None
) -> tuple[float, float]:
    """(seconds of the model on the batches `hearfuse embed` plans, seconds to decode every file once).

    ``mixed_batch_limit``: the model's own by default; 0 plans equal-length batches only."""
    paths = sorted(folder.rglob("*.*"))
    items: list[tuple[Path, AudioInfo]] = [(path, audio_info(path)) for path in paths]
    started = time.perf_counter()
    decoded = {path: torch.from_numpy(load_audio(path, model.sample_rate)) for path in paths}
    decode_s = time.perf_counter() - started
    limit = model.mixed_batch_limit if mixed_batch_limit is None else mixed_batch_limit
    device = next(model.parameters()).device
    total = 0.0
    for batch in plan_batches(items, batch_seconds, mix_up_to_seconds=limit / model.sample_rate):
        clips = [decoded[path].to(device) for path, _ in batch]
        synchronize(device)
        started = time.perf_counter()
        model.embed_each(clips, timestamp=True, scene=True)
        synchronize(device)
        total += time.perf_counter() - started
    return total, decode_s


def driver_costs(config, folder: Path, scratch: Path, batch_seconds: float) -> tuple[float, float]:
    """(driver seconds per file before embedding: scan, stat, header; after: writing a (small) output,
    renaming it into place, and its share of the batch's manifest append with fsync)."""
    out = scratch / "driver"
    started = time.perf_counter()
    wanted = wanted_identity(config, "float32", "float32", ("timestamp", "scene"))
    run, todo = prepare_run(config, [folder], out, wanted, dtype_requested="float32")
    prepare = (time.perf_counter() - started) / len(todo)
    arrays = {"scene_embedding": np.zeros(2048, np.float32)}
    started = time.perf_counter()
    for batch in plan_run_batches(todo, batch_seconds, 0):
        run.settle(batch, [write_output(out / item.output, arrays) for item, _ in batch])
    commit = (time.perf_counter() - started) / len(todo)
    run.close()
    assert len(read_manifests(out)) == len(todo)
    return prepare, commit


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npz"))}


def measure(name: str, folder: Path, audio_s: float, scratch: Path, args) -> dict:
    import ray

    config = resolve_config(MODELS[name])
    model = FusionModel.from_config(config, device=args.device)
    model_s, decode_s = model_only(model, folder, args.batch_seconds)
    single = embed_files(model, [folder], scratch / f"{name}-single", batch_seconds=args.batch_seconds, progress=False)
    ray_out = scratch / f"{name}-ray"
    on_ray = embed_files_on_ray(
        config, [folder], ray_out, device=args.device, batch_seconds=args.batch_seconds, progress=False
    )
    workers = int(ray.cluster_resources().get("GPU", 0)) or int(ray.cluster_resources()["CPU"])
    assert outputs(ray_out) == outputs(scratch / f"{name}-single"), "Ray and one process wrote different outputs"
    prepare, commit = driver_costs(config, folder, scratch / name, args.batch_seconds)
    files = len(list(folder.rglob("*.*")))
    return {
        "model": name,
        "files": files,
        "audio_s": audio_s,
        "model_only_s": model_s,
        "single_process_s": single.wall_seconds,
        "ray_s": on_ray.wall_seconds,
        "ray_workers": workers,
        "decode_per_file_s": decode_s / files,
        "driver_prepare_per_file_s": prepare,
        "driver_commit_per_file_s": commit,
    }


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        f"`hearfuse embed` pipeline, {machine(env)}, {env['date'][:10]}; {result['rows'][0]['files']} files "
        f"of {result['seconds']:g} s (16 kHz WAV + 44.1 kHz FLAC), batch {result['batch_seconds']:g} s; "
        f"Ray cluster start {result['ray_start_s']:.1f} s (not included)",
        "",
        "| model | model only | one process | `--ray` | one process / model only | `--ray` / model only |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        speed = {key: row["audio_s"] / row[key] for key in ("model_only_s", "single_process_s", "ray_s")}
        single_share, ray_share = (speed[key] / speed["model_only_s"] for key in ("single_process_s", "ray_s"))
        lines.append(
            f"| {row['model']} | {speed['model_only_s']:.1f}x ({row['model_only_s']:.1f} s) "
            f"| {speed['single_process_s']:.1f}x ({row['single_process_s']:.1f} s) "
            f"| {speed['ray_s']:.1f}x ({row['ray_s']:.1f} s, {row['ray_workers']} workers) "
            f"| {single_share:.0%} | {ray_share:.0%} |"
        )
    lines += ["", "Per-item costs (for the scaling estimate):", ""]
    for row in result["rows"]:
        lines.append(
            f"- {row['model']}: decode {1000 * row['decode_per_file_s']:.1f} ms/file; driver before embedding "
            f"{1000 * row['driver_prepare_per_file_s']:.2f} ms/file, commit "
            f"{1000 * row['driver_commit_per_file_s']:.2f} ms/file; "
            f"model {1000 * row['model_only_s'] / row['files']:.0f} ms/file"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scratch = Path(tempfile.mkdtemp(prefix="embed_pipeline-"))
    try:
        folder = scratch / "in"
        audio_s = make_folder(folder, [args.seconds] * args.files)
        started = time.perf_counter()
        with connect("local"):
            ray_start = time.perf_counter() - started
            rows = [measure(name, folder, audio_s, scratch, args) for name in args.models]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "environment": environment(args.threads, args.device),
        "seconds": args.seconds,
        "batch_seconds": args.batch_seconds,
        "ray_start_s": ray_start,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    write_results("embed_pipeline", result, markdown(result))


if __name__ == "__main__":
    main()
