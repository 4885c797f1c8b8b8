"""Subprocesses that a test ends completely, also when they time out.

``subprocess.run(..., timeout=...)`` kills only the process it started, and ``os.killpg`` only one
process group; a script that runs its steps under ``timeout`` (which moves each step into a process
group of its own) leaves them running, and an orphaned benchmark then slows every later test. Every
process a command starts stays in the session it is started in unless it calls ``setsid`` itself, so
:func:`run` starts the command as a session of its own and, however it ends, kills whatever is left
of that session.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def session_members(session: int) -> list[int]:
    """Every live process (zombies aside) of the session whose leader was ``session``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        state, sid = fields[0], int(fields[3])
        if sid == session and state != "Z":
            members.append(int(entry.name))
    return members


def end_session(session: int, grace: float = 0.0) -> None:
    """SIGTERM (when ``grace`` > 0, waiting that long) then SIGKILL every process of ``session``, until none is
    left (a process may start another while it is being killed)."""
    if grace > 0:
        for pid in session_members(session):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while session_members(session) and time.monotonic() < deadline:
            time.sleep(0.05)
    for _ in range(100):
        left = session_members(session)
        if not left:
            return
        for pid in left:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeError(f"processes of session {session} outlived 100 rounds of SIGKILL: {session_members(session)}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run(command: list[str], *, timeout: float, check: bool = False, **options) -> subprocess.CompletedProcess:
    """:func:`subprocess.run` (``capture_output`` and ``text`` unless told otherwise) as a session of its own: on
    return, on :class:`subprocess.TimeoutExpired` and on any other exception, nothing it started is left running."""
    options.setdefault("capture_output", True)
    options.setdefault("text", True)
    if options.pop("capture_output"):
        options.setdefault("stdout", subprocess.PIPE)
        options.setdefault("stderr", subprocess.PIPE)
    process = subprocess.Popen(command, start_new_session=True, **options)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        end_session(process.pid)
        expired.output, expired.stderr = process.communicate()
        raise
    finally:
        end_session(process.pid)
        if process.poll() is None:
            process.kill()
            process.wait()
    completed = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if check:
        completed.check_returncode()
    return completed
