"""Recorded audio that Debian packages ship: where a package is installed, its version, and the licence its
machine-readable copyright file gives each of its files.

The recorded suite reads these packages from their installed paths (nothing is downloaded at build time);
a missing one is a one-line error naming the ``apt-get install`` that brings them all, as for fluidsynth.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .synth import MissingProgramError

#: Every package the recorded suite reads (``make system-deps`` installs them).
RECORDED_PACKAGES = ("tuxpaint-stamps-default", "ktuberling-data", "klettres-data", "hydrogen-drumkits")
RECORDED_INSTALL = "apt-get install -y --no-install-recommends " + " ".join(RECORDED_PACKAGES)


@dataclass(frozen=True)
class Provenance:
    """Where one source of a recorded task comes from, for its metadata and the report."""

    package: str
    version: str
    licence: str
    #: The files' common folder as installed (e.g. one drum kit's or one language's).
    path: str

    def as_dict(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "licence": self.licence, "path": self.path}


@functools.cache
def package_version(package: str) -> str:
    """The installed version of a Debian package; a missing one is one line naming the install command."""
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", package], capture_output=True, text=True
        )
    except FileNotFoundError:  # not a Debian system at all
        done = None
    status, _, version = (done.stdout if done is not None and done.returncode == 0 else "").partition(" ")
    if status != "installed":
        raise MissingProgramError(
            f"Debian package {package!r} is not installed; install the recorded suite's sources with: "
            f"{RECORDED_INSTALL}"
        )
    return version


@functools.cache
def _copyright_stanzas(package: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """``(file patterns, licence)`` of each ``Files`` stanza of the package's DEP-5 copyright file, in order."""
    text = Path(f"/usr/share/doc/{package}/copyright").read_text(encoding="utf-8")
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and current:
                fields[current] += "\n" + line.strip()
            elif ":" in line:
                current, _, value = line.partition(":")
                fields[current] = value.strip()
        if "Files" in fields and "License" in fields:
            patterns = tuple(fields["Files"].split())
            stanzas.append((patterns, fields["License"].splitlines()[0].strip()))
    return tuple(stanzas)


def licence(package: str, source_file: str) -> str:
    """The licence the package's copyright file gives ``source_file`` (a path in the package's source tree,
    as its ``Files`` patterns name them): the last matching stanza wins, as DEP-5 says."""
    package_version(package)
    found = None
    for patterns, name in _copyright_stanzas(package):
        if any(fnmatch.fnmatchcase(source_file, pattern) for pattern in patterns):
            found = name
    if found is None:
        raise ValueError(f"{package}'s copyright file gives no licence for {source_file!r}")
    return found


def provenance(package: str, source_file: str, installed: str | Path) -> Provenance:
    return Provenance(package, package_version(package), licence(package, source_file), str(installed))
