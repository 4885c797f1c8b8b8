"""Speech tasks of the recorded suite: sentences, words, numbers and letters that people recorded for three
children's programs, read where Debian installs them.

* ``spoken_language_recorded`` (VoxLingua107 top 10): the language of 2 s of one recording;
* ``speaker_count_recorded`` (LibriCount): how many people (1-4) speak at once in 2 s.

A *voice* is one package's recordings of one language by one contributor or team, as far as the package's
credits and the files' ARTIST tags say:

* tuxpaint-stamps-default: the spoken stamp descriptions of a language (``*_desc_<lang>.ogg``; ``*_desc.ogg``
  is English), and apart from them its spoken numbers and letters (``symbols/math``, ``symbols/alphabets``:
  ``*_<lang>.ogg``), which its changelog credits to other people (Schoolsplay, a contributor's child) than
  the descriptions (Google Code-in students, translators);
* ktuberling-data: the words of a language (``sounds/<lang>/``);
* klettres-data: the letters and syllables of a language (``<lang>/alpha/``, ``<lang>/syllab/``).

Regional folders count as their language (``en_GB``, ``pt_BR``, ``sr@latin``). Voices whose files share an
ARTIST tag are one voice (Andrius Jurkus recorded tuxpaint's Lithuanian descriptions and its numbers). A file
present twice (the same bytes: ``sr/`` and ``sr@latin/``, one description under two stamps) counts once.
ktuberling's Norwegian Nynorsk words are left out: their ARTIST (Karl Ove Hufthammer / Øystein
Steffensen-Alværvik) is the credit of klettres' Nynorsk letters, which say they were made with the CereVoice
text-to-speech service. Each task puts every voice in one fold only: no test speaker is ever a training speaker.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..audio import load_audio
from . import debian
from .registry import suite_task
from .speech import _balanced, place, trim
from .synth import SAMPLE_RATE
from .writer import TaskWriter

TUXPAINT, KTUBERLING, KLETTRES = "tuxpaint-stamps-default", "ktuberling-data", "klettres-data"
PACKAGES = (TUXPAINT, KTUBERLING, KLETTRES)
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
KTUBERLING_SOUNDS = Path("/usr/share/ktuberling/sounds")
KLETTRES_LANGUAGES = Path("/usr/share/klettres")
#: (package, folder) of recordings a speech synthesiser made (module docstring).
SYNTHESISED = {(KTUBERLING, "nn")}
#: A voice with fewer distinct recordings is left out (tuxpaint's 5 Belarusian numbers, 6 Malayalam descriptions).
MIN_RECORDINGS = 8
FOLDS = ["fold00", "fold01", "fold02"]
SECONDS = 2.0
#: Clips of each language in each fold.
LANGUAGE_CLIPS = {"ci": 3, "full": 24}
#: Clips of each count in each fold.
COUNT_CLIPS = {"ci": 9, "full": 60}
COUNTS = ("1", "2", "3", "4")

_LOCALE = r"[a-z]{2,3}(?:_[A-Za-z]{2,4})?"
_DESCRIPTION = re.compile(rf"_desc(?:_({_LOCALE}))?\.ogg$")
_NUMBER_OR_LETTER = re.compile(rf"_({_LOCALE})\.ogg$")


@dataclass(frozen=True)
class Voice:
    """One package's recordings of one language by one contributor or team (module docstring)."""

    id: str  # "<package>/<collection>/<language>"
    package: str
    collection: str  # "descriptions", "numbers and letters", "words", "letters and syllables" (joined by "+")
    language: str
    files: tuple[Path, ...]  # distinct recordings, sorted
    source_files: tuple[str, ...]  # each file's path in the package's source tree, as its copyright file names it
    installed: str  # where the files are, as path patterns

    def provenance(self) -> dict[str, str]:
        """Package, version, licence (of every file of the voice) and installed path, with the voice's id."""
        licences = " and ".join(sorted({debian.licence(self.package, name) for name in self.source_files}))
        version = debian.package_version(self.package)
        return {"id": self.id, **debian.Provenance(self.package, version, licences, self.installed).as_dict()}


