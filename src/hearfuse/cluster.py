"""Ray, the distributed engine behind ``--ray``: connecting to a cluster, and what work asks of it.

``--ray`` alone uses ``RAY_ADDRESS`` when it is set, otherwise starts a cluster on this machine
(bound to 127.0.0.1, no dashboard) for the length of the command. ``--ray ADDRESS`` joins a
cluster started with ``ray start --head`` (and ``ray start --address`` on the other machines);
every machine needs hearfuse installed and the inputs and outputs on a shared filesystem, since
work travels as paths. Ray is optional (``pip install 'hearfuse[ray]'``) and imported only here,
only when asked for.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .errors import UsageError

_ADDRESS = re.compile(r"^(auto|local|(ray://)?[\w.\-\[\]:]+:\d+)$")


def looks_like_address(text: str) -> bool:
    """``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT``."""
    return bool(_ADDRESS.match(text))


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray, which is not installed: pip install 'hearfuse[ray]'") from None
    return ray


@contextmanager
def connect(address: str | None = None) -> Iterator[None]:
    """Be connected to a Ray cluster inside the block: ``address``, else ``RAY_ADDRESS``, else a new
    local one. A connection that already exists (a notebook's, a test's) is used and left open."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local" and "ray" not in sys.modules:
        # A one-machine cluster: Ray then keeps 127.0.0.1 instead of swapping in this machine's
        # network address, so nothing it starts listens beyond this machine. Read at import.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    local = {"include_dashboard": False, "_node_ip_address": "127.0.0.1"} if address == "local" else {}
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, **local)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()


def cluster_device(name: str | None) -> str:
    """``--device`` under ``--ray``: the cluster's machines decide, not this one's. Default: cuda when
    the cluster has GPUs; ``cuda:N`` is ``cuda`` (each worker gets a GPU of its own)."""
    ray = import_ray()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if name is None:
        return "cuda" if gpus else "cpu"
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: with --ray, use cpu or cuda")
    if kind == "cuda" and not gpus:
        raise UsageError(f"--device {name}: the Ray cluster has no GPU; use --device cpu")
    return kind


@dataclass(frozen=True)
class Placement:
    """What one piece of model work asks of the cluster: a GPU each on CUDA, else ``cpus`` cores,
    which are also the threads torch uses there."""

    device: str
    cpus: int = 1

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def options(self) -> dict:
        return {"num_gpus": 1, "num_cpus": 1} if self.on_gpu else {"num_gpus": 0, "num_cpus": self.cpus}

    def workers(self, requested: int | None) -> int:
        """How many model workers: ``requested``, else one per GPU, else as many as the CPUs hold."""
        ray = import_ray()
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        if requested is None:
            requested = max(1, int(resources.get("GPU", 0)) if self.on_gpu else cpus // self.cpus)
        if requested < 1 or self.cpus < 1:
            raise UsageError(f"--workers and --worker-cpus must be at least 1, got {requested} and {self.cpus}")
        if requested * self.options()["num_cpus"] > cpus:
            raise UsageError(
                f"{requested} model worker(s) of {self.options()['num_cpus']} CPU(s) need more than the cluster's "
                f"{cpus} CPUs; use fewer --workers or --worker-cpus"
            )
        return requested


#: CPUs a decoding task reserves: none. Decoding takes milliseconds a file against the model's tenths of
#: seconds or more, so reserving cores for it would only take them from the models; the driver bounds
#: how many run at once (one per batch in flight), which also bounds the worker processes Ray starts
#: for them.
DECODE_CPUS = 0
