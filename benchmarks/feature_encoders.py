"""Speed of the spectrogram-fed families (Whisper's encoder, w2v-BERT 2.0, AST) and their front ends' share.

For each public checkpoint's architecture with RANDOM weights
(:func:`benchmarks.architectures.random_feature_encoders`): the member's features for a batch of
``--batch`` clips of ``--seconds`` s with the mean of all its hidden states (the paper's aggregation),
and the torch front end alone on the same batch; wall time per batch (median of ``--repeats`` after a
warm-up), audio seconds per second, and the front end's share of the whole. Whisper pads every input
to its 30 s window, so its cost per audio second falls as clips approach 30 s.

Run: ``python -m benchmarks.feature_encoders`` (CPU, float32, 2 threads) or, on a GPU machine,
``python -m benchmarks.feature_encoders --device cuda --dtype bfloat16 --batch 16``. Writes
``benchmarks/results/feature_encoders_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse

import torch

from hearfuse.config import MemberConfig
from hearfuse.fusion.aggregation import LayerAggregation
from hearfuse.model import Member

from ._env import DTYPES, environment, median_ms, write_results
from .architectures import random_feature_encoders, weights_label
from .signals import synthetic_clip


def _front_end(upstream, audio: torch.Tensor):
    lengths = torch.full((audio.shape[0],), audio.shape[-1])
    if hasattr(upstream.frontend, "stride"):  # w2v-BERT's takes the clips' lengths (per-clip normalisation)
        return lambda: upstream.frontend(audio, lengths)
    return lambda: upstream.frontend(audio)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--batch", type=int, default=2, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--only", nargs="+", help="these checkpoints only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    audio = torch.cat([synthetic_clip(args.seconds, seed=index) for index in range(args.batch)]).to(device)
    rows = []
    for checkpoint, build in random_feature_encoders().items():
        if args.only and checkpoint not in args.only:
            continue
        upstream = build().to(device)
        if dtype != torch.float32:  # weights cast once, as FusionModel does; the front end stays float32
            upstream.to(dtype)
            upstream.frontend.float()
        member = Member(MemberConfig("m", "-", checkpoint, LayerAggregation("mean")), upstream, None)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
        with torch.inference_mode(), autocast:
            whole = median_ms(lambda member=member: member(audio), device, args.repeats)
            front = median_ms(_front_end(upstream, audio), device, args.repeats)
        audio_s = args.batch * args.seconds
        rows.append(
            {
                "checkpoint": checkpoint,
                "states": upstream.num_states,
                "feature_dim": upstream.feature_dim,
                "ms_per_batch": whole,
                "front_end_ms": front,
                "front_end_share": front / whole,
                "real_time_factor": audio_s / (whole / 1000),
                "ms_per_audio_s": whole / audio_s,
            }
        )
        print(f"{checkpoint}: {rows[-1]['real_time_factor']:.2f}x real time, front end {front / whole:.1%}")
    data = {
        "benchmark": "feature_encoders",
        "weights": weights_label(),
        "task": f"mean of all hidden states, {args.batch} clips of {args.seconds:g} s per batch",
        "environment": environment(args.threads, args.device, args.dtype),
        "results": rows,
    }
    lines = [
        f"{data['task']}; {data['weights']}; {args.device}, {args.dtype}, {data['environment']['date']}\n",
        "| checkpoint (architecture) | states x width | ms per batch | audio s / s | ms per audio s | front end |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['checkpoint']} | {row['states']} x {row['feature_dim']} | {row['ms_per_batch']:.0f} "
            f"| {row['real_time_factor']:.2f}x | {row['ms_per_audio_s']:.1f} | {row['front_end_share']:.1%} |"
        )
    write_results(f"feature_encoders_{device.type}", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