def _recordings() -> Iterator[tuple[str, str, str, Path, str, str]]:
    """(package, collection, folder's language code, installed file, path in the source tree, installed pattern)
    of every spoken recording of the three packages."""
    for path in sorted(TUXPAINT_STAMPS.rglob("*.ogg")):
        relative = path.relative_to(TUXPAINT_STAMPS)
        description = _DESCRIPTION.search(path.name)
        if description:
            code = description.group(1) or "en"
            pattern = f"{TUXPAINT_STAMPS}/**/*_desc{'_' + code if description.group(1) else ''}.ogg"
            yield TUXPAINT, "descriptions", code, path, f"stamps/{relative}", pattern
        elif relative.parts[:2] in (("symbols", "math"), ("symbols", "alphabets")):
            number_or_letter = _NUMBER_OR_LETTER.search(path.name)
            if number_or_letter:
                code = number_or_letter.group(1)
                pattern = f"{TUXPAINT_STAMPS}/symbols/{relative.parts[1]}/**/*_{code}.ogg"
                yield TUXPAINT, "numbers and letters", code, path, f"stamps/{relative}", pattern
    for folder in sorted(p for p in KTUBERLING_SOUNDS.iterdir() if p.is_dir()):
        if (KTUBERLING, folder.name) not in SYNTHESISED:
            for path in sorted(folder.iterdir()):
                yield KTUBERLING, "words", folder.name, path, f"sounds/{folder.name}/{path.name}", f"{folder}/"
    for folder in sorted(KLETTRES_LANGUAGES.glob("*/sounds.xml")):
        for path in sorted(folder.parent.glob("*/*.ogg")):
            source = f"data/langs/{path.relative_to(KLETTRES_LANGUAGES)}"
            yield KLETTRES, "letters and syllables", folder.parent.name, path, source, f"{path.parent}/"


def ogg_artists(data: bytes) -> set[str]:
    """The ARTIST tags of an Ogg Vorbis or Opus file, from its comment header; none for other files."""
    for magic in (b"\x03vorbis", b"OpusTags"):
        at = data.find(magic, 0, 4096)
        if at >= 0:
            break
    else:
        return set()
    artists = set()
    try:
        (vendor,) = struct.unpack_from("<I", data, at + len(magic))
        position = at + len(magic) + 4 + vendor
        (count,) = struct.unpack_from("<I", data, position)
        position += 4
        for _ in range(min(count, 1000)):
            (length,) = struct.unpack_from("<I", data, position)
            key, _, value = data[position + 4 : position + 4 + length].partition(b"=")
            position += 4 + length
            if key.upper() == b"ARTIST":
                artists.add(value.decode("utf-8", "replace"))
    except struct.error:  # a header cut short: the tags read so far
        pass
    return artists


def _person(artist: str) -> str:
    """An ARTIST tag as a name to compare: "Martha Schou!" and "martha schou" are one person."""
    return " ".join(re.sub(r"\W+", " ", artist).split()).casefold()


@functools.cache
def voices() -> tuple[Voice, ...]:
    """Every voice of the three packages with at least :data:`MIN_RECORDINGS` distinct recordings, by id."""
    groups: dict[tuple[str, str, str], list[tuple[Path, str, str]]] = defaultdict(list)
    people: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    seen: set[str] = set()
    for package, collection, code, path, source, pattern in _recordings():
        data = path.read_bytes()
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        key = (package, collection, re.split(r"[_@]", code)[0].lower())
        groups[key].append((path, source, pattern))
        people[key] |= {_person(artist) for artist in ogg_artists(data)} - {""}
    merged = _merge_by_person(list(groups), people)
    found = []
    for keys in merged:
        packages, languages = {k[0] for k in keys}, {k[2] for k in keys}
        if len(packages) > 1 or len(languages) > 1:
            raise RuntimeError(f"one person's ARTIST tag in several packages or languages: {sorted(keys)}")
        files = sorted(item for key in keys for item in groups[key])
        if len(files) < MIN_RECORDINGS:
            continue
        collection = "+".join(sorted(k[1] for k in keys))
        found.append(
            Voice(
                id=f"{keys[0][0]}/{collection}/{keys[0][2]}",
                package=keys[0][0],
                collection=collection,
                language=keys[0][2],
                files=tuple(path for path, _, _ in files),
                source_files=tuple(source for _, source, _ in files),
                installed=", ".join(sorted({pattern for _, _, pattern in files})),
            )
        )
    return tuple(sorted(found, key=lambda voice: voice.id))


