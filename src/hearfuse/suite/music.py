"""Music tasks of the offline suite, rendered from the FluidR3 General MIDI SoundFont.

Every clip is described as MIDI notes with times in whole milliseconds on a 4 ms grid (the MIDI
files use one tick per millisecond), so event labels are exactly the note-on/note-off times that
were rendered. Many clips share one fluidsynth call: they are laid end to end with a short gap,
in which "all sound off" stops whatever still rings, and cut back out at their offsets; a clip's
samples are the same whatever else shares its render."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from .registry import suite_task
from .synth import SAMPLE_RATE, note_midi, render_midi
from .writer import TaskWriter

SAMPLES_PER_MS = SAMPLE_RATE // 1000
DRUM_KIT = 128
"""``Note.instrument`` of ``DRUM_KIT + kit`` plays the GM drum channel with drum-kit program ``kit``."""
GAP_MS = 400
GRID_MS = 4
"""Note times lie on a 4 ms grid: fluidsynth handles MIDI events once per 64-sample block (4 ms at
16 kHz), at the first block boundary at or after the event, so times on the grid are rendered exactly."""
_MELODIC_CHANNELS = tuple(channel for channel in range(16) if channel != 9)
_MAX_RENDER_MS = 20 * 60 * 1000  # one fluidsynth call renders at most 20 minutes (77 MB of float audio)
_RENDER_WORKERS = 2
LEVEL = 3.0
"""Fixed gain on fluidsynth's output (its notes peak near 0.02-0.15 at ``-g 0.6``); the writer peak-limits."""

TRAIN_VALID_TEST = ["train", "valid", "test"]


@dataclass(frozen=True)
class Note:
    instrument: int  # GM program 0-127, or DRUM_KIT + kit
    pitch: int
    start: int  # ms from the start of the clip
    end: int  # ms
    velocity: int


@dataclass(frozen=True)
class Clip:
    notes: tuple[Note, ...]
    duration: int  # ms


# --------------------------------------------------------------------------------------------
# Rendering many clips in few fluidsynth calls


def render_clips(clips: Sequence[Clip], *, gap_ms: int = GAP_MS) -> list[np.ndarray]:
    """Render each clip (``duration`` ms of float32 audio at 16 kHz), packing many clips per fluidsynth call.

    A call holds at most 15 melodic programs (one per channel) and one drum kit, so clips are
    grouped by their instruments; the grouping depends only on ``clips``, hence so do the bytes.
    """
    if gap_ms % (2 * GRID_MS) or gap_ms < 8 * GRID_MS:
        raise ValueError(f"gap_ms must be a multiple of {2 * GRID_MS} ms, at least {8 * GRID_MS}")
    for clip in clips:
        if clip.duration % GRID_MS:
            raise ValueError(f"clip duration {clip.duration} ms is not a multiple of {GRID_MS} ms")
        for note in clip.notes:
            fits = 0 <= note.start < note.end <= clip.duration
            if not (fits and 1 <= note.velocity <= 127 and 0 <= note.pitch <= 127):
                raise ValueError(f"note {note} does not fit its clip of {clip.duration} ms")
            if note.start % GRID_MS or note.end % GRID_MS:
                raise ValueError(f"note {note} is off the {GRID_MS} ms grid that fluidsynth renders exactly")
    order = sorted(range(len(clips)), key=lambda i: (sorted({n.instrument for n in clips[i].notes}), i))
    batches: list[list[int]] = []
    current: list[int] = []
    programs: set[int] = set()
    kits: set[int] = set()
    length = 0
    for index in order:
        clip = clips[index]
        melodic = {n.instrument for n in clip.notes if n.instrument < DRUM_KIT}
        kit = {n.instrument for n in clip.notes if n.instrument >= DRUM_KIT}
        if len(melodic) > len(_MELODIC_CHANNELS) or len(kit) > 1:
            raise ValueError(f"a clip may use at most {len(_MELODIC_CHANNELS)} programs and one drum kit")
        span = clip.duration + gap_ms
        if current and (
            len(programs | melodic) > len(_MELODIC_CHANNELS) or len(kits | kit) > 1 or length + span > _MAX_RENDER_MS
        ):
            batches.append(current)
            current, programs, kits, length = [], set(), set(), 0
        current.append(index)
        programs |= melodic
        kits |= kit
        length += span
    if current:
        batches.append(current)
    with ThreadPoolExecutor(_RENDER_WORKERS) as pool:
        rendered = list(pool.map(lambda batch: _render_batch([clips[i] for i in batch], gap_ms), batches))
    audio: list[np.ndarray] = [np.zeros(0, np.float32)] * len(clips)
    for batch, pieces in zip(batches, rendered):
        for index, piece in zip(batch, pieces):
            audio[index] = piece
    return audio


