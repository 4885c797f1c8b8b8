"""Downstream training speed: the full HEAR grid (8 configurations) on CPU or GPU.

What it measures: wall time of ``hearfuse.evaluation.downstream`` training every
configuration of the kit's 8-point draw with early stopping (validation every 3 epochs,
patience 20 checks, at most 500 epochs), exactly as ``hearfuse evaluate`` runs it, on

- a scene task: 10,000 clips x 3072 dims (fusion_cat_xwc's width), 10 classes, 60/20/20 split;
- an event task: frame embeddings (default 200 clips x 100 frames x 3072 dims), 5 labels,
  scored with event_onset_200ms_fms after the median-filter/min-duration grid, as in evaluation.

Embeddings are synthetic (class-dependent means plus noise, seeded), so training neither
stops at once nor runs to the limit; the time depends on shapes and epochs run, not on
where the embeddings came from. Why: on a CPU the downstream grid, not only the embedding,
can dominate an evaluation, and users need to know what it costs.

``--probe linear|knn`` times the fast probes of ``hearfuse evaluate --probe`` on the same data
instead of the MLP grid: the linear probe's whole L2 search (logistic regression solved by L-BFGS
at each decade, then the refinement around the best; "epochs" are solver iterations), or the kNN
probe at each k (scene only).

Run: ``python -m benchmarks.downstream_speed [--task scene|event|both] [--probe mlp|linear|knn] [--device cpu]``.
Writes ``benchmarks/results/downstream_speed.json`` (``downstream_speed-<probe>.json`` for the fast
probes) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hearfuse.evaluation import metrics
from hearfuse.evaluation.downstream import KnnPredictor, train_predictor
from hearfuse.evaluation.events import (
    DEFAULT_POSTPROCESSING_GRID,
    choose_postprocessing,
    decode_events,
    postprocessing_options,
)
from hearfuse.evaluation.linear import LogisticProblem, search
from hearfuse.evaluation.protocol import PROBES, KnnParameters, Protocol

from ._env import environment, write_json


def _scene(rng: np.random.Generator, clips: int, width: int, classes: int):
    centres = rng.normal(size=(classes, width)).astype(np.float32) * 0.15
    labels = rng.integers(0, classes, clips)
    x = centres[labels] + rng.normal(size=(clips, width)).astype(np.float32)
    return x, np.eye(classes, dtype=np.float32)[labels]


def run_scene(args, rng) -> dict:
    x, y = _scene(rng, args.clips, args.width, 10)
    train, valid = slice(0, int(0.6 * len(x))), slice(int(0.6 * len(x)), int(0.8 * len(x)))
    validate = lambda p: (metrics.score("top1_acc", p, y[valid], label_vocabulary=[str(i) for i in range(10)]), None)  # noqa: E731
    return _grid("scene", x[train], y[train], x[valid], y[valid], validate, "top1_acc", "multiclass", args)


def run_event(args, rng) -> dict:
    labels = [f"e{i}" for i in range(5)]
    frames, hop = args.frames, 20.0
    n = args.event_clips
    y = np.zeros((n * frames, 5), np.float32)
    references = {}
    for clip in range(n):
        events = []
        for _ in range(3):
            label = int(rng.integers(0, 5))
            start = int(rng.integers(0, frames - 20))
            length = int(rng.integers(5, 20))
            y[clip * frames + start : clip * frames + start + length, label] = 1
            events.append({"label": labels[label], "start": start * hop, "end": (start + length - 1) * hop})
        references[f"clip{clip}"] = events
    centres = rng.normal(size=(6, args.width)).astype(np.float32) * 0.3
    x = centres[np.where(y.any(1), y.argmax(1) + 1, 0)] + rng.normal(size=(len(y), args.width)).astype(np.float32)
    split = int(0.75 * n) * frames
    valid_refs = {k: v for i, (k, v) in enumerate(references.items()) if i >= int(0.75 * n)}
    timestamps = np.arange(frames) * hop

    options = postprocessing_options(DEFAULT_POSTPROCESSING_GRID)

    def validate(probabilities):
        def score(option):
            predicted = {
                name: decode_events(probabilities[i * frames : (i + 1) * frames], timestamps, labels, option)
                for i, name in enumerate(valid_refs)
            }
            return metrics.score("event_onset_200ms_fms", predicted, valid_refs, label_vocabulary=labels)

        option, value = choose_postprocessing(options, score, "event_onset_200ms_fms")
        return value, option

    return _grid(
        "event", x[:split], y[:split], x[split:], y[split:], validate, "event_onset_200ms_fms", "multilabel", args
    )


def _grid(name, x_train, y_train, x_valid, y_valid, validate, metric, prediction_type, args) -> dict:
    runs = []
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.probe == "linear":
        runs = _linear_search(x_train, y_train, x_valid, validate, metrics.METRICS[metric], prediction_type, args)
    for params in Protocol(probe=args.probe).grid({"task_name": name}) if args.probe != "linear" else []:
        t0 = time.perf_counter()
        if isinstance(params, KnnParameters):
            trained = KnnPredictor.fit(x_train, y_train, params)
            trained.validation_score, _ = validate(trained.predict(x_valid, prediction_type))
        else:
            trained = train_predictor(
                x_train,
                y_train,
                x_valid,
                y_valid,
                params,
                prediction_type=prediction_type,
                validate=validate,
                metric=metrics.METRICS[metric],
                device=args.device,
            )
        runs.append(
            {
                "params": params.to_dict(),
                "seconds": time.perf_counter() - t0,
                "epochs": trained.epochs_run,
                "best_epoch": trained.best_epoch,
                "validation_score": trained.validation_score,
            }
        )
        print(
            f"  {name}: {runs[-1]['seconds']:.1f} s, {trained.epochs_run} epochs, val {trained.validation_score:.3f}",
            flush=True,
        )
    return {
        "task": name,
        "train_rows": len(x_train),
        "valid_rows": len(x_valid),
        "width": x_train.shape[1],
        "grid_seconds": time.perf_counter() - started,
        "cpu_utilisation": (time.process_time() - cpu_started) / (time.perf_counter() - started) / args.threads,
        "runs": runs,
    }


def _linear_search(x_train, y_train, x_valid, validate, metric, prediction_type, args) -> list[dict]:
    """The linear probe's search as ``hearfuse evaluate`` runs it, each candidate timed."""
    started = time.perf_counter()
    problem = LogisticProblem(x_train, y_train, prediction_type, args.device)
    print(f"  moments and rows: {time.perf_counter() - started:.1f} s", flush=True)
    seconds, last = {}, [time.perf_counter()]

    def fitted(predictor) -> None:
        now = time.perf_counter()
        seconds[predictor.params.l2], last[0] = now - last[0], now
        print(f"  l2 {predictor.params.l2:.3g}: {seconds[predictor.params.l2]:.1f} s, {predictor.iterations} it")

    candidates = search(problem, lambda p: validate(p.predict(x_valid, prediction_type)), metric.rank, fitted)
    return [
        {
            "params": c.params.to_dict(),
            "seconds": seconds[c.params.l2],
            "epochs": c.iterations,
            "best_epoch": c.iterations,
            "converged": c.converged,
            "validation_score": c.validation_score,
        }
        for c in candidates
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("scene", "event", "both"), default="both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--event-clips", type=int, default=200)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--width", type=int, default=3072)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe", choices=PROBES, default="mlp")
    args = parser.parse_args()
    if args.probe == "knn" and args.task != "scene":
        parser.error("the knn probe scores scene tasks only: use --task scene")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    if args.task in ("scene", "both"):
        results.append(run_scene(args, rng))
    if args.task in ("event", "both"):
        results.append(run_event(args, rng))
    env = environment(args.threads)
    env["device"] = args.device
    name = "downstream_speed.json" if args.probe == "mlp" else f"downstream_speed-{args.probe}.json"
    write_json(name, {"benchmark": "downstream_speed", "probe": args.probe, "environment": env, "results": results})
    print(f"\n| task | train rows x dims | {args.probe} probe, every candidate | epochs per candidate | CPU util |")
    print("|---|---|---:|---|---:|")
    for r in results:
        epochs = [run["epochs"] for run in r["runs"]]
        print(
            f"| {r['task']} | {r['train_rows']} x {r['width']} | {r['grid_seconds'] / 60:.1f} min | "
            f"{min(epochs)}-{max(epochs)} | {r['cpu_utilisation']:.2f} |"
        )


if __name__ == "__main__":
    main()
