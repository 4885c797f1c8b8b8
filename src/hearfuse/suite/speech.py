"""Speech and office-sound tasks of the offline suite: espeak-ng voices and FluidR3 GM percussion.

Four stand-ins for HEAR tasks:

* ``spoken_words`` (Speech Commands): which command word a 1 s clip holds;
* ``spoken_language`` (VoxLingua107 top 10): which of 10 languages a 3 s phrase is in;
* ``speaker_count`` (LibriCount): how many voices (0-4) talk at once in 3 s;
* ``office_events`` (DCASE 2016 task 2): office sounds at exact times in 10 s of noise.

A "speaker" is an espeak-ng voice variant (e.g. ``en+f2``) at some pitch and speed. Where a task
says so, the variants are partitioned into disjoint train/valid/test sets, so valid and test
voices are never heard in training. Every random choice comes from the builder's generator.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import numpy as np

from .registry import suite_task
from .synth import SAMPLE_RATE, espeak_variants, espeak_voices, note_midi, render_midi, speak
from .writer import TaskWriter

SPLITS = ("train", "valid", "test")
FRAME = SAMPLE_RATE // 100  # 10 ms analysis frames; a multiple of 1 ms, so trimmed lengths are whole ms
MS = SAMPLE_RATE // 1000

# ---------------------------------------------------------------------------------------------
# Vocabulary (written for this suite)

COMMAND_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "_silence_", "_unknown_"
OTHER_WORDS = (
    "bed",
    "bird",
    "cat",
    "dog",
    "happy",
    "house",
    "tree",
    "wow",
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "forward",
    "backward",
    "follow",
    "learn",
)
ENGLISH_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
#: Everyday English words that monologues, office speech and laughter-free phrases are made of.
CHATTER = (
    "apple",
    "river",
    "paper",
    "window",
    "morning",
    "yellow",
    "garden",
    "table",
    "music",
    "little",
    "number",
    "people",
    "water",
    "summer",
    "winter",
    "coffee",
    "letter",
    "station",
    "bottle",
    "orange",
    "kitchen",
    "market",
    "pencil",
    "button",
    "silver",
    "basket",
    "doctor",
    "engine",
    "forest",
    "island",
    "ladder",
    "mirror",
    "needle",
    "pocket",
    "rabbit",
    "sugar",
    "ticket",
    "valley",
    "wallet",
    "zebra",
    "quickly",
    "slowly",
    "always",
    "never",
    "maybe",
    "today",
    "tomorrow",
    "yesterday",
    "together",
    "under",
    "bring",
    "carry",
    "find",
    "open",
    "close",
    "listen",
    "answer",
    "travel",
    "remember",
    "follow",
)
#: language label -> (espeak voices that speak it, words for its phrases: numbers, days, common words)
LANGUAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "de": (
        ("de",),
        "eins zwei drei vier fünf sechs sieben acht neun zehn Montag Dienstag Mittwoch "
        "Donnerstag Freitag Samstag Sonntag Wasser Haus gut Morgen Nacht Freund Brot grün Stadt Fenster",
    ),
    "en": (
        ("en-us", "en-gb"),
        "one two three four five six seven eight nine ten Monday Tuesday Wednesday "
        "Thursday Friday Saturday Sunday water house good morning night friend bread "
        "green city window",
    ),
    "es": (
        ("es", "es-419"),
        "uno dos tres cuatro cinco seis siete ocho nueve diez lunes martes miércoles "
        "jueves viernes sábado domingo agua casa bueno mañana noche amigo pan verde "
        "ciudad ventana",
    ),
    "fr": (
        ("fr-fr", "fr-be"),
        "un deux trois quatre cinq six sept huit neuf dix lundi mardi mercredi jeudi "
        "vendredi samedi dimanche eau maison bon matin nuit ami pain vert ville fenêtre",
    ),
    "it": (
        ("it",),
        "uno due tre quattro cinque sei sette otto nove dieci lunedì martedì mercoledì giovedì "
        "venerdì sabato domenica acqua casa buono mattina notte amico pane verde città finestra",
    ),
    "nl": (
        ("nl",),
        "een twee drie vier vijf zes zeven acht negen tien maandag dinsdag woensdag donderdag "
        "vrijdag zaterdag zondag water huis goed morgen nacht vriend brood groen stad raam",
    ),
    "pl": (
        ("pl",),
        "jeden dwa trzy cztery pięć sześć siedem osiem dziewięć dziesięć poniedziałek wtorek "
        "środa czwartek piątek sobota niedziela woda dom dobry rano noc przyjaciel chleb "
        "zielony miasto okno",
    ),
    "pt": (
        ("pt", "pt-br"),
        "um dois três quatro cinco seis sete oito nove dez segunda terça quarta quinta "
        "sexta sábado domingo água casa bom manhã noite amigo pão verde cidade janela",
    ),
    "ru": (
        ("ru",),
        "один два три четыре пять шесть семь восемь девять десять понедельник вторник среда "
        "четверг пятница суббота воскресенье вода дом хороший утро ночь друг хлеб зелёный "
        "город окно",
    ),
    "tr": (
        ("tr",),
        "bir iki üç dört beş altı yedi sekiz dokuz on pazartesi salı çarşamba perşembe cuma "
        "cumartesi pazar su ev iyi sabah gece arkadaş ekmek yeşil şehir pencere",
    ),
}
LAUGHS = ("ha ha ha", "ha ha", "hahaha", "ha ha ha ha", "he he he", "ho ho ho", "hee hee", "ha he ha")
OFFICE_LABELS = ("doorslam", "keyboard", "keys", "knock", "laughter", "phone", "speech")
GM_OFFICE = ("doorslam", "keyboard", "keys", "knock", "phone")  # rendered by fluidsynth; the rest by espeak-ng

# clips per split (train, valid, test) and other sizes
WORD_CLIPS = {"ci": (72, 24, 24), "full": (1800, 450, 450)}
LANGUAGE_CLIPS = {"ci": (60, 20, 20), "full": (1200, 400, 400)}
COUNT_CLIPS = {"ci": (60, 20, 20), "full": (1200, 400, 400)}
COUNT_MONOLOGUES = {"ci": 1, "full": 4}  # monologues rendered per voice variant
OFFICE_CLIPS = {"ci": (36, 12, 12), "full": (800, 200, 200)}
OFFICE_INSTANCES = {"ci": (6, 3, 3), "full": (60, 20, 20)}  # distinct recordings per class and split

# ---------------------------------------------------------------------------------------------
# Voices


@functools.cache
def distinct_variants() -> tuple[str, ...]:
    """espeak-ng voice variants that audibly differ, sorted by name.

    The listing of ``espeak_variants()`` holds names that are no variant (``'5)'`` from a line with
    extra languages, ``'serious'`` from ``'Mr serious'``), and espeak-ng silently falls back to the
    default voice for a name it does not know; several variants also sound exactly alike
    (``klatt``, ``klatt6``, ``caleb``). So every candidate speaks a probe phrase and only the first
    of each distinct rendering is kept, none that sounds like the default voice.
    """
    probe = "seven yellow boats"
    seen = {hashlib.sha1(speak(probe, "en").tobytes()).hexdigest()}
    kept = []
    for variant in sorted(set(espeak_variants())):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", variant):
            continue
        digest = hashlib.sha1(speak(probe, f"en+{variant}").tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            kept.append(variant)
    return tuple(kept)


def partition_voices(variants: tuple[str, ...], rng: np.random.Generator) -> dict[str, tuple[str, ...]]:
    """Disjoint train (60 %), valid (20 %) and test (20 %) sets of voice variants."""
    if len(variants) < 5:
        raise RuntimeError(f"espeak-ng offers only {len(variants)} distinct voice variants; 5 or more are needed")
    order = [variants[i] for i in rng.permutation(len(variants))]
    held = max(1, round(0.2 * len(order)))
    return {
        "valid": tuple(sorted(order[:held])),
        "test": tuple(sorted(order[held : 2 * held])),
        "train": tuple(sorted(order[2 * held :])),
    }


def _available(voices: tuple[str, ...]) -> tuple[str, ...]:
    present = [voice for voice in voices if voice in espeak_voices()]
    if not present:
        raise RuntimeError(f"espeak-ng has none of the voices {list(voices)}")
    return tuple(present)


class _Speech:
    """espeak-ng renderings cached for the duration of one build."""

    def __init__(self):
        self.cache: dict[tuple, np.ndarray] = {}

    def __call__(self, text: str, voice: str, variant: str, pitch: int, speed: int) -> np.ndarray:
        key = (text, voice, variant, pitch, speed)
        if key not in self.cache:
            self.cache[key] = speak(text, f"{voice}+{variant}", pitch=pitch, speed=speed)
        return self.cache[key]


# ---------------------------------------------------------------------------------------------
# Signal helpers


def frame_rms(audio: np.ndarray, frame: int = FRAME) -> np.ndarray:
    count = len(audio) // frame
    frames = np.asarray(audio[: count * frame], dtype=np.float64).reshape(count, frame)
    return np.sqrt(np.mean(frames**2, axis=1))


def active_span(audio: np.ndarray, *, lead_db: float, tail_db: float) -> tuple[int, int]:
    """Samples [start, end) from the first 10 ms frame within ``lead_db`` of the loudest frame to the
    end of the last frame within ``tail_db`` of it (both on the 10 ms grid)."""
    rms = frame_rms(audio)
    if len(rms) == 0 or rms.max() <= 0:
        raise RuntimeError("a rendered sound is silent")
    top = rms.max()
    first = int(np.argmax(rms >= top * 10 ** (lead_db / 20)))
    last = int(len(rms) - 1 - np.argmax(rms[::-1] >= top * 10 ** (tail_db / 20)))
    return first * FRAME, (last + 1) * FRAME


def trim(audio: np.ndarray, *, lead_db: float = -40.0, tail_db: float = -40.0) -> np.ndarray:
    """The active part of a rendering, with 2 ms / 5 ms fades so the cuts do not click."""
    start, end = active_span(audio, lead_db=lead_db, tail_db=tail_db)
    sound = np.array(audio[start:end], dtype=np.float64)
    fade_in, fade_out = min(2 * MS, len(sound)), min(5 * MS, len(sound))
    sound[:fade_in] *= np.linspace(0.0, 1.0, fade_in, endpoint=False) + 1.0 / max(fade_in, 1)
    sound[len(sound) - fade_out :] *= np.linspace(1.0, 0.0, fade_out, endpoint=False)
    return sound


def background(samples: int, rng: np.random.Generator, rms: float) -> np.ndarray:
    """Coloured noise (power ~ 1/f^a, a in [0.7, 1.6], nothing below 30 Hz) at ``rms``."""
    exponent = rng.uniform(0.7, 1.6)
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequency = np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE)
    shape = np.zeros_like(frequency)
    audible = frequency >= 30.0
    shape[audible] = (frequency[audible] / 1000.0) ** (-exponent / 2)
    noise = np.fft.irfft(spectrum * shape, samples)
    return noise * (rms / max(float(np.sqrt(np.mean(noise**2))), 1e-12))


def place(sound: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``sound`` at a random offset in ``samples`` of silence, or a random window of it if longer."""
    if len(sound) >= samples:
        start = int(rng.integers(0, len(sound) - samples + 1))
        return np.array(sound[start : start + samples], dtype=np.float64)
    out = np.zeros(samples)
    offset = int(rng.integers(0, samples - len(sound) + 1))
    out[offset : offset + len(sound)] = sound
    return out


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _balanced(labels, count: int, rng: np.random.Generator) -> list:
    """``count`` labels, each as often as possible, in random order."""
    return [labels[i] for i in rng.permutation(np.resize(np.arange(len(labels)), count))]