def _merge_by_person(keys: list, people: dict) -> list[list]:
    """The groups of ``keys`` that share a person (union-find over ARTIST names), each sorted."""
    parent = {key: key for key in keys}

    def root(key):
        while parent[key] != key:
            key = parent[key]
        return key

    first_with: dict[str, tuple] = {}
    for key in sorted(keys):
        for person in sorted(people[key]):
            if person in first_with:
                parent[root(key)] = root(first_with[person])
            else:
                first_with[person] = key
    merged: dict[tuple, list] = defaultdict(list)
    for key in sorted(keys):
        merged[root(key)].append(key)
    return list(merged.values())


class _Utterances:
    """Recordings decoded at 16 kHz with their silence trimmed, each once per build."""

    def __init__(self):
        self.cache: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self.cache:
            self.cache[path] = trim(load_audio(path, SAMPLE_RATE))
        return self.cache[path]


def _fold_writer(root: Path, name: str, size: str, labels, description: str) -> TaskWriter:
    return TaskWriter(
        root,
        name,
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="new_split_kfold",
        splits=FOLDS,
        evaluation=["top1_acc"],
        sample_duration=SECONDS,
        labels=list(labels),
        description=description,
    )


# ---------------------------------------------------------------------------------------------
# spoken_language_recorded


def language_voices() -> dict[str, list[Voice]]:
    """The voices of each language recorded by at least as many voices as there are folds."""
    by_language: dict[str, list[Voice]] = defaultdict(list)
    for voice in voices():
        by_language[voice.language].append(voice)
    return {language: found for language, found in sorted(by_language.items()) if len(found) >= len(FOLDS)}


def language_folds(by_language: dict[str, list[Voice]], per_fold: int, rng: np.random.Generator) -> dict[str, str]:
    """Voice id -> fold, every language in every fold, a voice in one fold only.

    Language by language (in random order), the assignment that leaves the fewest of its ``per_fold`` clips
    missing from a fold, and of those the one that puts each voice's collection where that collection is
    rarest so far: each fold then holds descriptions, numbers, words and letters of several languages, and
    the kind of recording (or the package that made it) cannot stand in for the language.
    """
    placed: Counter = Counter()  # (fold, collection) -> voices placed so far
    folds: dict[str, str] = {}
    for language in rng.permutation(sorted(by_language)):
        found = by_language[str(language)]
        options = [o for o in itertools.product(range(len(FOLDS)), repeat=len(found)) if len(set(o)) == len(FOLDS)]
        costs = [_cost(found, option, per_fold, placed) for option in options]
        best = options[min(rng.permutation(len(options)), key=lambda i: costs[i])]
        for voice, fold in zip(found, best):
            folds[voice.id] = FOLDS[fold]
            placed[fold, voice.collection] += 1
    return folds


def _cost(found: list[Voice], option: tuple[int, ...], per_fold: int, placed: Counter) -> tuple[int, int]:
    """(clips missing from the folds, voices already placed of the same fold and collection) of putting
    voice ``found[i]`` in fold ``option[i]``."""
    held: Counter = Counter()
    for voice, fold in zip(found, option):
        held[fold] += len(voice.files)
    missing = sum(max(0, per_fold - held[fold]) for fold in range(len(FOLDS)))
    return missing, sum(placed[fold, voice.collection] for voice, fold in zip(found, option))


def _round_robin(found: list[Voice], count: int, rng: np.random.Generator) -> list[tuple[Voice, Path]]:
    """Up to ``count`` recordings taken in turn from each voice (each voice's in random order)."""
    queues = [[voice.files[i] for i in rng.permutation(len(voice.files))] for voice in found]
    picked: list[tuple[Voice, Path]] = []
    for round_ in itertools.zip_longest(*queues):
        picked += [(voice, path) for voice, path in zip(found, round_) if path is not None]
        if len(picked) >= count:
            break
    return picked[:count]


