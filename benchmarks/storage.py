"""What embeddings cost on disk, what float16 storage does to a probe score, and export throughput.

``table``: bytes per audio hour of every preset's ``hearfuse embed`` output at each store dtype, for
10-s files: frames per hour (the preset's hop) x (timestamp width x bytes + 4 bytes of timestamp),
plus per file the scene embedding and the ``.npz`` container's own bytes. The container overhead and
the formula are checked against real ``.npz`` files written by :func:`hearfuse.collection.writer.write_output`
from the CREPE presets' real embeddings of a 10-s clip.

``probe``: every task of an offline suite scored with the same probe on the model's cached
embeddings as stored in float32 and rounded through float16 (what ``--store-dtype float16`` keeps);
the same candidates, seeds and splits, so any difference is the rounding's.

``export``: embeds ``--files`` clips of ``--seconds`` with ``--model`` (kept in ``--work`` if given,
so that a rerun embeds nothing), then times ``hearfuse export`` to Parquet and to WebDataset
(files/s, MB/s of shards written; the embedding is not timed).

Run: ``python -m benchmarks.storage table|probe|export [options]``; writes
``benchmarks/results/storage_<part>.json`` and ``.md`` and prints the markdown.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

import hearfuse
from hearfuse import catalogue
from hearfuse.collection.export import export
from hearfuse.collection.reader import open_embeddings
from hearfuse.collection.writer import embed_files, write_output
from hearfuse.evaluation.evaluate import EvaluationSettings, embed_task, score_task
from hearfuse.evaluation.formatting import metric_scale
from hearfuse.evaluation.protocol import Protocol
from hearfuse.evaluation.splits import from_cache
from hearfuse.evaluation.tasks import load_task, select_tasks

from ._env import environment, machine, write_results

FILE_SECONDS = 10.0
BYTES = {"float32": 4, "float16": 2}


def _clip(seconds: float, seed: int = 0) -> np.ndarray:
    """A tone with noise: real embeddings need real-looking audio, not zeros."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * (220 + 20 * seed) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _npz_bytes(arrays: dict[str, np.ndarray], store_dtype: str, folder: Path) -> int:
    partial = write_output(folder / "clip.npz", arrays, store_dtype=store_dtype)
    size = partial.stat().st_size
    partial.unlink()
    return size


def table() -> tuple[dict, str]:
    with tempfile.TemporaryDirectory() as scratch:
        checks = []
        for name in ("crepe", "crepe_tiny"):
            model = hearfuse.load_model("examples/crepe_tiny.toml" if name == "crepe_tiny" else name)
            result = model.embed(torch.from_numpy(_clip(FILE_SECONDS))[None])
            arrays = {
                "timestamp_embeddings": result.timestamp_embeddings[0].numpy(),
                "timestamps": result.timestamps.numpy(),
                "scene_embedding": result.scene_embeddings[0].numpy(),
            }
            for dtype in BYTES:
                payload = sum(
                    array.size * (4 if key == "timestamps" else BYTES[dtype]) for key, array in arrays.items()
                )
                checks.append(
                    {"model": name, "dtype": dtype, "payload": payload, "npz": _npz_bytes(arrays, dtype, Path(scratch))}
                )
    overhead = max(check["npz"] - check["payload"] for check in checks)
    files_per_hour = 3600 / FILE_SECONDS
    rows = []
    for preset in catalogue.names():
        described = catalogue.describe(catalogue.get(preset))
        frames_per_hour = 3600 * 1000 / described["hop_ms"]
        row = {"preset": preset, "hop_ms": described["hop_ms"], "dims": [described["timestamp_embedding_size"]]}
        row["dims"].append(described["scene_embedding_size"])
        for dtype, size in BYTES.items():
            frames = frames_per_hour * (described["timestamp_embedding_size"] * size + 4)
            scenes = files_per_hour * (described["scene_embedding_size"] * size + overhead)
            row[dtype] = frames + scenes
        rows.append(row)
    data = {"env": environment(torch.get_num_threads()), "file_seconds": FILE_SECONDS, "npz_overhead": overhead}
    data |= {"checks": checks, "presets": rows}
    lines = [
        f"Bytes per audio hour of `hearfuse embed` output ({FILE_SECONDS:g}-s files; both kinds), by store dtype",
        "",
        "| preset | hop | timestamp / scene dim | float32 | float16 |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['preset']}` | {row['hop_ms']:g} ms | {row['dims'][0]} / {row['dims'][1]} | "
            f"{row['float32'] / 1e9:.2f} GB | {row['float16'] / 1e9:.2f} GB |"
        )
    lines += ["", f"`.npz` container overhead per file: {overhead} bytes (measured):", ""]
    lines += [f"- {c['model']}, {c['dtype']}: arrays {c['payload']} bytes, `.npz` {c['npz']} bytes" for c in checks]
    return data, "\n".join(lines) + "\n"


