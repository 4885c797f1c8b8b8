"""What a cached embedding or a stored result was computed from, and why a stored one no longer holds.

A stored number is reused only when everything that could change it is the same: the config's
numeric content (:meth:`~hearfuse.config.FusionConfig.fingerprint`: not its name, not
performance-only options), the autocast dtype, the embedding code, the task's metadata, labels and
split files, the audio (names, sizes, modification times) and, for results, the downstream protocol.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from .tasks import Task

#: Modules whose code computes embedding values; any edit to them makes cached embeddings stale.
_EMBEDDING_CODE = ("upstream", "fusion", "model.py", "audio.py")

_WHAT = {
    "config": "the model config's numeric content",
    "dtype": "the dtype",
    "embedding_code": "the embedding code",
    "task": "the task's metadata, vocabulary or split files",
    "audio": "the task's audio files",
    "embeddings": "the embedding files",
    "protocol": "the downstream protocol",
}


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def embedding_code_version() -> str:
    """Hash of the source of every module on the embedding path (upstream families, fusion, model,
    audio decoding): derived, not maintained by hand, so no edit can be forgotten."""
    package = Path(__file__).resolve().parent.parent
    hasher = hashlib.sha256()
    for entry in _EMBEDDING_CODE:
        target = package / entry
        for source in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            hasher.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


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
            what = _WHAT.get(key, key)
            if key == "dtype":
                what += f" ({stored.get(key)} -> {value})"
            if isinstance(value, Mapping) and isinstance(stored.get(key), Mapping):
                changed = sorted(k for k in set(value) | set(stored[key]) if value.get(k) != stored[key].get(k))
                what += f" ({', '.join(changed)})"
            reasons.append(f"{what} changed")
    return reasons