@suite_task(
    name="spoken_language_recorded",
    stands_in_for="VoxLingua107 top 10 (HEAR vox_lingua_top10)",
    kind="scene, multiclass",
    labels="language of a recorded sentence, word, number or letter (each language recorded by 3+ voices)",
    metric="top1_acc",
    suite="recorded",
    packages=PACKAGES,
)
def build_spoken_language_recorded(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """2 s clips of one recording each (trimmed of silence, at a random place, a random level), three folds
    by voice: every language has a voice of its own in every fold, and no voice is in two folds."""
    per_fold = LANGUAGE_CLIPS[size]
    by_language = language_voices()
    samples = int(SECONDS * SAMPLE_RATE)
    writer = _fold_writer(
        root,
        "spoken_language_recorded",
        size,
        by_language,
        "Stands in for HEAR VoxLingua107 top 10: the language of 2 s of a sentence, word, number or letter "
        "recorded by real people for tuxpaint, ktuberling and klettres; folds by voice, so every test "
        "speaker is unseen in training.",
    )
    folds = language_folds(by_language, per_fold, rng)
    utterance = _Utterances()
    used: set[Voice] = set()
    index = 0
    for fold in FOLDS:
        for language, found in by_language.items():
            in_fold = [voice for voice in found if folds[voice.id] == fold]
            for voice, path in _round_robin(in_fold, per_fold, rng):
                sound = utterance(path)
                sound = sound * (rng.uniform(0.25, 0.9) / max(float(np.abs(sound).max()), 1e-9))
                writer.add(fold, f"speech-{index:05d}.wav", place(sound, samples, rng), [language], [voice.id])
                used.add(voice)
                index += 1
    writer.add_metadata(sources=[voice.provenance() for voice in sorted(used, key=lambda v: v.id)])
    return writer


# ---------------------------------------------------------------------------------------------
# speaker_count_recorded


def deal_folds(found: tuple[Voice, ...], rng: np.random.Generator) -> dict[str, str]:
    """Voice id -> fold: collection by collection, each's voices in random order, dealt in turn to the folds,
    so every fold has about as many voices of each kind of recording."""
    by_collection: dict[str, list[Voice]] = defaultdict(list)
    for voice in found:
        by_collection[voice.collection].append(voice)
    order = [group[i] for _, group in sorted(by_collection.items()) for i in rng.permutation(len(group))]
    return {voice.id: FOLDS[i % len(FOLDS)] for i, voice in enumerate(order)}


@suite_task(
    name="speaker_count_recorded",
    stands_in_for="LibriCount (HEAR libricount)",
    kind="scene, multiclass",
    labels='number of people speaking at once: "1" to "4", one recording each',
    metric="top1_acc",
    suite="recorded",
    packages=PACKAGES,
)
def build_speaker_count_recorded(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """2 s clips mixing one recording of each of 1-4 voices, each at a random place and a level within 6 dB
    of the others, the mix at a random loudness; three folds by voice. The voices of a mix speak different
    languages: two packages' voices of one language may be one person, whom no credit names twice."""
    per_count = COUNT_CLIPS[size]
    found = voices()
    samples = int(SECONDS * SAMPLE_RATE)
    writer = _fold_writer(
        root,
        "speaker_count_recorded",
        size,
        COUNTS,
        "Stands in for HEAR LibriCount: how many people (1-4) speak at once in 2 s, each saying one sentence, "
        "word, number or letter recorded for tuxpaint, ktuberling or klettres; folds by voice.",
    )
    folds = deal_folds(found, rng)
    utterance = _Utterances()
    used: set[Voice] = set()
    index = 0
    for fold in FOLDS:
        pool = [voice for voice in found if folds[voice.id] == fold]
        queues: dict[str, list[Path]] = {}
        for label in _balanced(COUNTS, per_count * len(COUNTS), rng):
            clip = np.zeros(samples)
            speakers: list[Voice] = []
            for i in rng.permutation(len(pool)):
                if len(speakers) < int(label) and pool[i].language not in {v.language for v in speakers}:
                    speakers.append(pool[i])
            for voice in speakers:
                if not queues.get(voice.id):  # each voice's recordings in random order, again when all are used
                    queues[voice.id] = [voice.files[i] for i in rng.permutation(len(voice.files))]
                sound = utterance(queues[voice.id].pop())
                level = 10 ** (rng.uniform(-6.0, 0.0) / 20) / max(float(np.sqrt(np.mean(sound**2))), 1e-9)
                clip += place(sound * level, samples, rng)
            clip *= rng.uniform(0.04, 0.12) / float(np.sqrt(np.mean(clip**2)))
            writer.add(fold, f"mix-{index:05d}.wav", clip, [label], [voice.id for voice in speakers])
            used.update(speakers)
            index += 1
    writer.add_metadata(sources=[voice.provenance() for voice in sorted(used, key=lambda v: v.id)])
    return writer
