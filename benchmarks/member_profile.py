"""Where the time goes: each member of a preset timed alone, the fusion step, and the top kernels.

What it measures, for ``--preset`` (default ``fusion_cat_xwc``) on a batch of ``--batch``
clips of ``--seconds`` s under ``--dtype`` autocast, on ``--device``:

- each member alone (:class:`hearfuse.model.Member`: the upstream with its aggregation):
  milliseconds per batch (median of ``--repeats`` after one warm-up), audio seconds per
  second, FLOPs per audio second (``torch.utils.flop_counter``) and achieved TFLOP/s;
- the whole ``timestamp_embeddings`` call at each of ``--batches``, and what is left of it
  beyond the members (alignment, concatenation);
- ``torch.profiler``: the ``--top`` operators by self time (device time on a GPU) in one
  whole call.

The transformers have RANDOM weights (see :mod:`benchmarks.architectures`): time and FLOPs
depend on shapes, not values.

Run: ``python -m benchmarks.member_profile --device cuda --batch 16`` (about 30 s on an H200)
or on CPU with ``--batch 1 --batches 1 --seconds 2``. Writes
``benchmarks/results/member_profile_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from ._env import DTYPES, count_flops, environment, machine, median_ms, synchronize, write_results
from .architectures import random_fusion_model, weights_label
from .signals import synthetic_clip


def row(name: str, ms: float, flops: int | None, audio_s: float) -> dict:
    result = {"part": name, "ms_per_batch": ms, "real_time_factor": audio_s / (ms / 1000)}
    if flops is not None:
        result["gflop_per_audio_s"] = flops / audio_s / 1e9
        result["achieved_tflops"] = flops / (ms / 1000) / 1e12
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fusion_cat_xwc")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
    parser.add_argument("--batch", type=int, default=16, help="clips per batch for the member timings")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32], help="batch sizes for the whole call")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="operators listed from the profiler")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument(
        "--conv-form",
        choices=["auto", "conv", "matmul"],
        help="force every member's convolution form (results get a _conv-<form> suffix); default: automatic",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model = random_fusion_model(args.preset, dtype=DTYPES[args.dtype]).to(device)
    if args.conv_form:
        for member in model.members.values():
            member.upstream.conv_form = args.conv_form
    model.requires_grad_(False)
    audio = torch.cat([synthetic_clip(args.seconds, seed=i) for i in range(max(args.batch, *args.batches))]).to(device)
    batch = audio[: args.batch]
    audio_s = args.batch * args.seconds

    def member_call(member) -> Callable[[], object]:
        def run():
            with model.inference():
                return member(batch)

        return run

    rows = []
    for name, member in model.members.items():
        flops = count_flops(member_call(member), [member], device)
        rows.append(row(name, median_ms(member_call(member), device, args.repeats), flops, audio_s))
        print(f"{name}: {rows[-1]['ms_per_batch']:.1f} ms per batch of {args.batch}", flush=True)
    members_ms = sum(r["ms_per_batch"] for r in rows)

    flops_per_clip = count_flops(lambda: model.timestamp_embeddings(batch), [model], device) / args.batch
    totals = []
    whole_ms = None  # the whole call at the members' batch size, if measured
    for size in args.batches:
        ms = median_ms(lambda size=size: model.timestamp_embeddings(audio[:size]), device, args.repeats)
        totals.append(row(f"whole call, batch {size}", ms, round(flops_per_clip * size), size * args.seconds))
        print(f"whole call, batch {size}: {ms:.1f} ms", flush=True)
        if size == args.batch:
            whole_ms = ms

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        model.timestamp_embeddings(batch)
        synchronize(device)
    sort_key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    operators = profiler.key_averages().table(sort_by=sort_key, row_limit=args.top, max_name_column_width=60)

    data = {
        "benchmark": "member_profile",
        "preset": args.preset,
        "weights": weights_label(),
        "batch": args.batch,
        "seconds": args.seconds,
        "conv_form": args.conv_form or "auto",
        "environment": environment(args.threads, args.device, args.dtype),
        "total_runtime_s": time.perf_counter() - started,
        "members": rows,
        "whole_calls": totals,
        "beyond_members_ms": None if whole_ms is None else whole_ms - members_ms,
        "top_operators": operators,
    }
    env = data["environment"]
    lines = [
        f"`python -m benchmarks.member_profile --device {args.device} --dtype {args.dtype} --batch {args.batch}` "
        f"on {machine(env)}, {env['date'][:10]}; {weights_label()}; {args.preset}, batches of {args.batch} x "
        f"{args.seconds:g} s clips; convolutions: {args.conv_form or 'auto'} "
        "(auto: matrix products on CUDA, cuDNN/oneDNN convolutions elsewhere).",
        "",
        "| part | ms per batch | audio s / s | GFLOP / audio s | achieved TFLOP/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows + totals:
        gflop = f"{r['gflop_per_audio_s']:.1f}" if "gflop_per_audio_s" in r else "–"
        tflops = f"{r['achieved_tflops']:.1f}" if "achieved_tflops" in r else "–"
        lines.append(f"| {r['part']} | {r['ms_per_batch']:.1f} | {r['real_time_factor']:.1f}x | {gflop} | {tflops} |")
    if data["beyond_members_ms"] is not None:
        lines += ["", f"Whole call minus its members: {data['beyond_members_ms']:.1f} ms per batch."]
    lines += ["", f"Top {args.top} operators by self time, one whole call:", "", "```", operators, "```"]
    suffix = f"_conv-{args.conv_form}" if args.conv_form else ""
    write_results(f"member_profile_{device.type}{suffix}", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
