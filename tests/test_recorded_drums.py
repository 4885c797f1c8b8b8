"""The recorded drum tasks (hydrogen-drumkits): the name mapping covers every kit, licences and makers come
from the package's copyright file, HEAR layout, determinism, no kit or maker in two folds, and event
labels that are exactly where the hits were placed."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hearfuse.evaluation.tasks import load_task
from hearfuse.suite import debian
from hearfuse.suite import recorded_drums as drums
from hearfuse.suite.registry import SUITE
from hearfuse.suite.synth import MissingProgramError

from .conftest import count_task_clips

try:
    debian.package_version(drums.PACKAGE)
    MISSING = ""
except MissingProgramError as error:
    MISSING = str(error)
needs_kits = pytest.mark.skipif(bool(MISSING), reason=MISSING)

TASKS = ("drum_instrument_recorded", "drum_onsets_recorded")
MS = 16


def _build(root: Path, name: str, seed: int) -> Path:
    return SUITE[name].build(root, "ci", np.random.default_rng(seed)).finish({"seed": seed})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    if MISSING:
        pytest.skip(MISSING)
    root = tmp_path_factory.mktemp("drums")
    return {name: _build(root, name, 0) for name in TASKS}


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_name_rules_on_the_names_that_needed_a_decision():
    decided = {
        "Snare Rimshot (Pearl Free Floating Maple 14x3.5)": "snare",
        "redo super opaco": "snare",
        "c3 - bass drum 1": "kick",
        "BassDrum": "kick",
        "VariBreaks Hat 1 Cl": "closed_hihat",
        "Side OHH": "open_hihat",
        "Hi Hat Opened": "open_hihat",
        "tomhi2": "tom",
        "Pearl Tom Floor": "tom",
        "crash20inch--2": "crash",
        "Paiste Ride Flink": "ride",
        "Hand Clap": "clap",
        'Hi-Hat Pedal (Paiste Alpha Metal edge 14")': None,
        "Sabian Hat Semi-Open": None,
        "Hat Ring 1": None,
        "Side HH": None,
        "Ride Bell": None,
        "ride-cup": None,
        'Crash/Ride Bow (Paiste Rude Crash/Ride 18")': None,
        "Zildjian Splash Choke": None,
        "Rim Click (Pearl Free Floating Maple 14x3.5)": None,
        "Pearl Side Stick": None,
        "Snare Roll": None,
        "Cowbell": None,
        "VariBreaks Drum 1": None,
        "f#4 - ": None,
        "Sample: beats_01-10.flac": None,
        "17": None,
        None: None,
    }
    assert {name: drums.classify(name)[0] for name in decided} == decided
    assert drums.classify("a theremin") == (None, drums.UNRECOGNISED)


@needs_kits
def test_every_instrument_of_every_installed_kit_gets_a_class_or_a_reason():
    assert sorted(path.parent.name for path in drums.KITS_DIR.glob("*/drumkit.xml")) == sorted(drums.MAKERS)
    assert drums.installed_kits() == sorted(drums.MAKERS)
    reasons = {reason for _, label, reason in drums.NAME_RULES if label is None} - {drums.UNRECOGNISED}
    makers_of: dict[str, set[str]] = {}
    for kit in drums.installed_kits():
        for instrument in drums.read_kit(kit):
            if instrument.label is None:
                assert instrument.reason in reasons | {"no sample file of it is installed"}, (kit, instrument.name)
                assert not instrument.layers
            else:
                assert instrument.label in drums.LABELS and instrument.layers, (kit, instrument.name)
                makers_of.setdefault(instrument.label, set()).add(drums.MAKERS[kit])
    # Each class is played in the kits of at least 5 of the 9 makers; the most common skipped instrument,
    # the cowbell, in those of only 4.
    assert {label: len(makers) >= 5 for label, makers in makers_of.items()} == dict.fromkeys(drums.LABELS, True)
    cowbells = {drums.MAKERS[kit] for kit in drums.MAKERS for i in drums.read_kit(kit) if "cowbell" in i.name.lower()}
    assert len(cowbells) == 4
    samples = drums.labelled_samples(drums.installed_kits())  # raises where one file would get two classes
    assert len(samples) > 350 and all(path.is_file() for path in samples)


@needs_kits
def test_every_kit_has_a_licence_and_kits_of_one_maker_share_a_copyright_stanza():
    stanzas = debian._copyright_stanzas(drums.PACKAGE)
    stanza_of = {}
    for kit in drums.installed_kits():
        source = f"drumkits/{drums.ARCHIVE_NAMES.get(kit, kit)}.h2drumkit"
        matching = [
            k for k, (patterns, _) in enumerate(stanzas) if any(fnmatch.fnmatchcase(source, p) for p in patterns)
        ]
        assert matching, f"{kit}: no stanza of the copyright file names {source}"
        stanza_of[kit] = matching[-1]
        found = drums.kit_provenance(kit)
        assert found.licence == stanzas[matching[-1]][1] and found.path == str(drums.KITS_DIR / kit)
    kits = sorted(stanza_of)
    same_stanza = {(a, b) for a in kits for b in kits if stanza_of[a] == stanza_of[b]}
    same_maker = {(a, b) for a in kits for b in kits if drums.MAKERS[a] == drums.MAKERS[b]}
    assert same_stanza == same_maker


def test_assign_makers_balances_the_groups_and_puts_every_label_in_each():
    counts = {
        "a": dict.fromkeys(drums.LABELS, 10),
        "b": dict.fromkeys(drums.LABELS, 10),
        "c": dict.fromkeys(drums.LABELS, 10),
        "d": {"kick": 5},
    }
    assigned = drums.assign_makers(counts, [1, 1, 1])
    assert sorted(assigned[m] for m in "abc") == [0, 1, 2]
    assert drums.assign_makers(counts, [1, 1, 1]) == assigned  # fixed, whatever the seed
    with pytest.raises(RuntimeError, match="holds every label"):
        drums.assign_makers({"a": counts["a"], "d": counts["d"]}, [1, 1])


def test_events_are_the_placed_hits_and_the_mix_plays_them_there():
    Hit = drums.Hit
    hits = [
        Hit("crash", 0, np.ones(500 * MS), 1.0),
        Hit("kick", 250, np.ones(100 * MS), 0.5),
        Hit("kick", 950, np.ones(100 * MS), 0.5),  # cut by the end of the clip
    ]
    assert drums.hit_events(hits, 1000) == [
        {"label": "crash", "start": 0.0, "end": 500.0},
        {"label": "kick", "start": 250.0, "end": 350.0},
        {"label": "kick", "start": 950.0, "end": 1000.0},
    ]
    mix = drums.render_hits(hits, 1000)
    assert len(mix) == 1000 * MS and mix[: 250 * MS].min() == 1.0 and mix[250 * MS : 350 * MS].min() == 1.5
    assert not mix[500 * MS : 950 * MS].any() and mix[950 * MS :].min() == 0.5


@needs_kits
def test_both_tasks_are_registered_and_build_valid_hear_tasks(built):
    expected = {
        "drum_instrument_recorded": ("scene", "multiclass", "new_split_kfold", ("top1_acc",), 1.0, 96),
        "drum_onsets_recorded": (
            "event",
            "multilabel",
            "trainvaltest",
            ("event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"),
            6.0,
            40,
        ),
    }
    version = debian.package_version(drums.PACKAGE)
    for name, directory in built.items():
        assert SUITE[name].suite == "recorded" and SUITE[name].stands_in_for
        task = load_task(directory, read_headers=True)
        *kinds, seconds, clips = expected[name]
        assert [task.embedding_type, task.prediction_type, task.split_mode, task.metrics] == kinds
        assert task.labels == drums.LABELS and task.metadata["sample_duration"] == seconds
        assert count_task_clips(task, round(seconds * 16000)) == clips
        for split in task.splits:  # every fold or split holds every class
            labels = {x if isinstance(x, str) else x["label"] for v in task.split_labels(split).values() for x in v}
            assert labels == set(drums.LABELS), f"{name}/{split}"
        used = sorted({kit for kits in task.metadata["source_of_split"].values() for kit in kits})
        assert [Path(source["path"]).name for source in task.metadata["sources"]] == used
        for source in task.metadata["sources"]:
            assert source["package"] == drums.PACKAGE and source["version"] == version and source["licence"]
    assert load_task(built["drum_instrument_recorded"]).splits == ("fold00", "fold01", "fold02")


@needs_kits
def test_no_kit_or_maker_is_in_two_folds_or_splits(built):
    for name, directory in built.items():
        task = load_task(directory)
        kits_of = task.metadata["source_of_split"]
        assert set(kits_of) == set(task.splits)
        owner: dict[str, str] = {}
        for split, kits in kits_of.items():
            for kit in kits:
                maker = task.metadata["maker_of_source"][kit]
                assert maker == drums.MAKERS[kit]
                assert owner.setdefault(maker, split) == split, f"{name}: {maker} in {split} and {owner[maker]}"
            tags = {re.search(r"_kit(\d\d)\.wav$", f).group(1) for f in task.split_labels(split)}
            assert {sorted(drums.MAKERS)[int(tag)] for tag in tags} == set(kits)  # the files say so too


@needs_kits
def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    for name in TASKS:
        again = _digest(_build(tmp_path / "again", name, 0))
        assert again == _digest(built[name])
        other = _digest(_build(tmp_path / "other", name, 1))
        differing = [path for path in again if path.endswith(".wav") and other.get(path) != again[path]]
        assert len(differing) > 0.9 * sum(path.endswith(".wav") for path in again)


@needs_kits
def test_event_labels_are_the_placed_hits(built):
    """Outside its events the audio is digital silence (the labels cover every sound), and after a silence a
    hit starts at its labelled onset: its first sample is there, and it reaches a tenth of its peak within 12 ms
    (the sample's own attack; a sample is cut on a 10 ms grid before it). A class rests at least 80 ms between
    its events, so that HEAR's frame-wise decoding can find each one; no event lasts over 1 s."""
    task = load_task(built["drum_onsets_recorded"])
    checked = 0
    for split in task.splits:
        for file_name, events in task.split_labels(split).items():
            audio, _ = soundfile.read(str(task.audio_dir(split) / file_name), dtype="float32")
            active = np.zeros(len(audio), dtype=bool)
            last_end: dict[str, float] = {}
            for event in events:
                assert 0 <= event["start"] < event["end"] <= min(6000, event["start"] + drums.CHOKE_MS)
                assert event["start"] >= last_end.get(event["label"], -1e9) + drums.REST_MS
                last_end[event["label"]] = event["end"]
                active[int(event["start"]) * MS : int(event["end"]) * MS] = True
            assert not audio[~active].any(), f"{file_name}: sound outside its events"
            for event in events:
                onset = int(event["start"])
                quiet = not active[(onset - 10) * MS : onset * MS].any()
                alone = not any(onset < other["start"] < onset + 60 for other in events)
                if quiet and alone:
                    hit = np.abs(audio[onset * MS : (onset + 60) * MS])
                    assert np.flatnonzero(hit)[0] < 3 * MS, f"{file_name}: {event}"
                    assert np.argmax(hit >= 0.1 * hit.max()) < 12 * MS, f"{file_name}: {event}"
                    checked += 1
    assert checked >= 40


def test_a_missing_package_is_one_line_naming_the_install(monkeypatch, tmp_path):
    class NotInstalled:
        returncode, stdout = 1, ""

    monkeypatch.setattr(debian.subprocess, "run", lambda *args, **kwargs: NotInstalled())
    debian.package_version.cache_clear()
    try:
        for name in TASKS:
            with pytest.raises(MissingProgramError) as raised:
                SUITE[name].build(tmp_path, "ci", np.random.default_rng(0))
            message = str(raised.value)
            assert "\n" not in message and drums.PACKAGE in message and debian.RECORDED_INSTALL in message
    finally:
        debian.package_version.cache_clear()
    assert not list(tmp_path.iterdir())
