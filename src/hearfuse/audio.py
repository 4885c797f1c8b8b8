"""Reading audio files: every format libsndfile reads, downmixed to mono, resampled with soxr."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

#: File extensions picked up when a folder is scanned (explicitly named files are always tried).
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
        ".voc",
        ".sd2",
        ".htk",
        ".nist",
        ".sph",
        ".mat",
    }
)


class AudioError(ValueError):
    """A file that cannot be used as audio, with the reason in words."""


@dataclass(frozen=True)
class AudioInfo:
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | Path) -> AudioInfo:
    """Header information; raises :class:`AudioError` for unreadable, empty or non-audio files."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = soundfile.info(os.fsencode(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"not readable as audio: {error}") from None
    if info.frames <= 0:
        raise AudioError("audio has zero samples")
    _check_complete(info)
    return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def _check_complete(info) -> None:
    """libsndfile quietly reads a file cut short (a full disk, an interrupted copy) as a shorter clip;
    its header dump says "data : N (should be M)" when the data chunk claims more bytes than exist."""
    cut = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info, re.MULTILINE)
    if cut and int(cut.group(2)) < int(cut.group(1)):
        block = re.search(r"Block Align\s*:\s*(\d+)", info.extra_info)
        size = int(block.group(1)) if block else 0
        declared = f"{int(cut.group(1)) // size} frames" if size else f"{cut.group(1)} bytes"
        raise AudioError(f"truncated: the header declares {declared}, only {info.frames} are in the file")


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a mono float signal."""
    if source_rate == target_rate:
        return audio
    return soxr.resample(audio, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` (channels averaged). A file cut short (fewer samples
    than its header declares) is an error, not a shorter clip."""
    info = audio_info(path)  # the clear errors for empty and non-audio files
    try:
        data, rate = soundfile.read(os.fsencode(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"could not decode audio: {error}") from None
    if data.shape[0] == 0:
        raise AudioError("audio has zero samples")
    if data.shape[0] < info.frames:
        raise AudioError(f"truncated: the header declares {info.frames} frames, only {data.shape[0]} could be read")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("audio contains NaN or Inf samples")
    return resample(np.ascontiguousarray(mono), rate, sample_rate)


def load_each(paths: list[str], sample_rate: int) -> list[np.ndarray | str]:
    """:func:`load_audio` of every path, or the reason it cannot be read: one bad file in a batch
    does not lose the others (a Ray decoding task of ``hearfuse embed --ray``)."""
    decoded: list[np.ndarray | str] = []
    for path in paths:
        try:
            decoded.append(load_audio(path, sample_rate))
        except (AudioError, OSError) as error:
            decoded.append(str(error))
    return decoded
