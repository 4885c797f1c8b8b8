"""``hearfuse export``: an output folder as Parquet files or WebDataset shards."""

from __future__ import annotations

import argparse
import sys

from ..dtypes import STORE_DTYPES
from ..errors import UsageError
from .common import printable, quiet_option, writable_folder

EPILOG = """examples:
  hearfuse export emb/ --to parquet emb-parquet/          # then datasets.load_dataset("parquet", data_files=...)
  hearfuse export emb/ --to webdataset emb-wds/ --shard-size 500MB
  hearfuse export emb/ --to parquet half/ --store-dtype float16 --config crepe

Rerunning the same command resumes: complete shards whose inputs are unchanged are kept. An input whose
embeddings cannot be read is left out and named. Exit status: 0 when every current record was exported,
1 when some could not be read, 2 on usage errors."""


DEPRECATED_DTYPE = (
    "hearfuse export: --dtype is now --store-dtype (the precision the export is written in, as in embed); "
    "--dtype still means that in this release and will mean the compute precision, as in embed, in the next"
)


def add(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write an embed output folder as Parquet files or WebDataset shards",
        description="Write the current embeddings of OUT (a folder written by `hearfuse embed`: the latest record "
        "of each input, embedded by one config) into DEST as Parquet files (one row per input: path, duration, "
        "scene_embedding, timestamp_embeddings as a list of frames, timestamps) or WebDataset tar shards (one "
        "sample per input: .npy arrays and a .json record). Shards are written under temporary names and "
        "renamed when complete; DEST/export.json lists them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("out", metavar="OUT", help="output folder of hearfuse embed")
    export.add_argument("dest", metavar="DEST", help="folder to write the export into (empty, or an earlier export)")
    export.add_argument("--to", required=True, metavar="FORMAT", help="export format: parquet or webdataset")
    export.add_argument(
        "--config",
        metavar="FINGERPRINT|MODEL",
        help="which config's embeddings, when OUT holds several (a fingerprint, its first characters, or a model name)",
    )
    export.add_argument(
        "--store-dtype",
        choices=STORE_DTYPES,
        help="precision the exported embeddings are written in, as embed's --store-dtype (default: as stored)",
    )
    export.add_argument("--dtype", choices=STORE_DTYPES, dest="old_store_dtype", help=argparse.SUPPRESS)
    export.add_argument(
        "--shard-size",
        default="1GB",
        metavar="SIZE",
        help="start a new file or shard after about SIZE of embeddings, e.g. 500MB (default: 1GB)",
    )
    export.add_argument("--shard-files", type=int, metavar="N", help="and after at most N inputs (default: no limit)")
    quiet_option(export)
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..collection.export import export, parse_size
    from ..collection.reader import open_embeddings

    if args.old_store_dtype is not None:
        print(DEPRECATED_DTYPE, file=sys.stderr)
    folder = open_embeddings(args.out, config=args.config, dtype=args.store_dtype or args.old_store_dtype)
    shard_bytes = parse_size(args.shard_size)
    if args.shard_files is not None and args.shard_files < 1:
        raise UsageError(f"--shard-files {args.shard_files}: expected a positive number of files per shard")
    dest = writable_folder("DEST", args.dest)
    summary = export(
        folder, dest, to=args.to, shard_bytes=shard_bytes, shard_files=args.shard_files, progress=not args.quiet
    )
    if folder.failed or folder.stale:
        print(
            f"not exported: {len(folder.failed)} inputs that failed to embed, {folder.stale} records of other configs, "
            "precisions or code versions",
            file=sys.stderr,
        )
    for path, reason in summary.failed.items():
        print(printable(f"failed: {path}: {reason}"), file=sys.stderr)
    print(summary.line())
    return 1 if summary.failed else 0
