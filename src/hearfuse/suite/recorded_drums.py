"""Drum tasks of the recorded suite, from the real drum-kit recordings Debian's ``hydrogen-drumkits`` ships.

Each kit's ``drumkit.xml`` names its instruments and their sample files (one per velocity layer). A
fixed, ordered list of rules (:data:`NAME_RULES`) maps an instrument's name to one of eight classes or
skips it with a stated reason; the first rule that matches wins. Two tasks use the classes:

* ``drum_instrument_recorded``: which class a single hit is (1 s clips), in 3 folds;
* ``drum_onsets_recorded``: onsets and offsets of every hit in 6 s of random rhythms played on one kit.

The unit of leakage is the kit's maker (its copyright holder): one maker's kits can share recordings
(the hand clap of Glen MacArthur's "Gimme A Hand" and "The Black Pearl" is one recording), so all of a
maker's kits lie in one fold or split, and a kit is never in two. Every random choice comes from the
builder's generator; which maker goes where does not depend on it (see :func:`assign_makers`).
"""

from __future__ import annotations

import functools
import itertools
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from ..audio import resample
from .debian import package_version, provenance
from .registry import suite_task
from .speech import MS, trim
from .synth import SAMPLE_RATE
from .writer import TaskWriter

PACKAGE = "hydrogen-drumkits"
KITS_DIR = Path("/usr/share/hydrogen/data/drumkits")

LABELS = ("kick", "snare", "closed_hihat", "open_hihat", "tom", "crash", "ride", "clap")
UNRECOGNISED = "no rule names it"

#: ``(pattern, label, reason)``: the first pattern found (``re.search``) in the lower-cased instrument name
#: decides; ``label`` None skips the instrument for ``reason``. Every name of every installed kit is
#: covered by a rule before the catch-all (tested).
NAME_RULES: tuple[tuple[str, str | None, str], ...] = (
    (r"^\s*$|^\d+$|^sample: |^[a-g]#?\d - *$", None, "no instrument named (empty slot, number, note or file name)"),
    (r"kick|bass ?drum", "kick", ""),
    (r"stick|rim ?click", None, "cross-stick or sticks: a click, not one of the classes"),
    (r"splash|china|cymbal", None, "a cymbal other than crash or ride (splash, china, unnamed)"),
    (
        r"conga|bongo|cajon|djembe|sangban|dununba|kenkeni|maraca|tambourine|agogo|clave|woodblock"
        r"|waterglass|finger|whistle|cowbell",
        None,
        "hand or auxiliary percussion, in too few makers' kits for a class of its own",
    ),
    (r"zap|\bfx\b|click|\bdrum \d", None, "an effect or a drum the name does not identify"),
    (r"roll", None, "a roll, not a single hit"),
    (r"pedal|\bpd\b|semi|swish|choke", None, "a hi-hat played neither closed nor open (pedal, half-open, swish)"),
    (r"bell|cup", None, "a cymbal's bell, which sounds unlike its bow"),
    (r"crash.*ride|ride.*crash", None, "a crash/ride cymbal: either class"),
    # "redo": redoblante, Rioplatense Spanish for snare drum (ColomboAcousticDrumkit's "redo super opaco")
    (r"snare|\bredo\b", "snare", ""),
    (r"^(?=.*\b(hat|hh)\b).*\b(closed|cl)\b", "closed_hihat", ""),
    (r"\bohh\b|^(?=.*\b(hat|hh)\b).*\b(open|opened|op)\b", "open_hihat", ""),
    (r"\b(hat|hh)\b", None, "a hi-hat the name does not say is closed or open"),
    (r"\btom", "tom", ""),
    (r"crash", "crash", ""),
    (r"ride", "ride", ""),
    (r"clap", "clap", ""),
    (r"", None, UNRECOGNISED),
)

#: Each installed kit's maker, as the package's copyright file names its holder; kits that share a
#: holder share a ``Files`` stanza there (tested).
MAKERS = {
    "Audiophob": "audiophob",
    "BJA_Pacific": "Luc Tunguay",
    "ColomboAcousticDrumkit": "Marcos Guglielmetti",
    "ElectricEmpireKit": "Artemiy Pavlov",
    "ForzeeStereo": "Vladimir Sadovnikov, Alexander Belokurov",
    "Gimme A Hand 1.0": "Glen MacArthur",
    "HardElectro1": "Artemiy Pavlov",
    "Millo-Drums_v.1": "Emiliano Grilli",
    "Millo_MultiLayered2": "Emiliano Grilli",
    "Millo_MultiLayered3": "Emiliano Grilli",
    "The Black Pearl 1.0": "Glen MacArthur",
    "VariBreaks": "Artemiy Pavlov",
    "circAfrique v4": "Jim Harney",
    "rumpf_kit_z01_h2": "Emanuel Rumpf",
}
#: Installed kit folders whose archive in the package's source tree has another name.
ARCHIVE_NAMES = {"circAfrique v4": "circAfrique"}

