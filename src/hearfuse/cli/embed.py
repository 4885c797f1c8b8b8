"""``hearfuse embed``: audio files, folders or globs into an output folder (:mod:`hearfuse.collection`)."""

from __future__ import annotations

import argparse
import sys

from ..dtypes import STORE_DTYPES
from ..errors import UsageError
from .common import (
    DEFAULT_PRESET_NAME,
    checked_device,
    compute_options,
    preset_options,
    printable,
    quiet_option,
    ray_option,
    writable_folder,
)

EPILOG = """examples:
  hearfuse embed recordings/ --model crepe --out embeddings/
  hearfuse embed 'data/**/*.flac' --model fusion_cat_xwc --kind scene --device cuda --dtype bfloat16 --out emb/
  hearfuse embed corpus/ --model fusion_cat_xwc --store-dtype float16 --out emb/   # half the bytes on disk
  hearfuse embed corpus/ --model my_fusion.toml --out emb/ --shard 2/4     # the second of four jobs
  hearfuse embed corpus/ --model crepe --out emb/ --ray                  # a Ray cluster on this machine
  hearfuse embed /shared/corpus --model crepe --out /shared/emb --ray 10.0.0.1:6379

Rerunning the same command resumes: files embedded the same way (config, --dtype, embedding code version,
--store-dtype, kinds) are skipped, the others embedded again with one line per cause saying why, failed ones
retried. Exit status: 0 when every file was embedded (or already was), 1 when any failed, 2 on usage errors."""


def add(commands) -> None:
    embed = commands.add_parser(
        "embed",
        help="embed audio files, folders or globs into one .npz per file plus a manifest",
        description="Embed audio files (every format libsndfile reads), downmixed to mono and resampled with soxr. "
        "Writes OUT/<input tree>/<file>.npz (timestamp_embeddings, timestamps in ms, scene_embedding) "
        "and OUT/manifest.jsonl.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("inputs", nargs="*", metavar="INPUT", help="audio file, folder (searched recursively) or glob")
    embed.add_argument(
        "--model",
        "-m",
        default="",
        help=f"preset name or .toml/.json fusion config (default: {DEFAULT_PRESET_NAME})",
    )
    embed.add_argument("--out", "-o", required=True, help="output directory (created if missing)")
    embed.add_argument(
        "--kind",
        choices=("timestamp", "scene", "both"),
        default="both",
        help="which embeddings to write (default: both)",
    )
    compute_options(
        embed, "torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)", "; outputs are float32"
    )
    embed.add_argument(
        "--store-dtype",
        choices=STORE_DTYPES,
        default="float32",
        help="precision the embeddings are written in: float16 halves the output (timestamps stay float32); "
        "part of what a rerun compares, so changing it embeds again (default: float32)",
    )
    embed.add_argument(
        "--batch-seconds",
        type=float,
        default=60.0,
        help="padded audio seconds per batch (longest clip x clips); clips of different lengths share a "
        "batch where every member allows it (layer-norm front ends, CREPE), else equal lengths only (default: 60)",
    )
    embed.add_argument("--shard", metavar="I/N", help="process only shard I of N (1-based), for parallel jobs")
    embed.add_argument(
        "--reuse-other-code",
        action="store_true",
        help="keep files embedded by another version of the embedding code instead of embedding them again "
        "(recorded in the manifest; by default a new code version embeds again, saying why)",
    )
    embed.add_argument("--normalize", choices=("none", "checkpoint"), help="preset option: waveform normalisation")
    embed.add_argument("--crepe-frames", choices=("paper", "reference"), help="preset option: CREPE framing")
    quiet_option(embed)
    distributed = ray_option(embed)
    distributed.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="model workers (Ray actors), each loading the model once (default: one per GPU of the cluster, "
        "else one per --worker-cpus CPUs)",
    )
    distributed.add_argument(
        "--worker-cpus",
        type=int,
        default=1,
        metavar="C",
        help="CPUs (torch threads) of each CPU model worker (default: 1)",
    )
    embed.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..collection.discovery import parse_shard
    from ..collection.writer import embed_files
    from ..hear import resolve_config

    logging.getLogger("hearfuse").setLevel(logging.INFO)  # why files done before are embedded again

    shard = parse_shard(args.shard) if args.shard is not None else None
    out = writable_folder("--out", args.out)
    if not args.inputs:
        raise UsageError("give at least one INPUT (an audio file, a folder or a glob)")
    kinds = ("timestamp", "scene") if args.kind == "both" else (args.kind,)
    config = resolve_config(args.model, **preset_options(args))
    common = dict(
        kinds=kinds,
        batch_seconds=args.batch_seconds,
        shard=shard,
        store_dtype=args.store_dtype,
        progress=not args.quiet,
        reuse_other_code=args.reuse_other_code,
    )
    if args.ray is not None:
        from ..cluster import cluster_device, connect
        from ..collection.ray_writer import embed_files_on_ray

        with connect(args.ray):
            summary = embed_files_on_ray(
                config,
                args.inputs,
                out,
                device=cluster_device(args.device),
                dtype=args.dtype,
                workers=args.workers,
                worker_cpus=args.worker_cpus,
                **common,
            )
    else:
        from ..model import FusionModel

        model = FusionModel.from_config(config, device=checked_device(args.device), dtype=args.dtype)
        summary = embed_files(model, args.inputs, out, **common)
    for failure in summary.failures:
        print(printable(f"failed: {failure.relative}: {failure.reason}"), file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0