def _clip_counts(table: dict, size: str) -> dict[str, int]:
    if size not in table:
        raise ValueError(f"size must be one of {sorted(table)}, got {size!r}")
    return dict(zip(SPLITS, table[size]))


def _scene_writer(root: Path, name: str, size: str, labels, seconds: float, description: str) -> TaskWriter:
    return TaskWriter(
        root,
        name,
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="trainvaltest",
        splits=list(SPLITS),
        evaluation=["top1_acc"],
        sample_duration=seconds,
        labels=list(labels),
        description=description,
    )


# ---------------------------------------------------------------------------------------------
# spoken_words


@suite_task(
    name="spoken_words",
    stands_in_for="Speech Commands v2 (HEAR speech_commands 5h/full)",
    kind="scene, multiclass",
    labels="one of 10 command words (yes, no, up, down, left, right, on, off, stop, go), _silence_ or _unknown_",
    metric="top1_acc",
)
def build_spoken_words(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """1 s clips of one word at a random offset in quiet noise; file names start with the voice variant."""
    counts = _clip_counts(WORD_CLIPS, size)
    labels = (*COMMAND_WORDS, SILENCE, UNKNOWN)
    writer = _scene_writer(
        root,
        "spoken_words",
        size,
        labels,
        1.0,
        "Stands in for HEAR Speech Commands: a command word, another word or silence in 1 s, spoken by "
        "espeak-ng voices; valid and test voice variants are unseen in training.",
    )
    voices = partition_voices(distinct_variants(), rng)
    accents = _available(ENGLISH_ACCENTS)
    say = _Speech()
    index = 0
    for split in SPLITS:
        for label in _balanced(labels, counts[split], rng):
            noise_rms = _log_uniform(rng, 0.001, 0.01)
            clip = background(SAMPLE_RATE, rng, noise_rms)
            variant = "none"
            if label != SILENCE:
                word = label if label != UNKNOWN else str(rng.choice(OTHER_WORDS))
                variant = str(rng.choice(voices[split]))
                accent = str(rng.choice(accents))
                pitch, speed = int(rng.integers(25, 80)), int(rng.integers(120, 221))
                sound = trim(say(word, accent, variant, pitch, speed))
                sound *= rng.uniform(0.25, 0.9) / max(float(np.abs(sound).max()), 1e-9)
                clip += place(sound, SAMPLE_RATE, rng)
            writer.add(split, f"{variant}-{index:05d}.wav", clip, [label])
            index += 1
    return writer


# ---------------------------------------------------------------------------------------------
# spoken_language


@suite_task(
    name="spoken_language",
    stands_in_for="VoxLingua107 top 10 (HEAR vox_lingua_top10)",
    kind="scene, multiclass",
    labels="language of a phrase: de, en, es, fr, it, nl, pl, pt, ru, tr",
    metric="top1_acc",
)
def build_spoken_language(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """3 s clips of a phrase of 3-7 words in one language; file names start with the voice variant."""
    counts = _clip_counts(LANGUAGE_CLIPS, size)
    labels = tuple(sorted(LANGUAGES))
    seconds = 3.0
    samples = int(seconds * SAMPLE_RATE)
    writer = _scene_writer(
        root,
        "spoken_language",
        size,
        labels,
        seconds,
        "Stands in for HEAR VoxLingua107 top 10: the language (of 10) of a 3 s phrase spoken by espeak-ng; "
        "valid and test voice variants are unseen in training.",
    )
    voices = partition_voices(distinct_variants(), rng)
    dialects = {language: _available(LANGUAGES[language][0]) for language in labels}
    words = {language: LANGUAGES[language][1].split() for language in labels}
    index = 0
    for split in SPLITS:
        for language in _balanced(labels, counts[split], rng):
            phrase = " ".join(str(w) for w in rng.choice(words[language], size=int(rng.integers(3, 8))))
            variant = str(rng.choice(voices[split]))
            voice = str(rng.choice(dialects[language]))
            pitch, speed = int(rng.integers(25, 80)), int(rng.integers(120, 211))
            sound = trim(speak(phrase, f"{voice}+{variant}", pitch=pitch, speed=speed))
            sound *= rng.uniform(0.25, 0.9) / max(float(np.abs(sound).max()), 1e-9)
            clip = place(sound, samples, rng) + background(samples, rng, _log_uniform(rng, 0.001, 0.01))
            writer.add(split, f"{variant}-{index:05d}.wav", clip, [language])
            index += 1
    return writer


# ---------------------------------------------------------------------------------------------
# speaker_count


@suite_task(
    name="speaker_count",
    stands_in_for="LibriCount (HEAR libricount)",
    kind="scene, multiclass",
    labels='number of voices talking at once: "0" (background noise only) to "4"',
    metric="top1_acc",
)
def build_speaker_count(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """3 s clips mixing 0-4 different voices, each talking throughout; voices partitioned by split."""
    counts = _clip_counts(COUNT_CLIPS, size)
    labels = ("0", "1", "2", "3", "4")
    seconds = 3.0
    samples = int(seconds * SAMPLE_RATE)
    writer = _scene_writer(
        root,
        "speaker_count",
        size,
        labels,
        seconds,
        "Stands in for HEAR LibriCount: how many espeak-ng voices (0-4) talk at once in 3 s of background "
        "noise; valid and test voice variants are unseen in training.",
    )
    voices = partition_voices(distinct_variants(), rng)
    per_voice = COUNT_MONOLOGUES[size]
    monologues: dict[tuple[str, int], np.ndarray] = {}

    def monologue(variant: str, which: int) -> np.ndarray:
        """Continuous speech of one voice, at least 3.5 s long (rendered on first use)."""
        key = (variant, which)
        if key not in monologues:
            text = " ".join(str(w) for w in rng.choice(CHATTER, size=int(rng.integers(12, 17))))
            pitch, speed = int(rng.integers(20, 85)), int(rng.integers(150, 231))
            sound = trim(speak(text, f"{rng.choice(ENGLISH_ACCENTS[:2])}+{variant}", pitch=pitch, speed=speed))
            sound /= max(float(np.sqrt(np.mean(sound**2))), 1e-9)
            while len(sound) < 3.5 * SAMPLE_RATE:
                sound = np.concatenate([sound, sound])
            monologues[key] = sound
        return monologues[key]

    index = 0
    for split in SPLITS:
        for label in _balanced(labels, counts[split], rng):
            clip = np.zeros(samples)
            speakers = [str(v) for v in rng.choice(voices[split], size=int(label), replace=False)]
            for variant in speakers:
                sound = monologue(variant, int(rng.integers(per_voice)))
                clip += place(sound, samples, rng) * 10 ** (rng.uniform(-8.0, 0.0) / 20)
            if speakers:  # the mix has a random loudness, whatever the count
                clip *= rng.uniform(0.04, 0.12) / float(np.sqrt(np.mean(clip**2)))
            clip += background(samples, rng, _log_uniform(rng, 0.001, 0.006))
            writer.add(split, f"mix-{index:05d}.wav", clip, [label])
            index += 1
    return writer


# ---------------------------------------------------------------------------------------------
# office_events


def _gm_office_notes(label: str, start: float, rng: np.random.Generator) -> list[tuple]:
    """MIDI notes ``(channel, program, pitch, start_s, end_s, velocity)`` of one office sound."""
    notes = []
    if label == "phone":  # GM 125 Telephone Ring (program 124), one or two rings
        pitch, velocity, t = int(rng.integers(64, 85)), int(rng.integers(80, 121)), start
        for _ in range(int(rng.integers(1, 3))):
            length = rng.uniform(0.4, 1.0)
            notes.append((0, 124, pitch, t, t + length, velocity))
            t += length + rng.uniform(0.2, 0.4)
    elif label == "knock":  # wood blocks, 2-4 knocks
        pitch, t = int(rng.choice([76, 77])), start
        for _ in range(int(rng.integers(2, 5))):
            notes.append((9, 0, pitch, t, t + 0.08, int(rng.integers(80, 128))))
            t += rng.uniform(0.12, 0.25)
    elif label == "keys":  # tambourine and muted triangle jingles
        t = start
        for _ in range(int(rng.integers(3, 8))):
            notes.append((9, 0, int(rng.choice([54, 54, 80])), t, t + 0.05, int(rng.integers(40, 101))))
            t += rng.uniform(0.03, 0.12)
    elif label == "doorslam":  # kick and low tom together
        velocity = int(rng.integers(100, 128))
        notes.append((9, 0, int(rng.choice([35, 36])), start, start + 0.2, velocity))
        notes.append((9, 0, int(rng.choice([41, 43, 45])), start, start + 0.2, velocity))
    elif label == "keyboard":  # side stick or claves, typing rhythm
        pitch, t = int(rng.choice([37, 75])), start
        for _ in range(int(rng.integers(5, 13))):
            notes.append((9, 0, pitch, t, t + 0.03, int(rng.integers(30, 91))))
            t += rng.uniform(0.06, 0.18)
    else:
        raise ValueError(label)
    return notes


def _office_sounds(per_class: int, variants: tuple[str, ...], rng: np.random.Generator) -> dict[str, list]:
    """``per_class`` distinct trimmed recordings of each office class (for one split)."""
    slot = 4.0  # seconds per GM sound in the shared rendering; every one has died away by then
    order = [label for label in GM_OFFICE for _ in range(per_class)]
    notes = [note for i, label in enumerate(order) for note in _gm_office_notes(label, i * slot + 0.05, rng)]
    rendering = render_midi(note_midi(notes))
    needed = int(len(order) * slot * SAMPLE_RATE)
    rendering = np.pad(rendering, (0, max(0, needed - len(rendering))))
    sounds: dict[str, list] = {label: [] for label in OFFICE_LABELS}
    width = int(slot * SAMPLE_RATE)
    for i, label in enumerate(order):
        sounds[label].append(trim(rendering[i * width : (i + 1) * width], lead_db=-20.0, tail_db=-35.0))
    for label in ("speech", "laughter"):
        for _ in range(per_class):
            variant = str(rng.choice(variants))
            if label == "speech":
                text = " ".join(str(w) for w in rng.choice(CHATTER, size=int(rng.integers(2, 5))))
                pitch, speed = int(rng.integers(25, 80)), int(rng.integers(130, 211))
            else:
                text = str(rng.choice(LAUGHS))
                pitch, speed = int(rng.integers(55, 95)), int(rng.integers(150, 261))
            voice = f"{rng.choice(ENGLISH_ACCENTS[:2])}+{variant}"
            sounds[label].append(trim(speak(text, voice, pitch=pitch, speed=speed), lead_db=-20.0, tail_db=-35.0))
    return sounds


@suite_task(
    name="office_events",
    stands_in_for="DCASE 2016 task 2 office sound event detection (HEAR dcase2016_task2)",
    kind="event, multilabel",
    labels="office sounds with onset and offset: doorslam, keyboard, keys, knock, laughter, phone, speech",
    metric="event_onset_200ms_fms (segment_1s_er)",
)
def build_office_events(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """10 s clips of coloured noise with 2-5 non-overlapping office sounds at exact, whole-ms times.

    Each sound is cut from its rendering where it rises within 20 dB of its loudest 10 ms frame and
    ends where its tail falls 35 dB below it; its label spans exactly the samples it was placed on.
    Recordings and voice variants are partitioned by split.
    """
    counts = _clip_counts(OFFICE_CLIPS, size)
    seconds, samples = 10.0, 10 * SAMPLE_RATE
    writer = TaskWriter(
        root,
        "office_events",
        size,
        embedding_type="event",
        prediction_type="multilabel",
        split_mode="trainvaltest",
        splits=list(SPLITS),
        evaluation=["event_onset_200ms_fms", "segment_1s_er"],
        sample_duration=seconds,
        labels=list(OFFICE_LABELS),
        description="Stands in for HEAR DCASE 2016 task 2: office sound events (GM percussion and telephone, "
        "espeak-ng speech and laughter) at exact times in 10 s of background noise.",
    )
    voices = partition_voices(distinct_variants(), rng)
    instances = dict(zip(SPLITS, OFFICE_INSTANCES[size]))
    first_ms, gap_ms, total_ms = 200, 250, int(seconds * 1000)
    index = 0
    for split in SPLITS:
        pool = _office_sounds(instances[split], voices[split], rng)
        for _ in range(counts[split]):
            noise_rms = _log_uniform(rng, 0.002, 0.008)
            clip = background(samples, rng, noise_rms)
            chosen = []
            for _ in range(int(rng.integers(2, 6))):
                label = str(rng.choice(OFFICE_LABELS))
                sound = pool[label][int(rng.integers(len(pool[label])))]
                chosen.append((label, sound))
            while sum(len(s) for _, s in chosen) // MS + first_ms + gap_ms * (len(chosen) - 1) > total_ms:
                chosen.pop()
            lengths = [len(sound) // MS for _, sound in chosen]
            slack = total_ms - first_ms - sum(lengths) - gap_ms * (len(chosen) - 1)
            shifts = np.sort(rng.integers(0, slack + 1, size=len(chosen)))
            events, cursor = [], first_ms
            for (label, sound), length, shift in zip(chosen, lengths, shifts):
                start = cursor + int(shift)
                level = noise_rms * 10 ** (rng.uniform(15.0, 30.0) / 20)  # event-to-background ratio (RMS)
                clip[start * MS : start * MS + len(sound)] += sound * (level / float(np.sqrt(np.mean(sound**2))))
                events.append({"label": label, "start": float(start), "end": float(start + length)})
                cursor += length + gap_ms
            writer.add(split, f"office-{index:05d}.wav", clip, events)
            index += 1
    return writer
