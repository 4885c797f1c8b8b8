"""Reading audio files: every format libsndfile reads, downmixed to mono, resampled with soxr."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

#: File extensions picked up when a folder is scanned (explicitly named files are always tried).
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
     ".w64", ".rf64", ".voc", ".sd2", ".htk", ".nist", ".sph", ".mat"}
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
        info = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"not readable as audio: {error}") from None
    if info.frames <= 0:
        raise AudioError("audio has zero samples")
    return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a mono float signal."""
    if source_rate == target_rate:
        return audio
    return soxr.resample(audio, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sample_rate`` (channels averaged)."""
    audio_info(path)  # the clear errors for empty and non-audio files
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"could not decode audio: {error}") from None
    if data.shape[0] == 0:
        raise AudioError("audio has zero samples")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("audio contains NaN or Inf samples")
    return resample(np.ascontiguousarray(mono), rate, sample_rate)