def probe(tasks: Path, model_ref: str, probe_name: str, results: Path) -> tuple[dict, str]:
    config = (
        hearfuse.FusionConfig.load(model_ref) if model_ref.endswith((".toml", ".json")) else catalogue.get(model_ref)
    )
    model = hearfuse.FusionModel.from_config(config)
    settings = EvaluationSettings(
        cache_dir=results / "embeddings", results_dir=results, protocol=Protocol(probe=probe_name), progress=False
    )
    rows = []
    for path in select_tasks(tasks):
        task = load_task(path)
        embedded = embed_task(model, task, settings)
        scores = {}
        rounding = 0.0  # the largest relative change float16 makes to an embedding value
        for dtype in BYTES:
            data = {}
            for split, (embeddings,) in embedded.items():
                split_data = from_cache(task, split, embeddings)
                if dtype == "float16":
                    stored = np.asarray(split_data.x)
                    rounded = stored.astype(np.float16).astype(np.float32)
                    changed = np.abs(rounded - stored) / np.maximum(np.abs(stored), 1e-6)
                    rounding = max(rounding, float(changed.max()))
                    split_data = dataclasses.replace(split_data, x=rounded)
                data[split] = split_data
            started = time.perf_counter()
            result = score_task(task, data, settings)
            factor, _ = metric_scale(result["metric"])
            scores[dtype] = {
                "score": result["test"][result["metric"]]["mean"] * factor,
                "validation": result["validation_score"],
                "monitor": result["monitor"],
                "selected": result["selected_hyperparameters"],
                "seconds": time.perf_counter() - started,
            }
            print(f"{task.name} {dtype}: {scores[dtype]['score']:.2f}", flush=True)
        rows.append({"task": task.name, "metric": task.primary_metric, "max_relative_rounding": rounding, **scores})
    env = environment(torch.get_num_threads())
    data = {"env": env, "model": config.name, "probe": probe_name, "tasks": rows}
    lines = [
        f"Float16 storage against float32: `{config.name}`, `--probe {probe_name}`, {machine(env)}, {env['date'][:10]}",
        "",
        "| task | metric | float32 | float16 | difference | validation (monitor) float32 / float16 | "
        "max relative rounding |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        full, half = row["float32"], row["float16"]
        lines.append(
            f"| {row['task']} | {row['metric']} | {full['score']:.2f} | {half['score']:.2f} | "
            f"{half['score'] - full['score']:+.2f} | {full['validation']:.6g} / {half['validation']:.6g} "
            f"({full['monitor']}) | {row['max_relative_rounding']:.1e} |"
        )
    return data, "\n".join(lines) + "\n"


def export_speed(model_ref: str, files: int, seconds: float, work: Path | None) -> tuple[dict, str]:
    """``work``: keep the clips and their embeddings there (a rerun embeds nothing and times only the
    exports, which go to a fresh temporary folder each time)."""
    with tempfile.TemporaryDirectory() as scratch:
        root = work or Path(scratch)
        (root / "in").mkdir(parents=True, exist_ok=True)
        for index in range(files):
            clip = root / "in" / f"clip{index:05d}.wav"
            if not clip.is_file():
                sf.write(clip, _clip(seconds, index), 16000)
        embed_files(hearfuse.load_model(model_ref), [root / "in"], root / "out", progress=False)
        folder = open_embeddings(root / "out")
        source_bytes = sum(record.file.stat().st_size for record in folder)
        rows = []
        for to in ("parquet", "webdataset"):
            summary = export(folder, Path(scratch) / to, to=to, progress=False)
            rows.append({"to": to, **dataclasses.asdict(summary)})
    env = environment(torch.get_num_threads())
    data = {"env": env, "model": model_ref, "files": files, "seconds": seconds, "npz_bytes": source_bytes}
    data["exports"] = rows
    lines = [
        f"`hearfuse export` of {files} files x {seconds:g} s of `{model_ref}` embeddings "
        f"({source_bytes / 1e6:.0f} MB of `.npz`), {machine(env)}, {env['date'][:10]}",
        "",
        "| to | shards | seconds | files/s | MB/s written |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['to']} | {row['shards']} | {row['seconds']:.2f} | {row['files'] / row['seconds']:.0f} | "
            f"{row['bytes'] / 1e6 / row['seconds']:.0f} |"
        )
    return data, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("table", "probe", "export"))
    parser.add_argument("--tasks", type=Path, default=Path("demo/tasks"), help="probe: an offline suite")
    parser.add_argument("--model", default="examples/crepe_tiny.toml", help="probe/export: preset or config")
    parser.add_argument("--probe", default="linear", choices=("linear", "mlp", "knn"))
    parser.add_argument("--results", type=Path, default=Path("results"), help="probe: results (embedding cache)")
    parser.add_argument("--files", type=int, default=200, help="export: clips to embed and export")
    parser.add_argument("--seconds", type=float, default=10.0, help="export: seconds per clip")
    parser.add_argument("--work", type=Path, help="export: keep clips and embeddings here (reruns embed nothing)")
    args = parser.parse_args()
    if args.part == "table":
        data, markdown = table()
    elif args.part == "probe":
        data, markdown = probe(args.tasks, args.model, args.probe, args.results)
    else:
        data, markdown = export_speed(args.model, args.files, args.seconds, args.work)
    write_results(f"storage_{args.part}", data, markdown)


if __name__ == "__main__":
    main()