LEAD_DB, TAIL_DB = -30.0, -40.0
"""A sample sounds from the first 10 ms frame within 30 dB of its loudest frame to the end of the last
frame within 40 dB of it (its *audible part*); the rest is cut off."""
CHOKE_MS = 1000
"""No hit sounds longer: a longer one (cymbals, open hi-hats, low toms) is damped over its last 20 ms,
as a drummer chokes a cymbal, so that a class can be struck again within a 6 s clip after it fell silent."""


def classify(name: str | None) -> tuple[str | None, str]:
    """``(label, "")`` for an instrument name of a class, ``(None, reason)`` for one that is skipped."""
    for pattern, label, reason in NAME_RULES:
        if re.search(pattern, (name or "").strip().lower()):
            return label, reason
    raise AssertionError("the catch-all rule matches every name")


@dataclass(frozen=True)
class Layer:
    path: Path
    low: float  # velocity range the layer plays, in [0, 1]
    high: float
    gain: float  # the layer's gain times its instrument's gain and volume, as in drumkit.xml


@dataclass(frozen=True)
class Instrument:
    name: str
    label: str | None
    reason: str  # why it is skipped; "" for a labelled instrument
    layers: tuple[Layer, ...]


def installed_kits() -> list[str]:
    """The kits of :data:`MAKERS` that are installed (a missing package is one line naming the install)."""
    package_version(PACKAGE)
    return [kit for kit in sorted(MAKERS) if (KITS_DIR / kit / "drumkit.xml").is_file()]


@functools.cache
def read_kit(kit: str) -> tuple[Instrument, ...]:
    """Every instrument of a kit's ``drumkit.xml``, classified; layers whose file is not installed are left out."""
    root = ElementTree.parse(KITS_DIR / kit / "drumkit.xml").getroot()
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""

    def number(element, tag: str, default: float) -> float:
        text = element.findtext(namespace + tag)
        return float(text) if text else default

    instruments = []
    for element in root.iter(namespace + "instrument"):
        name = element.findtext(namespace + "name") or ""
        scale = number(element, "gain", 1.0) * number(element, "volume", 1.0)
        layers = [
            Layer(
                KITS_DIR / kit / file,
                number(layer, "min", 0.0),
                number(layer, "max", 1.0),
                scale * number(layer, "gain", 1.0),
            )
            for layer in element.iter(namespace + "layer")
            if (file := layer.findtext(namespace + "filename"))
        ]
        if not layers and element.findtext(namespace + "filename"):  # the older format: one sample, no layers
            layers = [Layer(KITS_DIR / kit / element.findtext(namespace + "filename"), 0.0, 1.0, scale)]
        label, reason = classify(name)
        installed = tuple(layer for layer in layers if layer.path.is_file())
        if label and not installed:
            label, reason = None, "no sample file of it is installed"
        instruments.append(Instrument(name, label, reason, installed if label else ()))
    return tuple(instruments)


def labelled_samples(kits: Sequence[str]) -> dict[Path, tuple[str, str]]:
    """Every sample file of a labelled instrument: ``{path: (kit, label)}`` (instruments that replay another's
    file, e.g. with a pitch shift, add nothing; pitch shifts are not applied)."""
    samples: dict[Path, tuple[str, str]] = {}
    for kit in kits:
        for instrument in read_kit(kit):
            for layer in instrument.layers:
                if samples.setdefault(layer.path, (kit, instrument.label)) != (kit, instrument.label):
                    raise ValueError(f"{layer.path} is played as {samples[layer.path]} and as {instrument.label}")
    return samples


def kit_provenance(kit: str):
    archive = ARCHIVE_NAMES.get(kit, kit)
    return provenance(PACKAGE, f"drumkits/{archive}.h2drumkit", KITS_DIR / kit)


