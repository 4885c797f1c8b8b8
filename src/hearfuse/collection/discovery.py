"""Finding the inputs of ``hearfuse embed``: files named, folders searched, globs matched, each placed
where its output goes, and every path a scan cannot use listed with its reason; and ``--shard``."""

from __future__ import annotations

import errno
import glob
import hashlib
import itertools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from stat import S_ISDIR, S_ISREG
from typing import Sequence

from ..audio import AUDIO_EXTENSIONS
from ..errors import UsageError

_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path  # absolute
    relative: PurePosixPath  # mirrors the input tree under the output directory

    @property
    def output(self) -> PurePosixPath:
        """``a/b.wav`` -> ``a/b.wav.npz`` (keeps ``b.wav`` and ``b.flac`` apart)."""
        return self.relative.with_name(self.relative.name + ".npz")


@dataclass(frozen=True)
class Unusable:
    """A path a scan found that is not embedded, with why: ``failed`` (it cannot be read) or ``alias``
    (another path names the same file, which is embedded under that path)."""

    relative: PurePosixPath
    source: str
    status: str  # "failed" | "alias"
    reason: str
    alias_of: PurePosixPath | None = None  # an alias: the path it is embedded under


@dataclass
class Discovery:
    files: list[InputFile]
    unusable: list[Unusable]


def discover(inputs: Sequence[str | Path]) -> Discovery:
    """Files named, audio files found recursively in folders, and glob matches, in a stable order.

    A folder's files are placed relative to the folder; a glob's relative to its fixed prefix; a named
    file by its name. Nothing a folder scan finds is dropped without a word: broken symbolic links,
    link loops, unreadable files and folders, and linked folders (not followed) are listed as
    ``unusable`` with the reason. Aliases: paths that resolve to the same file are embedded once,
    under the path that is not a symbolic link (else the first in order); the others are listed as
    aliases of it. A named input that does not exist, and two inputs that would be written to the
    same output, are usage errors.
    """
    candidates: list[tuple[Path, PurePosixPath]] = []
    unusable: list[Unusable] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text).expanduser()
        try:
            kind = _kind(path)
        except OSError as error:  # it may exist: recorded with the reason, not a usage error
            unusable.append(Unusable(PurePosixPath(path.name), text, "failed", _cannot_examine(path, error)))
            continue
        if kind == "folder":
            found, problems = _scan_folder(path)
            candidates += found
            unusable += problems
        elif kind == "file":
            candidates.append((path, PurePosixPath(path.name)))
        elif kind == "other":
            unusable.append(Unusable(PurePosixPath(path.name), text, "failed", "not a regular file or a folder"))
        elif _GLOB_CHARS & set(text):
            root = _glob_root(text)
            matched = False
            for match in map(Path, sorted(glob.glob(text, recursive=True))):
                relative = PurePosixPath(match.relative_to(root).as_posix())
                try:
                    if _kind(match) != "file":
                        continue
                except OSError as error:
                    unusable.append(Unusable(relative, str(match), "failed", _cannot_examine(match, error)))
                else:
                    candidates.append((match, relative))
                matched = True
            if not matched:
                raise UsageError(f"input pattern {text!r} matches no file")
        else:
            raise UsageError(f"input {text!r} does not exist")
    by_target: dict[Path, list[tuple[Path, PurePosixPath]]] = {}
    for file, relative in candidates:
        by_target.setdefault(file.resolve(), []).append((file, relative))
    files = []
    for target, paths in by_target.items():
        unique = list(dict.fromkeys(paths))
        chosen = min(unique, key=lambda pair: (pair[0].is_symlink(), str(pair[1])))
        files.append(InputFile(target, chosen[1]))
        unusable += [
            Unusable(relative, str(file), "alias", f"alias of {chosen[1]} (the same file), embedded there", chosen[1])
            for file, relative in unique
            if (file, relative) != chosen and relative != chosen[1]
        ]
    by_output: dict[PurePosixPath, InputFile] = {}
    for item in files:
        other = by_output.setdefault(item.relative, item)
        if other is not item:
            raise UsageError(
                f"{other.path} and {item.path} would both be written as {item.relative}; "
                "pass their common parent folder"
            )
    return Discovery(
        sorted(files, key=lambda item: str(item.relative)), sorted(unusable, key=lambda u: str(u.relative))
    )


def _kind(path: Path) -> str:
    """``folder``, ``file``, ``other`` or ``missing``. Raises the OSError of a path that may exist but
    cannot be examined (a parent that cannot be entered, a name too long, a symbolic link loop), where
    ``Path.is_dir`` would raise some of these and quietly say False to others."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    return "folder" if S_ISDIR(mode) else "file" if S_ISREG(mode) else "other"


def _cannot_examine(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot be examined: {error.strerror or error}"


def _scan_folder(folder: Path) -> tuple[list[tuple[Path, PurePosixPath]], list[Unusable]]:
    """Audio files below ``folder`` and, with their reasons, the entries that cannot be used."""
    found, problems = [], []

    def unusable(path: Path, reason: str) -> None:
        problems.append(Unusable(PurePosixPath(path.relative_to(folder).as_posix()), str(path), "failed", reason))

    def unreadable_folder(error: OSError) -> None:
        unusable(Path(error.filename), f"folder cannot be read: {error.strerror}")

    for directory, folders, names in os.walk(folder, onerror=unreadable_folder):
        folders.sort()
        for name in folders:
            if (Path(directory) / name).is_symlink():
                unusable(Path(directory) / name, "symbolic link to a folder: not followed (name it as an input)")
        for name in sorted(names):
            path = Path(directory) / name
            if path.suffix.lower() not in AUDIO_EXTENSIONS or name.startswith("."):
                continue
            try:
                with open(path, "rb"):
                    pass
            except OSError as error:
                if path.is_symlink() and error.errno == errno.ELOOP:
                    unusable(path, "symbolic link loop")
                elif path.is_symlink() and error.errno == errno.ENOENT:
                    unusable(path, f"broken symbolic link to {os.readlink(path)}")
                else:
                    unusable(path, f"cannot be read: {error.strerror}")
                continue
            found.append((path, PurePosixPath(path.relative_to(folder).as_posix())))
    return found, problems


def _glob_root(pattern: str) -> Path:
    """The fixed folder a glob starts from (``data/**/*.wav`` -> ``data``)."""
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS & set(part), Path(pattern).expanduser().parts))
    return Path(*fixed) if fixed else Path(".")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shards (1-based)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"shard must look like I/N (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise UsageError(f"shard {text!r}: need 1 <= I <= N")
    return index, count


def in_shard(relative: PurePosixPath, shard: tuple[int, int]) -> bool:
    """Stable assignment by a hash of the relative path: shards never overlap and cover everything."""
    index, count = shard
    digest = int(hashlib.sha1(str(relative).encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return digest % count == index - 1
