"""What the commands share: options defined once (precision, device, Ray, the downstream protocol), folder
checks, and printing file names that are not UTF-8."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..dtypes import DTYPE_CHOICES
from ..errors import UsageError

DEFAULT_PRESET_NAME = "fusion_cat_xwc"  # catalogue.DEFAULT_PRESET, written out so --help needs no torch


DTYPE_HELP = (
    "precision the models run in: auto picks bfloat16 on a GPU or a CPU that runs it natively, float32 "
    "elsewhere, and records the pick; a CPU that emulates the precision asked for is named in one line "
    "(default: float32, the submissions' own)"
)


def compute_options(command: argparse.ArgumentParser, device_help: str, dtype_note: str = "") -> None:
    """``--device`` and ``--dtype`` (the compute precision, wherever ``--dtype`` appears)."""
    command.add_argument("--device", default=None, help=device_help)
    command.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help=DTYPE_HELP + dtype_note)


def quiet_option(command: argparse.ArgumentParser) -> None:
    command.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def checked_device(name: str | None) -> str:
    """``--device``: a torch device this machine has (default: cuda when available, else cpu)."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r}: expected a torch device such as cpu, cuda or cuda:1") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this machine has no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda", "mps") or (device.type == "mps" and not torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: not available here; use cpu or cuda")
    return name


def baseline_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--baseline",
        metavar="MODEL",
        help="in the report, also compare every model with this one (paired differences with 95 %% intervals), "
        "beside the comparison with each task's best",
    )


#: :data:`hearfuse.evaluation.uncertainty.RESAMPLES`, without importing numpy for ``--help``.
RESAMPLES = 1000


def resamples_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--resamples",
        type=int,
        default=RESAMPLES,
        metavar="B",
        help=f"bootstrap resamples of each task's test set (default: {RESAMPLES}; 0: no intervals)",
    )


def checked_resamples(args: argparse.Namespace) -> int:
    if args.resamples < 0:
        raise UsageError(f"--resamples must be 0 (no intervals) or more, got {args.resamples}")
    return args.resamples


def seeds_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--seeds",
        type=int,
        default=1,
        metavar="N",
        help="MLP probe: train the chosen hyperparameters under N seeds (the --seed, then the next ones) and report "
        "the spread of their scores beside the bootstrap's intervals; the reported score stays the --seed one's "
        "(default: 1)",
    )


def checked_seeds(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be 1 or more, got {args.seeds}")
    if args.seeds > 1 and args.probe != "mlp":
        raise UsageError(f"--seeds applies to the mlp probe; the {args.probe} probe does not depend on a seed")
    return args.seeds


def ray_option(command: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = command.add_argument_group(
        "distributed (Ray)", "pip install 'hearfuse[ray]'; see the documentation's 'Beyond one machine: Ray'"
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster: ADDRESS (HOST:PORT of `ray start --head`), else RAY_ADDRESS, else a new "
        "cluster on this machine",
    )
    return group


def settle_ray_address(args: argparse.Namespace) -> None:
    """``--ray in/`` reads the input as an address; anything not shaped like one is an input again."""
    if not getattr(args, "ray", None):
        return
    from ..cluster import looks_like_address

    if looks_like_address(args.ray):
        return
    if args.command != "embed":
        raise UsageError(f"--ray {args.ray!r}: expected a Ray address such as 10.0.0.5:6379, auto or local")
    args.inputs.append(args.ray)
    args.ray = ""


def printable(text: str) -> str:
    """File names that are not valid UTF-8 (kept by Python as surrogates) shown with escapes, not a crash."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def writable_folder(option: str, path: str) -> Path:
    """A folder the run can write into (created if missing), or a one-line usage error saying why not."""
    folder = Path(path).expanduser()
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == folder else f"lies below {parent}, which is a file"
                raise UsageError(f"{option} {path}: {where}; expected a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".hearfuse-write-check-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot write there ({error.strerror or error})") from None
    return folder


def preset_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.normalize:
        options["normalize"] = args.normalize
    if args.crepe_frames:
        options["crepe_frames"] = args.crepe_frames
    return options


def report_failures(results: list[dict]) -> int:
    """Name every failed model x task on stderr; the exit status: 1 when any failed, else 0."""
    failed = [r for r in results if r["status"] == "failed"]
    for result in failed:
        print(f"failed: {result['model']} on {result['task']}: {result['error']}", file=sys.stderr)
    return 1 if failed else 0


def settings_from(args: argparse.Namespace, results_dir: Path, device: str):
    from ..evaluation.evaluate import EvaluationSettings
    from ..evaluation.protocol import Protocol

    return EvaluationSettings(
        cache_dir=writable_folder("--cache", args.cache).resolve() if args.cache else results_dir / "embeddings",
        results_dir=results_dir,
        device=device,
        protocol=Protocol(
            grid_points=args.grid_points,
            seed=args.seed,
            max_epochs=args.max_epochs,
            shuffle_batches=args.shuffle_batches,
            probe=args.probe,
        ),
        batch_seconds=args.batch_seconds,
        progress=not args.quiet,
    )


def evaluation_options(command: argparse.ArgumentParser, *, default_probe: str) -> None:
    """The options ``evaluate`` and ``layers`` share: tasks, where results and embeddings go, device,
    and the downstream protocol (``--probe``: every registered probe, read without importing torch)."""
    from ..evaluation.protocol import PROBES

    command.add_argument("--task", action="append", help="only this task (name or name-version-mode); repeatable")
    command.add_argument("--results", default="results", help="results directory (default: results)")
    command.add_argument("--cache", help="embedding cache directory (default: RESULTS/embeddings)")
    compute_options(command, "device for embedding and training (default: cuda when available)")
    protocol = command.add_argument_group(
        "downstream protocol", "the defaults are the HEAR kit's; any other value is recorded and marked † in reports"
    )
    protocol.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of the grid draw and of training (default: 42, the kit's seed_everything(42))",
    )
    protocol.add_argument(
        "--grid-points",
        type=int,
        default=8,
        help="grid points drawn from the 16-point HEAR grid (default: 8, the kit's)",
    )
    protocol.add_argument(
        "--max-epochs",
        type=int,
        help="cap every MLP grid point's epoch limit (default: none, the grid's 500 or the task's own)",
    )
    protocol.add_argument(
        "--probe",
        choices=tuple(PROBES),
        default=default_probe,
        help="downstream model: "
        + "; ".join(f"{name} ({probe.summary})" for name, probe in PROBES.items())
        + f" (default: {default_probe})",
    )
    protocol.add_argument(
        "--shuffle-batches",
        action="store_true",
        help="shuffle training rows every epoch (the kit reads them in stored order)",
    )
    command.add_argument("--batch-seconds", type=float, default=60.0, help="padded audio seconds per embedding batch")
    quiet_option(command)
