"""What a cached embedding or a stored result was computed from, and why a stored one no longer holds.

A stored number is reused only when everything that could change it is the same: the config's
numeric content (:meth:`~hearfuse.config.FusionConfig.fingerprint`: not its name, not
performance-only options), the autocast dtype, the embedding code's version
(:data:`~hearfuse.identity.EMBEDDING_VERSION`), the task's metadata, labels and
split files, the audio (names, sizes, modification times) and, for results, the downstream protocol.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from ..identity import PARTS, change
from .tasks import Task

#: Each provenance key in words; the embedding identity's parts say it as the identity does.
_WHAT = {
    "config": PARTS["config"],
    "dtype": PARTS["dtype"],
    "embedding_code": PARTS["code"],
    "task": "the task's metadata, vocabulary or split files",
    "audio": "the task's audio files",
    "embeddings": "the embedding files",
    "protocol": "the downstream protocol",
}
_IDENTITY_PARTS = {"config": "config", "dtype": "dtype", "embedding_code": "code"}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_content(task: Task) -> str:
    """Hash of the files that define a task's labels and protocol: metadata, vocabulary, split files."""
    names = ["task_metadata.json", "labelvocabulary.csv", *(f"{split}.json" for split in task.splits)]
    return digest({name: hashlib.sha256((task.path / name).read_bytes()).hexdigest() for name in names})


def files_stamp(directory: Path, names: list[str]) -> str:
    """Hash of each named file's size and modification time (a rebuilt or replaced file changes it)."""
    stats = []
    for name in names:
        stat = (directory / name).stat()
        stats.append((name, stat.st_size, stat.st_mtime_ns))
    return digest(stats)


def changes(stored: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Why ``stored`` provenance does not hold for ``current``, in words (empty: it holds)."""
    if not isinstance(stored, Mapping):
        return ["it records no provenance (written by an older hearfuse)"]
    reasons = []
    for key, value in current.items():
        if stored.get(key) != value:
            if key in _IDENTITY_PARTS:
                reasons.append(change(_IDENTITY_PARTS[key], stored.get(key), value))
                continue
            what = _WHAT.get(key, key)
            if isinstance(value, Mapping) and isinstance(stored.get(key), Mapping):
                changed = sorted(k for k in set(value) | set(stored[key]) if value.get(k) != stored[key].get(k))
                what += f" ({', '.join(changed)})"
            reasons.append(f"{what} changed")
    return reasons
