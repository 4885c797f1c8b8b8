"""Speed of the real models whose weights packages ship (``hearfuse models``: the ``real model`` rows).

For each real model installed here (or ``--only`` these), built exactly as ``--model NAME`` builds it (one
member, the mean of all its hidden states), plus the variants below: wall time of the member's features for a
batch of 1 and a batch of 16 clips of ``--seconds`` s (median of ``--repeats`` after a warm-up), ms per clip
and audio seconds per second. Clips are :func:`benchmarks.signals.synthetic_clip` (harmonic notes and noise):
the networks' cost does not depend on what the audio holds.

Run: ``python -m benchmarks.real_models`` (CPU, float32, 2 threads) or, on a GPU machine,
``python -m benchmarks.real_models --device cuda --dtype bfloat16``. Writes
``benchmarks/results/real_models_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from hearfuse import catalogue
from hearfuse.config import FusionConfig
from hearfuse.model import FusionModel

from ._env import DTYPES, environment, median_ms, write_results
from .signals import synthetic_clip

#: Options of a real model worth timing beside its default: ``(model, label, member options)``.
VARIANTS: list[tuple[str, str, dict]] = [
    ("whisper_tiny_en", "pad_to_30s = false", {"pad_to_30s": False}),
]


def configurations(only: list[str] | None) -> list[tuple[str, FusionConfig]]:
    """``(label, config)`` of every installed real model (and its variants), in the registry's order."""
    chosen = []
    for name, config in catalogue.real_models().items():
        if only and name not in only:
            continue
        if not catalogue.describe(config)["weights_available"]:
            print(f"{name}: weights not installed, skipped")
            continue
        chosen.append((name, config))
        for model, label, options in VARIANTS:
            if model == name:
                (member,) = config.members
                variant = replace(member, options={**member.options, **options})
                chosen.append((f"{name} ({label})", config.with_options(members=(variant,))))
    return chosen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="clips per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--only", nargs="+", help="these real models only (names as `hearfuse models` lists them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clips = torch.cat([synthetic_clip(args.seconds, seed=index) for index in range(max(args.batches))])
    rows = []
    for label, config in configurations(args.only):
        model = FusionModel.from_config(config, device=device, dtype=args.dtype)
        (member,) = model.members.values()
        autocast = torch.autocast(device.type, dtype=model.autocast_dtype, enabled=model.autocast_dtype is not None)
        row = {"model": label, "states": member.upstream.num_states, "feature_dim": member.upstream.feature_dim}
        for batch in args.batches:
            audio = clips[:batch].to(device)
            with torch.inference_mode(), autocast:
                ms = median_ms(lambda audio=audio, member=member: member(audio), device, args.repeats)
            row[f"ms_per_batch_{batch}"] = ms
            row[f"ms_per_clip_{batch}"] = ms / batch
            row[f"real_time_factor_{batch}"] = batch * args.seconds / (ms / 1000)
        rows.append(row)
        speeds = ", ".join(f"batch {b}: {row[f'ms_per_clip_{b}']:.0f} ms per clip" for b in args.batches)
        print(f"{label}: {speeds}", flush=True)
        del model, member
    data = {
        "benchmark": "real_models",
        "task": f"one member, mean of all hidden states; clips of {args.seconds:g} s; batches of {args.batches}",
        "environment": environment(args.threads, args.device, args.dtype),
        "results": rows,
    }
    env = data["environment"]
    machine = env.get("gpu") or f"{env['cpu_model']}, flags {' '.join(env['cpu_flags'])}, {args.threads} threads"
    lines = [
        f"{data['task']}; {machine}; {args.device}, {args.dtype}, {env['date']}\n",
        "| model | states x width | "
        + " | ".join(f"ms per clip (batch {b}) | audio s / s (batch {b})" for b in args.batches)
        + " |",
        "|---|---|" + "---:|---:|" * len(args.batches),
    ]
    for row in rows:
        cells = " | ".join(
            f"{row[f'ms_per_clip_{b}']:,.0f} | {row[f'real_time_factor_{b}']:,.1f}x" for b in args.batches
        )
        lines.append(f"| `{row['model']}` | {row['states']} x {row['feature_dim']} | {cells} |")
    write_results(f"real_models_{device.type}", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
