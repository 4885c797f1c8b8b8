"""Sound sources of the offline suite: the FluidR3 General MIDI SoundFont and espeak-ng voices.

Both run as their Debian programs (``fluidsynth``, ``espeak-ng``); a missing one is named
with the command that installs it. Everything is rendered at 16 kHz, float, deterministic.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import mido
import numpy as np
import soundfile

from ..audio import resample
from ..errors import UsageError

SAMPLE_RATE = 16000
SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2")
_DEBIAN = "apt-get install -y --no-install-recommends fluidsynth fluid-soundfont-gm espeak-ng sox"


class MissingProgramError(UsageError, FileNotFoundError):
    """A program or data file the suite needs is not installed."""


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MissingProgramError(f"{program!r} is not installed; install the suite's sources with: {_DEBIAN}")
    return path


@functools.cache
def soundfont() -> Path:
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    raise MissingProgramError(f"the FluidR3 General MIDI SoundFont is not installed; install it with: {_DEBIAN}")


def render_midi(midi: mido.MidiFile) -> np.ndarray:
    """Render a MIDI file with fluidsynth (no reverb, no chorus) to mono float32 at 16 kHz."""
    fluidsynth = require("fluidsynth")
    with tempfile.TemporaryDirectory() as tmp:
        midi_path, wav_path = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        midi.save(str(midi_path))
        subprocess.run(
            [
                fluidsynth,
                "-ni",
                "-q",
                "-R",
                "0",
                "-C",
                "0",
                "-g",
                "0.6",
                "-r",
                str(SAMPLE_RATE),
                "-O",
                "float",
                "-T",
                "wav",
                "-F",
                str(wav_path),
                str(soundfont()),
                str(midi_path),
            ],
            check=True,
            capture_output=True,
        )
        audio, rate = soundfile.read(str(wav_path), dtype="float32", always_2d=True)
    return resample(np.ascontiguousarray(audio.mean(axis=1)), rate, SAMPLE_RATE)


def note_midi(notes: list[tuple[int, int, int, float, float, int]], *, ticks_per_beat: int = 960) -> mido.MidiFile:
    """A MIDI file (120 bpm, so one beat = 0.5 s) from ``(channel, program, pitch, start_s, end_s, velocity)``.

    Channel 9 is the General MIDI drum kit (program ignored). Times are exact to 1/1920 s.
    """
    seconds_to_ticks = ticks_per_beat * 2  # 120 bpm
    events = []
    programs = {}
    for channel, program, pitch, start, end, velocity in notes:
        if channel != 9 and programs.get(channel, program) != program:
            raise ValueError(f"channel {channel} is used with two programs")
        programs[channel] = program
        events.append(
            (
                round(start * seconds_to_ticks),
                1,
                mido.Message("note_on", channel=channel, note=pitch, velocity=velocity),
            )
        )
        events.append(
            (round(end * seconds_to_ticks), 0, mido.Message("note_off", channel=channel, note=pitch, velocity=0))
        )
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    for channel, program in sorted(programs.items()):
        if channel != 9:
            track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    now = 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1], e[2].channel, e[2].note)):
        track.append(message.copy(time=tick - now))
        now = tick
    midi = mido.MidiFile(ticks_per_beat=ticks_per_beat)
    midi.tracks.append(track)
    return midi


@functools.cache
def espeak_voices() -> tuple[str, ...]:
    """Language voices espeak-ng offers (e.g. 'en', 'de', 'fr'), in its listing order."""
    listing = subprocess.run([require("espeak-ng"), "--voices"], check=True, capture_output=True, text=True).stdout
    return tuple(line.split()[1] for line in listing.splitlines()[1:] if line.split())


@functools.cache
def espeak_variants() -> tuple[str, ...]:
    """Voice variants (e.g. 'm3', 'f2', 'klatt'), combined with a language as 'en+f2'."""
    listing = subprocess.run(
        [require("espeak-ng"), "--voices=variant"], check=True, capture_output=True, text=True
    ).stdout
    return tuple(line.split()[-1].split("/")[-1] for line in listing.splitlines()[1:] if line.split())


def speak(text: str, voice: str = "en", *, pitch: int = 50, speed: int = 160) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng (voice like 'en+f2', pitch 0-99, words per minute) at 16 kHz."""
    espeak = require("espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        subprocess.run(
            [espeak, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav_path), text],
            check=True,
            capture_output=True,
        )
        audio, rate = soundfile.read(str(wav_path), dtype="float32", always_2d=True)
    return resample(np.ascontiguousarray(audio.mean(axis=1)), rate, SAMPLE_RATE)
