"""Writing files so that a reader never sees half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable

#: Suffix of files being written; never an output, and removed when their writer fails.
PARTIAL_SUFFIX = ".partial"


def write_partial(path: str | Path, write: Callable[[BinaryIO], None], tag: str = "") -> Path:
    """Call ``write`` on a new hidden file beside ``path`` and flush it to disk; return its name.

    The name is unique to this call (not only to the process: Ray workers on different machines may
    share a pid), so writers never share a temporary file; ``tag`` lets a run find its own leftovers.
    :func:`os.replace` onto ``path`` commits it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{tag}{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """:func:`write_partial`, then rename it over ``path``: ``path`` is old or new, never half."""
    partial = write_partial(path, write)
    try:
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_atomic(path, lambda handle: handle.write(text.encode()))