def assign_makers(counts: dict[str, dict[str, int]], shares: Sequence[float]) -> dict[str, int]:
    """Each maker into one of ``len(shares)`` groups (folds or splits): every group holds every label, and the
    groups' sample counts are as close to ``shares`` of the total as that allows (least squares). All
    assignments are tried; of equal ones the first in maker order wins, so the result is fixed."""
    makers = sorted(counts)
    matrix = np.array([[counts[maker].get(label, 0) for label in LABELS] for maker in makers])
    target = np.asarray(shares) / np.sum(shares) * matrix.sum()
    best, best_cost = None, np.inf
    for groups in itertools.product(range(len(shares)), repeat=len(makers)):
        sums = np.zeros((len(shares), len(LABELS)), dtype=int)
        np.add.at(sums, list(groups), matrix)
        if (sums == 0).any():
            continue
        cost = float(((sums.sum(axis=1) - target) ** 2).sum())
        if cost < best_cost:
            best, best_cost = groups, cost
    if best is None:
        raise RuntimeError(f"no assignment of the makers {makers} to {len(shares)} groups holds every label in each")
    return dict(zip(makers, best))


def _counts(samples: dict[Path, tuple[str, str]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for kit, label in samples.values():
        per_label = counts.setdefault(MAKERS[kit], {})
        per_label[label] = per_label.get(label, 0) + 1
    return counts


class _Sounds:
    """Samples as the tasks play them, read once per build: mono, 16 kHz, cut to their audible part and
    to at most :data:`CHOKE_MS`."""

    def __init__(self):
        self.cache: dict[Path, np.ndarray] = {}

    def __call__(self, path: Path) -> np.ndarray:
        if path not in self.cache:
            audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            mono = resample(audio.mean(axis=1), rate, SAMPLE_RATE)
            sound = trim(mono, lead_db=LEAD_DB, tail_db=TAIL_DB)
            if len(sound) > CHOKE_MS * MS:
                sound = sound[: CHOKE_MS * MS]
                sound[-20 * MS :] *= np.linspace(1.0, 0.0, 20 * MS, endpoint=False)
            self.cache[path] = sound
        return self.cache[path]


def _metadata(writer: TaskWriter, kits_of: dict[str, list[str]]) -> None:
    """Provenance of every kit used and its maker (which kits each fold or split holds, the writer records
    from the clips' sources)."""
    used = sorted({kit for kits in kits_of.values() for kit in kits})
    writer.add_metadata(
        sources=[{"id": kit, **kit_provenance(kit).as_dict()} for kit in used],
        maker_of_source={kit: MAKERS[kit] for kit in used},
    )


def _kit_tag(kit: str) -> str:
    return f"kit{sorted(MAKERS).index(kit):02d}"


def _round_robin(rng: np.random.Generator, paths: list[Path], kit_of) -> list[Path]:
    """``paths`` shuffled, then one of each kit in turn, so that a short list still spreads over the kits."""
    seen: dict[str, int] = {}
    ranked = []
    for position, index in enumerate(rng.permutation(len(paths))):
        kit = kit_of(paths[index])
        seen[kit] = seen.get(kit, -1) + 1
        ranked.append((seen[kit], position, paths[index]))
    return [path for *_, path in sorted(ranked, key=lambda item: item[:2])]


def _level(rng: np.random.Generator, audio: np.ndarray, low_db: float, high_db: float) -> np.ndarray:
    """``audio`` with its peak at a random level: kits were recorded at different levels, which must not
    tell anything."""
    return audio * (10 ** (rng.uniform(low_db, high_db) / 20) / float(np.max(np.abs(audio))))


# --------------------------------------------------------------------------------------------
# Tasks

INSTRUMENT_FOLDS = 3
INSTRUMENT_CI_PER_LABEL = 4  # clips per label and fold at size ci; size full plays every sample once


@suite_task(
    name="drum_instrument_recorded",
    stands_in_for="Mridangam Stroke / Beijing Opera Percussion (single-stroke percussion classes, k-fold)",
    kind="scene, multiclass",
    labels=f"drum-kit instrument class of one recorded hit ({len(LABELS)} classes: {', '.join(LABELS)})",
    metric="top1_acc",
    suite="recorded",
    packages=(PACKAGE,),
)
def build_drum_instrument(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """One hit per 1 s clip, starting 0-100 ms in, peak at -20 to -1 dBFS, cut (10 ms fade) at the clip's end.

    Folds by maker (:func:`assign_makers`, equal shares): every fold holds every class, no kit or maker is
    in two folds. Size ci draws 4 clips per class and fold, the kits of a fold in turn; size full plays
    every sample file of a labelled instrument once.
    """
    duration = SAMPLE_RATE
    samples = labelled_samples(installed_kits())
    fold_of_maker = assign_makers(_counts(samples), [1] * INSTRUMENT_FOLDS)
    folds = [f"fold{k:02d}" for k in range(INSTRUMENT_FOLDS)]
    writer = TaskWriter(
        root,
        "drum_instrument_recorded",
        size,
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="new_split_kfold",
        splits=folds,
        evaluation=["top1_acc"],
        sample_duration=duration / SAMPLE_RATE,
        labels=list(LABELS),
        description="Stands in for Mridangam Stroke and Beijing Opera Percussion: which of 8 drum-kit "
        "instrument classes one recorded hit from hydrogen-drumkits is; folds by kit maker.",
    )
    sounds = _Sounds()
    chosen: dict[str, list[Path]] = {fold: [] for fold in folds}
    for fold_index, fold in enumerate(folds):
        for label in LABELS:
            paths = sorted(
                path
                for path, (kit, sample_label) in samples.items()
                if sample_label == label and fold_of_maker[MAKERS[kit]] == fold_index
            )
            if size == "ci":
                paths = _round_robin(rng, paths, lambda path: samples[path][0])[:INSTRUMENT_CI_PER_LABEL]
            chosen[fold] += paths
    index = 0
    for fold in folds:
        for path in chosen[fold]:
            kit, label = samples[path]
            sound = sounds(path)
            start = int(rng.integers(0, 101)) * MS
            clip = np.zeros(duration)
            piece = np.array(sound[: duration - start], dtype=np.float64)
            if len(sound) > len(piece):
                piece[-10 * MS :] *= np.linspace(1.0, 0.0, 10 * MS, endpoint=False)
            clip[start : start + len(piece)] = piece
            writer.add(
                fold, f"hit{index:05d}_{_kit_tag(kit)}.wav", _level(rng, clip, -20.0, -1.0), [label], sources=[kit]
            )
            index += 1
    _metadata(writer, {fold: [samples[path][0] for path in chosen[fold]] for fold in folds})
    return writer


ONSET_SPLITS = ("train", "valid", "test")
ONSET_SHARES = (0.6, 0.2, 0.2)
ONSET_FILES = {"ci": (24, 8, 8), "full": (160, 40, 40)}
ONSET_SECONDS = 6
ONSET_MIN_CLASSES = 4  # kits with fewer classes (Gimme A Hand: only its hand clap) play no sequences
REST_MS = 80
"""A class is struck again only this long after its last hit fell silent: with HEAR's event decoding
(frame-wise activity, median-filtered over 150 ms) each hit can then be found as an event of its own."""


@dataclass(frozen=True)
class Hit:
    """One placed hit: ``sound`` (a sample as :class:`_Sounds` cuts it) times ``gain`` from ``onset`` ms on."""

    label: str
    onset: int  # ms from the start of the clip
    sound: np.ndarray
    gain: float

    @property
    def end(self) -> int:
        return self.onset + len(self.sound) // MS


def drum_sequence(rng: np.random.Generator, kit: str, sounds, duration_ms: int, focus: str) -> list[Hit]:
    """A random rhythm played on one kit: 16th notes at 70-170 bpm from 100-400 ms in; ``focus`` and 2 or
    more other classes of the kit, each struck on a step with its own probability (5-30 %, at least once),
    0-6 ms late, but only once its last hit has been silent for :data:`REST_MS`. Each hit is any of the
    kit's instruments of its class, at a velocity of 0.25-1 that picks the velocity layer and scales it,
    as Hydrogen plays it. Hits of different classes overlap freely."""
    by_label: dict[str, list[Instrument]] = {}
    for instrument in read_kit(kit):
        if instrument.label:
            by_label.setdefault(instrument.label, []).append(instrument)
    others = [label for label in LABELS if label in by_label and label != focus]
    chosen = {focus, *map(str, rng.choice(others, size=int(rng.integers(2, len(others) + 1)), replace=False))}
    labels = [label for label in LABELS if label in chosen]
    step = 15000 / rng.uniform(70, 170)
    first = int(rng.integers(100, 401))
    steps = [round(first + k * step) for k in range(int((duration_ms - 250 - first) / step) + 1)]
    chance = {label: rng.uniform(0.05, 0.3) for label in labels}

    def strike(label: str, time: int) -> Hit:
        instrument = by_label[label][int(rng.integers(len(by_label[label])))]
        velocity = rng.uniform(0.25, 1.0)
        layer = min(instrument.layers, key=lambda x: max(x.low - velocity, velocity - x.high, 0.0))
        return Hit(label, time + int(rng.integers(0, 7)), sounds(layer.path), velocity * layer.gain)

    hits: list[Hit] = []
    free_at = dict.fromkeys(labels, 0)
    for time in steps:
        for label in labels:
            if rng.random() < chance[label] and time >= free_at[label]:
                hits.append(strike(label, time))
                free_at[label] = hits[-1].end + REST_MS
    for label in labels:
        if label not in {hit.label for hit in hits}:
            hits.append(strike(label, steps[int(rng.integers(len(steps)))]))
    return sorted(hits, key=lambda hit: (hit.onset, LABELS.index(hit.label)))


def render_hits(hits: Sequence[Hit], duration_ms: int) -> np.ndarray:
    """The hits mixed at their onsets, each cut off at the end of the clip."""
    mix = np.zeros(duration_ms * MS)
    for hit in hits:
        start = hit.onset * MS
        piece = hit.sound[: len(mix) - start]
        mix[start : start + len(piece)] += hit.gain * piece
    return mix


def hit_events(hits: Sequence[Hit], duration_ms: int) -> list[dict]:
    """HEAR events of the hits: each from its onset to the end of its sound (or of the clip)."""
    return [{"label": hit.label, "start": float(hit.onset), "end": float(min(hit.end, duration_ms))} for hit in hits]


@suite_task(
    name="drum_onsets_recorded",
    stands_in_for="MAESTRO 5h / DCASE 2016 task 2 (event onsets and offsets)",
    kind="event, multilabel",
    labels=f"onset and offset of every recorded drum hit ({len(LABELS)} classes: {', '.join(LABELS)})",
    metric="event_onset_50ms_fms (event_onset_offset_50ms_20perc_fms)",
    suite="recorded",
    packages=(PACKAGE,),
)
def build_drum_onsets(root: Path, size: str, rng: np.random.Generator) -> TaskWriter:
    """6 s clips of random rhythms on one kit (:func:`drum_sequence`) with overlapping hits at real levels,
    the clip's peak at -12 to -1 dBFS. Splits by maker (:func:`assign_makers`, shares 60/20/20), so valid and
    test kits are never heard in training; a split's n-th clip always plays class n mod 8 (every split holds
    every class), on a kit of the split that has it."""
    duration_ms = ONSET_SECONDS * 1000
    kits = [kit for kit in installed_kits() if len({i.label for i in read_kit(kit) if i.label}) >= ONSET_MIN_CLASSES]
    samples = labelled_samples(kits)
    split_of_maker = assign_makers(_counts(samples), ONSET_SHARES)
    writer = TaskWriter(
        root,
        "drum_onsets_recorded",
        size,
        embedding_type="event",
        prediction_type="multilabel",
        split_mode="trainvaltest",
        splits=list(ONSET_SPLITS),
        evaluation=["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
        sample_duration=float(ONSET_SECONDS),
        labels=list(LABELS),
        evaluation_params={"event_postprocessing_grid": {"median_filter_ms": [150.0], "min_duration": [50.0]}},
        description="Stands in for MAESTRO 5h and DCASE 2016 task 2: onsets and offsets of recorded drum hits "
        "(hydrogen-drumkits) in random rhythms; valid and test kits (by maker) unseen in training.",
    )
    sounds = _Sounds()
    kits_of: dict[str, list[str]] = {}
    index = 0
    for split_index, (split, count) in enumerate(zip(ONSET_SPLITS, ONSET_FILES[size])):
        own = [kit for kit in kits if split_of_maker[MAKERS[kit]] == split_index]
        kits_of[split] = []
        for k in range(count):
            focus = LABELS[k % len(LABELS)]
            having = [kit for kit in own if any(i.label == focus for i in read_kit(kit))]
            kit = having[int(rng.integers(len(having)))]
            hits = drum_sequence(rng, kit, sounds, duration_ms, focus)
            audio = _level(rng, render_hits(hits, duration_ms), -12.0, -1.0)
            writer.add(
                split, f"drums{index:05d}_{_kit_tag(kit)}.wav", audio, hit_events(hits, duration_ms), sources=[kit]
            )
            kits_of[split].append(kit)
            index += 1
    _metadata(writer, kits_of)
    return writer
