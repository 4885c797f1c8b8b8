"""Ray, the distributed engine behind ``--ray``: connecting to a cluster, and what work asks of it.

``--ray`` alone uses ``RAY_ADDRESS`` when it is set, otherwise starts a cluster on this machine
(bound to 127.0.0.1, no dashboard) for the length of the command. ``--ray ADDRESS`` joins a
cluster started with ``ray start --head`` (and ``ray start --address`` on the other machines);
every machine needs hearfuse installed and the inputs and outputs on a shared filesystem, since
work travels as paths. Ray (>= 2.59) clusters authenticate: every machine and the driver share one
token; a client without it, or with another, is told so in one line before ``ray.init`` is tried.
Ray is optional (``pip install 'hearfuse[ray]'``) and imported only here, only when asked for.
"""

from __future__ import annotations

import logging
import os
import re
import socket
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
    if _HOST_PORT.match(address):
        check_cluster(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR, **local)
    except ray.exceptions.AuthenticationError:
        raise UsageError(_credentials_problem(address)) from None
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise UsageError(f"--ray {address}: cannot connect to a Ray cluster: {error}") from None
    try:
        yield
    finally:
        ray.shutdown()


_HOST_PORT = re.compile(r"^(?P<host>[\w.\-]+|\[[0-9a-fA-F:.]+\]):(?P<port>\d+)$")

#: What a client needs to join a cluster that authenticates (the recipe in docs/guide/ray.md says the same).
_GIVE_TOKEN = (
    "give this machine the cluster's token: export RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN=<token> or the head's "
    "~/.ray/auth_token copied to ~/.ray/auth_token (`ray get-auth-token` on the head prints it)"
)


def check_cluster(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, in one line, where ``ray.init(address=HOST:PORT)`` would retry for 20 s printing a
    warning a second: nothing listening at the address, or a cluster that refuses this client's token.

    The token is checked by asking the cluster's control store for its ID through Ray's own client,
    which sends the credentials ``ray.init`` would send; its warning on stderr is silenced.
    """
    match = _HOST_PORT.match(address)
    host, port = match["host"].strip("[]"), int(match["port"])
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(
            f"--ray {address}: nothing answers there ({reason}); start the head with `ray start --head --port "
            f"{port}` or give the address it printed"
        ) from None
    ray = import_ray()
    try:
        from ray._raylet import InnerGcsClient
    except ImportError:  # a Ray without this client: ray.init reports the problem, slowly
        return
    if _sends_token() and _token_source() is None:
        raise UsageError(_credentials_problem(address))
    try:
        with _quiet_stderr():
            InnerGcsClient.standalone(address, None, int(timeout_s * 1000))
    except ray.exceptions.AuthenticationError:
        raise UsageError(_credentials_problem(address)) from None
    except Exception:  # anything else is for ray.init to report, in its own words
        return


def _token_source() -> str | None:
    """Where Ray takes this client's token from, in its order, or None when it has none."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return path if os.path.isfile(path) else None
    default = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return default if os.path.isfile(default) else None


def _sends_token() -> bool:
    """Whether this client authenticates with a token (``RAY_AUTH_MODE=token``, as Ray reads it)."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:
        return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    return get_authentication_mode() == AuthenticationMode.TOKEN


def _credentials_problem(address: str) -> str:
    if not _sends_token():
        problem = "the cluster requires a token and this client sends none (RAY_AUTH_MODE is not 'token')"
    elif _token_source() is None:
        problem = "RAY_AUTH_MODE=token but this client has no token (in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray)"
    else:
        problem = f"the cluster refused the token from {_token_source()}"
    return f"--ray {address}: {problem}; {_GIVE_TOKEN}"


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's C++ client logs straight to file descriptor 2; hold it on /dev/null inside the block."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