def render_stream(clips: Sequence[Clip], *, chunk: int = 256) -> Iterator[np.ndarray]:
    """:func:`render_clips` in order, ``chunk`` clips at a time, so a large task never holds all its audio."""
    for first in range(0, len(clips), chunk):
        yield from render_clips(clips[first : first + chunk])


def _render_batch(clips: list[Clip], gap_ms: int) -> list[np.ndarray]:
    melodic = sorted({n.instrument for clip in clips for n in clip.notes if n.instrument < DRUM_KIT})
    kits = sorted({n.instrument - DRUM_KIT for clip in clips for n in clip.notes if n.instrument >= DRUM_KIT})
    channel_of = {program: channel for program, channel in zip(melodic, _MELODIC_CHANNELS)}
    channel_of.update({DRUM_KIT + kit: 9 for kit in kits})
    # Warm-up: the first note fluidsynth plays from a sample renders slightly differently from all
    # later ones, so every distinct (instrument, pitch, velocity) of the batch is first played once,
    # a new one each 4 ms block, and silenced before the first clip. Then a clip's samples do not
    # depend on what else shares its render.
    warm_ups = sorted({(n.instrument, n.pitch, n.velocity) for clip in clips for n in clip.notes})
    notes = [
        (channel_of[i], i % DRUM_KIT, pitch, GRID_MS * k / 1000, GRID_MS * (k + 1) / 1000, velocity)
        for k, (i, pitch, velocity) in enumerate(warm_ups)
    ]
    lead_in = GRID_MS * -(-(len(warm_ups) * GRID_MS + gap_ms) // GRID_MS)
    silence_at = list(range(200, lead_in - gap_ms // 2, 200)) + [lead_in - gap_ms // 2]
    offsets = []
    cursor = lead_in
    for clip in clips:
        offsets.append(cursor)
        for n in clip.notes:
            notes.append(
                (
                    channel_of[n.instrument],
                    n.instrument % DRUM_KIT,
                    n.pitch,
                    (cursor + n.start) / 1000,
                    (cursor + n.end) / 1000,
                    n.velocity,
                )
            )
        cursor += clip.duration + gap_ms
        silence_at.append(cursor - gap_ms // 2)
    midi = note_midi(notes, ticks_per_beat=500)  # 120 bpm: one tick is one millisecond
    # Between clips, "all sound off" (CC 120) on every channel stops what still rings, so no clip
    # hears the tail of the one before (a low guitar string in FluidR3 rings for 20 s).
    channels = sorted(set(channel_of.values()))
    controls = [
        (tick, mido.Message("control_change", channel=c, control=120, value=0)) for tick in silence_at for c in channels
    ]
    if kits:
        controls.append((0, mido.Message("program_change", channel=9, program=kits[0])))
    midi.tracks[0] = _merge(midi.tracks[0], controls, end=cursor)
    audio = render_midi(midi)
    needed = cursor * SAMPLES_PER_MS
    if len(audio) < needed:
        audio = np.pad(audio, (0, needed - len(audio)))
    return [
        np.array(audio[offset * SAMPLES_PER_MS : (offset + clip.duration) * SAMPLES_PER_MS], dtype=np.float32)
        for offset, clip in zip(offsets, clips)
    ]


def _merge(track: mido.MidiTrack, extra: list[tuple[int, mido.Message]], *, end: int) -> mido.MidiTrack:
    """``track`` plus ``extra`` messages at absolute ticks (first at their tick), ending at tick ``end``."""
    timed = []
    now = 0
    for message in track:
        now += message.time
        if message.type != "end_of_track":
            timed.append((now, 1, len(timed), message))
    timed += [(tick, 0, k, message) for k, (tick, message) in enumerate(extra)]
    merged = mido.MidiTrack()
    now = 0
    for tick, _, _, message in sorted(timed, key=lambda item: item[:3]):
        merged.append(message.copy(time=tick - now))
        now = tick
    merged.append(mido.MetaMessage("end_of_track", time=max(0, end - now)))  # render until the last gap is over
    return merged


# --------------------------------------------------------------------------------------------
# Instruments

#: GM families (program // 8) with the programs used from each, and a comfortable pitch range.
FAMILIES: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "piano": (tuple(range(8)), (36, 84)),
    "chromatic_percussion": (tuple(range(8, 16)), (60, 96)),
    "organ": (tuple(range(16, 24)), (36, 84)),
    "guitar": (tuple(range(24, 31)), (40, 76)),  # not 31, guitar harmonics (two octaves up)
    "bass": (tuple(range(32, 40)), (28, 55)),
    "strings": (tuple(range(40, 47)), (45, 81)),  # not 47, timpani
    "ensemble": (tuple(range(48, 55)), (48, 79)),  # not 55, orchestra hit
    "brass": (tuple(range(56, 64)), (45, 74)),
    "reed": (tuple(range(64, 72)), (50, 79)),
    "pipe": (tuple(range(72, 80)), (60, 88)),
    "synth_lead": (tuple(range(80, 88)), (48, 84)),
    "synth_pad": (tuple(range(88, 96)), (48, 79)),
}
#: Programs whose FluidR3 preset is silent above some key, or that belong lower than their family.
PROGRAM_RANGES = {43: (28, 55), 58: (28, 58), 67: (36, 67)}

PITCHES = tuple(range(48, 85))
"""The pitch range of ``gm_pitch`` and ``piano_onsets`` (C3-C6, 37 labels)."""
#: Melodic programs whose FluidR3 notes sound at their MIDI pitch over all of :data:`PITCHES`:
#: CREPE's median pitch of the attack (50-500 ms) and, where the note still sounds, of the held
#: part (1-2.8 s) was within half a semitone of the MIDI pitch for every note 48-84. Left out by
#: that check: 3, 9, 14-19, 25, 26, 28, 30, 31, 38, 40, 41, 43-49, 52, 55, 58, 64, 66-68, 70, 77,
#: 86, 97, 104, 106, 110, 111 (octave doubling, inharmonic bells, silent upper keys, a fifth
#: layered on, too short to hear); left out by design: the unsteady synth effects 96-103 and the
#: percussive and sound-effect programs 112-127.
PITCH_PROGRAMS: tuple[int, ...] = (
    0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 20, 21, 22, 23, 24, 27, 29, 32, 33, 34, 35, 36, 37, 39, 42,
    50, 51, 53, 54, 56, 57, 59, 60, 61, 62, 63, 65, 69, 71, 72, 73, 74, 75, 76, 78, 79, 80, 81, 82, 83,
    84, 85, 87, 88, 89, 90, 91, 92, 93, 94, 95, 105, 107, 108, 109,
)  # fmt: skip

DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # Standard, Room, Power, Electronic, TR-808, Jazz, Brush
DRUM_SOUNDS = {
    "kick": 36,
    "snare": 38,
    "clap": 39,
    "closed_hihat": 42,
    "low_tom": 45,
    "open_hihat": 46,
    "crash": 49,
    "high_tom": 50,
    "ride": 51,
    "cowbell": 56,
}


def _time(rng: np.random.Generator, low: float, high: float) -> int:
    """A random time in ms on the :data:`GRID_MS` grid, from ``low`` to ``high`` inclusive (rounded inwards)."""
    return GRID_MS * int(rng.integers(-int(-low // GRID_MS), int(high // GRID_MS) + 1))


def _program_range(program: int) -> tuple[int, int]:
    if program in PROGRAM_RANGES:
        return PROGRAM_RANGES[program]
    for programs, pitch_range in FAMILIES.values():
        if program in programs:
            return pitch_range
    return 48, 84


def _phrase(
    rng: np.random.Generator,
    program: int,
    *,
    start: int,
    stop: int,
    notes: tuple[int, int],
    pitch_range: tuple[int, int] | None = None,
    velocity: tuple[int, int] = (60, 120),
) -> list[Note]:
    """A short melodic phrase between ``start`` and ``stop`` ms: consecutive notes in a random walk."""
    low, high = pitch_range or _program_range(program)
    count = int(rng.integers(notes[0], notes[1] + 1))
    mean_gap = (stop - start) / count
    onset = start
    pitch = int(rng.integers(low, high + 1))
    phrase: list[Note] = []
    for _ in range(count):
        if onset > stop - 100:
            break
        gap = _time(rng, max(100, 0.6 * mean_gap), max(100, 1.4 * mean_gap))
        end = min(stop, onset + _time(rng, max(80, gap // 2), gap))
        phrase.append(Note(program, pitch, onset, end, int(rng.integers(velocity[0], velocity[1] + 1))))
        step = int(rng.choice([-7, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 7]))
        pitch = pitch + step if low <= pitch + step <= high else pitch - step
        onset += gap
    return phrase


def _split_counts(total: int, valid: float = 0.15, test: float = 0.15) -> dict[str, int]:
    n_valid, n_test = max(1, round(total * valid)), max(1, round(total * test))
    return {"train": total - n_valid - n_test, "valid": n_valid, "test": n_test}


def _stratified(
    rng: np.random.Generator, items_by_class: dict, splits: Sequence[str], fractions: Sequence[float]
) -> dict[str, list]:
    """Shuffle each class's items and share them out over ``splits`` in ``fractions``."""
    shared: dict[str, list] = {split: [] for split in splits}
    for items in items_by_class.values():
        items = [items[i] for i in rng.permutation(len(items))]
        bounds = np.round(np.cumsum(fractions) * len(items)).astype(int)
        first = 0
        for split, last in zip(splits, bounds):
            shared[split].extend(items[first:last])
            first = last
    return shared


# --------------------------------------------------------------------------------------------
# Tasks


@suite_task(
    "gm_pitch",
    stands_in_for="NSynth Pitch (5h/50h)",
    kind="scene, multiclass",
    labels="MIDI pitch 48-84 of a single held note; valid and test instruments unseen in training",
    metric="pitch_acc (chroma_acc)",
)
def build_gm_pitch(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    duration, hold = (4000, 3000) if size == "full" else (2000, 1500)
    # Programs are split per GM family, so every split has a spread of families.
    by_family: dict[int, list[int]] = {}
    for program in PITCH_PROGRAMS:
        by_family.setdefault(program // 8, []).append(program)
    pattern = ["train", "train", "valid", "train", "train", "test", "train"]
    phase = int(rng.integers(len(pattern)))
    programs_of: dict[str, list[int]] = {split: [] for split in TRAIN_VALID_TEST}
    position = phase
    for family in sorted(by_family):
        for program in rng.permutation(by_family[family]):
            programs_of[pattern[position % len(pattern)]].append(int(program))
            position += 1
    specs: list[tuple[str, int, int, int]] = []  # split, program, pitch, velocity
    if size == "full":
        for split in TRAIN_VALID_TEST:
            for program in sorted(programs_of[split]):
                for pitch in PITCHES:
                    specs.append((split, program, pitch, int(rng.integers(40, 128))))
    else:
        for split, count in (("train", 64), ("valid", 16), ("test", 16)):
            for _ in range(count):
                program = int(rng.choice(programs_of[split]))
                specs.append((split, program, int(rng.choice(PITCHES)), int(rng.integers(40, 128))))
    clips = [Clip((Note(program, pitch, 0, hold, velocity),), duration) for _, program, pitch, velocity in specs]
    writer = TaskWriter(
        root,
        "gm_pitch",
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="trainvaltest",
        splits=TRAIN_VALID_TEST,
        evaluation=["pitch_acc", "chroma_acc"],
        sample_duration=duration / 1000,
        labels=[str(p) for p in PITCHES],
        description="Stands in for NSynth Pitch (HEAR nsynth_pitch): MIDI pitch of single FluidR3 GM notes, "
        "instruments of valid and test unseen in training.",
    )
    for index, ((split, program, pitch, _velocity), audio) in enumerate(zip(specs, render_stream(clips))):
        writer.add(split, f"prog{program:03d}_{index:05d}.wav", LEVEL * audio, [str(pitch)])
    return writer


@suite_task(
    "gm_instrument",
    stands_in_for="Beijing Opera Percussion / Mridangam Tonic (instrument identity, k-fold)",
    kind="scene, multiclass",
    labels=f"GM instrument family of a short phrase ({len(FAMILIES)} families)",
    metric="top1_acc",
)
def build_gm_instrument(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    duration = 2000
    folds = [f"fold{k:02d}" for k in range(5 if size == "full" else 3)]
    per_family = 160 if size == "full" else 9
    specs_by_family: dict[str, list[Clip]] = {}
    for family, (programs, _) in FAMILIES.items():
        cycle = [int(p) for p in rng.permutation(programs)]
        clips = []
        for k in range(per_family):
            program = cycle[k % len(cycle)]
            clips.append(Clip(tuple(_phrase(rng, program, start=0, stop=1700, notes=(2, 5))), duration))
        specs_by_family[family] = clips
    writer = TaskWriter(
        root,
        "gm_instrument",
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="new_split_kfold",
        splits=folds,
        evaluation=["top1_acc"],
        sample_duration=duration / 1000,
        labels=list(FAMILIES),
        description="Stands in for Beijing Opera Percussion and Mridangam Tonic (small k-fold instrument "
        "identification): GM instrument family of short FluidR3 phrases.",
    )
    items = [(family, clip) for family, clips in specs_by_family.items() for clip in clips]
    audio = render_clips([clip for _, clip in items])
    by_family: dict[str, list[int]] = {}
    for index, (family, _) in enumerate(items):
        by_family.setdefault(family, []).append(index)
    shared = _stratified(rng, by_family, folds, [1 / len(folds)] * len(folds))
    for fold in folds:
        for index in sorted(shared[fold]):
            family, clip = items[index]
            program = clip.notes[0].instrument
            writer.add(fold, f"clip{index:05d}_prog{program:03d}.wav", LEVEL * audio[index], [family])
    return writer


@suite_task(
    "gm_percussion",
    stands_in_for="Mridangam Stroke",
    kind="scene, multiclass",
    labels=f"GM drum-kit sound of a single hit ({len(DRUM_SOUNDS)} sounds, 7 kits)",
    metric="top1_acc",
)
def build_gm_percussion(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    duration = 1000 if size == "full" else 500
    per_sound = 210 if size == "full" else 12
    items = []
    for name, key in DRUM_SOUNDS.items():
        kits = rng.permutation(np.resize(DRUM_KITS, per_sound))  # every kit about equally often
        for kit in map(int, kits):
            start = _time(rng, 4, 40)
            note = Note(DRUM_KIT + kit, key, start, duration, int(rng.integers(30, 128)))
            items.append(
                (name, Clip((note,), duration), float(rng.uniform(0.6, 1.0)), float(10 ** rng.uniform(-4.6, -3.8)))
            )
    audio = render_clips([clip for _, clip, _, _ in items])
    by_sound: dict[str, list[int]] = {}
    for index, (name, *_) in enumerate(items):
        by_sound.setdefault(name, []).append(index)
    shared = _stratified(rng, by_sound, TRAIN_VALID_TEST, [0.7, 0.15, 0.15])
    writer = TaskWriter(
        root,
        "gm_percussion",
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="trainvaltest",
        splits=TRAIN_VALID_TEST,
        evaluation=["top1_acc"],
        sample_duration=duration / 1000,
        labels=list(DRUM_SOUNDS),
        description="Stands in for Mridangam Stroke: which GM drum-kit sound (of 7 FluidR3 kits) a single "
        "hit is, at varied velocity and gain.",
    )
    for split in TRAIN_VALID_TEST:
        for index in sorted(shared[split]):
            name, clip, gain, noise = items[index]
            kit = clip.notes[0].instrument - DRUM_KIT
            signal = LEVEL * gain * audio[index] + noise * rng.standard_normal(len(audio[index]))
            writer.add(split, f"hit{index:05d}_kit{kit:03d}.wav", signal.astype(np.float32), [name])
    return writer


def _piano_sequence(rng: np.random.Generator, duration: int) -> list[Note]:
    """Melody with occasional chords: onsets 60-600 ms apart, notes 80-1200 ms, no key re-struck while down."""
    program = int(rng.choice([0, 0, 0, 1, 2]))
    low, high = PITCHES[0], PITCHES[-1]
    busy_until = {pitch: -1 for pitch in PITCHES}
    notes: list[Note] = []
    centre = int(rng.integers(low + 6, high - 5))
    time = _time(rng, 100, 600)
    last_end = duration - 600
    while time < last_end - 80:
        centre = int(np.clip(centre + rng.integers(-4, 5), low, high))
        chord = [centre]
        if rng.random() < 0.3:
            for interval in rng.choice([3, 4, 5, 7, 8, 9, 12], size=int(rng.integers(1, 3)), replace=False):
                if centre + interval <= high:
                    chord.append(centre + int(interval))
        for pitch in chord:
            if busy_until[pitch] + 20 > time:
                continue
            end = min(last_end, time + _time(rng, 80, 1200))
            notes.append(Note(program, pitch, time, end, int(rng.integers(35, 115))))
            busy_until[pitch] = end
        time += _time(rng, 60, 600)
    return notes


@suite_task(
    "piano_onsets",
    stands_in_for="MAESTRO 5h",
    kind="event, multilabel",
    labels="MIDI pitch 48-84 of every piano note, with note-on/note-off times from the MIDI",
    metric="event_onset_50ms_fms (event_onset_offset_50ms_20perc_fms)",
)
def build_piano_onsets(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    duration = 15000 if size == "full" else 10000
    counts = _split_counts(900 if size == "full" else 60)
    writer = TaskWriter(
        root,
        "piano_onsets",
        size,
        embedding_type="event",
        prediction_type="multilabel",
        split_mode="trainvaltest",
        splits=TRAIN_VALID_TEST,
        evaluation=["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
        sample_duration=duration / 1000,
        labels=[str(p) for p in PITCHES],
        evaluation_params={"event_postprocessing_grid": {"median_filter_ms": [150.0], "min_duration": [50.0]}},
        description="Stands in for MAESTRO 5h (HEAR maestro): transcribe random FluidR3 piano melodies and "
        "chords, note-on/note-off of each MIDI pitch.",
    )
    specs = [(split, _piano_sequence(rng, duration)) for split in TRAIN_VALID_TEST for _ in range(counts[split])]
    audio = render_stream([Clip(tuple(notes), duration) for _, notes in specs])
    for index, ((split, notes), signal) in enumerate(zip(specs, audio)):
        events = [
            {"label": str(n.pitch), "start": float(n.start), "end": float(n.end)}
            for n in sorted(notes, key=lambda n: (n.start, n.pitch))
        ]
        writer.add(split, f"piano{index:05d}.wav", LEVEL * signal, events)
    return writer


#: Sources of ``sound_mixtures``: four instrument families and six GM sound effects.
MIXTURE_SOURCES: dict[str, tuple[int, ...]] = {
    "piano": (0, 1, 2, 4, 5),
    "guitar": (24, 25, 26, 27, 29, 30),
    "strings": (40, 41, 42, 44, 48, 49),
    "brass": (56, 57, 60, 61, 62),
    "seashore": (122,),
    "bird": (123,),
    "telephone": (124,),
    "helicopter": (125,),
    "applause": (126,),
    "gunshot": (127,),
}


def _source_notes(rng: np.random.Generator, name: str, duration: int) -> list[Note]:
    programs = MIXTURE_SOURCES[name]
    program = int(rng.choice(programs))
    start = _time(rng, 0, duration // 3)
    if program < 112:
        stop = _time(rng, min(duration, start + duration // 2), duration)
        return _phrase(rng, program, start=start, stop=stop, notes=(2, 6))
    if name in ("bird", "gunshot"):  # short sounds, repeated
        notes, time = [], start
        for _ in range(int(rng.integers(1, 5))):
            if time + 300 > duration:
                break
            pitch = int(rng.integers(54, 67))
            notes.append(Note(program, pitch, time, time + _time(rng, 150, 300), int(rng.integers(70, 128))))
            time += _time(rng, 350, 900)
        return notes
    end = _time(rng, min(duration, start + duration // 2), duration)
    return [Note(program, int(rng.integers(54, 67)), start, end, int(rng.integers(70, 128)))]


def _loudness(audio: np.ndarray) -> float:
    """Loudness of a source where it sounds loudest: the largest RMS of its 32 ms frames."""
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    return float(np.sqrt((frames**2).mean(axis=1)).max())


@suite_task(
    "sound_mixtures",
    stands_in_for="FSD50K",
    kind="scene, multilabel",
    labels=f"which of {len(MIXTURE_SOURCES)} sources (instrument families, GM sound effects) sound in a mix of 1-3",
    metric="mAP",
)
def build_sound_mixtures(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    duration = 4000 if size == "full" else 2000
    counts = _split_counts(2000 if size == "full" else 90)
    names = list(MIXTURE_SOURCES)
    mixtures: list[tuple[str, list[str]]] = []
    for split in TRAIN_VALID_TEST:
        order = [names[i] for i in rng.permutation(len(names))]
        for k in range(counts[split]):
            first = order[k % len(order)]  # every source in every split
            others = [n for n in names if n != first]
            extra = rng.choice(others, size=int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25])), replace=False)
            mixtures.append((split, [first, *map(str, extra)]))
    sources = [
        (m, name, Clip(tuple(_source_notes(rng, name, duration)), duration))
        for m, (_, chosen) in enumerate(mixtures)
        for name in chosen
    ]
    writer = TaskWriter(
        root,
        "sound_mixtures",
        size,
        embedding_type="scene",
        prediction_type="multilabel",
        split_mode="trainvaltest",
        splits=TRAIN_VALID_TEST,
        evaluation=["mAP"],
        sample_duration=duration / 1000,
        labels=names,
        description="Stands in for FSD50K: tag which of 10 FluidR3 sources (instrument phrases, GM sound "
        "effects) sound in a mixture of 1-3 at random gains.",
    )
    mix = np.zeros(duration * SAMPLES_PER_MS, np.float32)
    for k, ((m, name, _), audio) in enumerate(zip(sources, render_stream([clip for _, _, clip in sources]))):
        level = _loudness(audio)
        if level < 1e-4:
            raise RuntimeError(f"sound_mixtures: a {name!r} source rendered silent")
        mix += (0.1 * 10 ** (rng.uniform(-10, 0) / 20) / level * audio).astype(np.float32)
        if k + 1 == len(sources) or sources[k + 1][0] != m:  # the last source of mixture m
            split, chosen = mixtures[m]
            writer.add(split, f"mix{m:05d}.wav", mix, sorted(chosen, key=names.index))
            mix = np.zeros_like(mix)
    return writer
