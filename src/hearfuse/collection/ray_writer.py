"""The Ray writer of ``hearfuse embed --ray``: the driver (this process) finds the inputs, plans the
batches a single process would, and alone commits outputs and writes the manifest; decoding runs in
CPU tasks, and each model worker is an actor that loads the model once (see :mod:`hearfuse.cluster`)."""

from __future__ import annotations

import collections
import hashlib
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..audio import load_each
from ..config import FusionConfig
from ..dtypes import dtype_name, resolve_dtype, warn_if_emulated
from ..files import PARTIAL_SUFFIX
from ..model import FusionModel
from .layout import KINDS
from .run import Progress, RunSummary, prepare_run, wanted_identity
from .writer import embed_and_write, plan_run_batches

#: Batches queued at each model worker, so it never waits for the driver; more only holds decoded
#: audio in the object store.
_QUEUED_PER_WORKER = 2


class _EmbedWorker:
    """A Ray actor: builds the model once, embeds batches of decoded clips, writes each output under a
    temporary name, and returns the names for the driver to commit (or why a clip failed)."""

    def __init__(
        self,
        config: FusionConfig,
        device: str,
        dtype: str | None,
        threads: int,
        kinds: tuple[str, ...],
        store_dtype: str,
    ):
        torch.set_num_threads(threads)
        self.model = FusionModel.from_config(config, device=device, dtype=dtype)
        self.kinds, self.store_dtype = kinds, store_dtype

    def mixed_batch_limit(self) -> int:
        return self.model.mixed_batch_limit

    def embed(self, outputs: list[Path], decoded: list[np.ndarray | str], tag: str) -> list[Path | str]:
        """:func:`embed_and_write` of one batch. ``decoded`` is its decoding task's result (Ray resolves
        it before the call; if that task died more often than Ray retries, so does this call)."""
        return embed_and_write(self.model, decoded, self.kinds, outputs, tag, self.store_dtype)


def embed_files_on_ray(
    config: FusionConfig,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    workers: int | None = None,
    worker_cpus: int = 1,
    kinds: Sequence[str] = KINDS,
    batch_seconds: float = 60.0,
    shard: tuple[int, int] | None = None,
    store_dtype: str = "float32",
    progress: bool = True,
    reuse_other_code: bool = False,
) -> RunSummary:
    """:func:`~hearfuse.collection.writer.embed_files` on the connected Ray cluster (see :mod:`hearfuse.cluster`).

    The driver (this process) finds the inputs, plans the same batches as a single process, and is
    the only one to commit outputs and write the manifest. Decoding runs in CPU tasks; each model
    worker is an actor that loads the model once. A worker that dies is restarted and its batch
    retried; a batch that keeps killing its worker is split, and a clip that still does is recorded
    as failed, so the run always ends.
    """
    import ray

    from ..cluster import DECODE_CPUS, Placement

    started = time.perf_counter()
    requested = dtype or "float32"
    dtype = dtype_name(resolve_dtype(requested, device))  # auto is decided here, for every worker alike
    warn_if_emulated(dtype, device)  # said here: what the workers log stays on their machines
    wanted = wanted_identity(config, dtype, store_dtype, kinds)
    run, todo = prepare_run(
        config,
        inputs,
        Path(out_dir).resolve(),
        wanted,
        dtype_requested=requested,
        shard=shard,
        reuse_other_code=reuse_other_code,
    )
    placement = Placement(device, worker_cpus)
    decode = ray.remote(num_cpus=DECODE_CPUS, max_retries=3)(load_each)
    worker_class = ray.remote(max_restarts=-1, max_task_retries=2, **placement.options())(_EmbedWorker)
    count = placement.workers(workers) if todo else 0  # nothing left to do: no model is loaded
    threads = placement.options()["num_cpus"]  # the CPUs each worker holds are the threads it uses
    pool = [worker_class.remote(config, device, dtype, threads, run.kinds, store_dtype) for _ in range(count)]
    try:  # the batches a single process would plan, which needs the model's own limit
        mixed_batch_limit = ray.get(pool[0].mixed_batch_limit.remote()) if pool else 0
    except ray.exceptions.RayError:  # the model cannot load: each batch will record why
        mixed_batch_limit = 0
    waiting = collections.deque(plan_run_batches(todo, batch_seconds, mixed_batch_limit))
    queued = dict.fromkeys(pool, 0)
    in_flight: dict = {}
    tag = _driver_tag(os.getpid())
    bar = Progress(run, len(todo), progress)
    try:
        while waiting or in_flight:
            while waiting and min(queued.values()) < _QUEUED_PER_WORKER:
                worker = min(queued, key=queued.get)
                batch = waiting.popleft()
                decoded = decode.remote([str(item.path) for item, _ in batch], FusionModel.sample_rate)
                outputs = [run.out_dir / item.output for item, _ in batch]
                in_flight[worker.embed.remote(outputs, decoded, tag)] = (worker, batch)
                queued[worker] += 1
            (ready,), _ = ray.wait(list(in_flight), num_returns=1)
            worker, batch = in_flight.pop(ready)
            queued[worker] -= 1
            try:
                results = ray.get(ready)
            except ray.exceptions.RayError as error:  # its worker (or decoding task) died every time it was retried
                if len(batch) > 1:
                    waiting.extendleft([pair] for pair in reversed(batch))
                    continue
                results = [f"the Ray work decoding or embedding it kept failing ({type(error).__name__})"]
            run.settle(batch, results)
            bar.update(len(batch))
    finally:
        bar.close()
        run.close()
        for worker in pool:
            ray.kill(worker)
        _remove_leftovers(run.out_dir, tag)
    run.summary.wall_seconds = time.perf_counter() - started
    return run.summary


def _driver_tag(pid: int) -> str:
    """Names the temporary files written for one driver: its machine and process id."""
    return f"ray{hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]}.{pid}-"


def _remove_leftovers(out_dir: Path, tag: str) -> None:
    """Temporary files of this run's workers that died mid-write, and of drivers on this machine that
    are gone (a killed driver's workers may finish a write after it died; Ray stops them only later).
    Another live driver's files, here or elsewhere, are never touched."""
    host = tag.split(".")[0]
    for leftover in out_dir.rglob(f".*.{host}.*{PARTIAL_SUFFIX}"):
        owner = leftover.name.split(f".{host}.", 1)[1].split("-", 1)[0]
        if f"{host}.{owner}-" == tag or (owner.isdigit() and not _alive(int(owner))):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
