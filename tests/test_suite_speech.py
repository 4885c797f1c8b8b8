"""The speech and office-sound tasks of the offline suite: valid HEAR layout, deterministic bytes,
labels that match the audio, and no voice or recording shared between splits."""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, sosfilt

from hearfuse.evaluation.tasks import load_task
from hearfuse.suite import speech
from hearfuse.suite.registry import SUITE
from hearfuse.suite.synth import SAMPLE_RATE, MissingProgramError, require, soundfont

from .conftest import count_task_clips

TASKS = ("spoken_words", "spoken_language", "speaker_count", "office_events")
SECONDS = {"spoken_words": 1.0, "spoken_language": 3.0, "speaker_count": 3.0, "office_events": 10.0}
MS = SAMPLE_RATE // 1000


def _build(root: Path, seed: int) -> dict[str, Path]:
    try:
        require("espeak-ng"), require("fluidsynth"), soundfont()
    except MissingProgramError as error:
        pytest.skip(str(error))
    directories = {}
    for name in TASKS:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        directories[name] = SUITE[name].build(root, "ci", rng).finish({"seed": seed})
    return directories


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    return _build(tmp_path_factory.mktemp("speech_seed0"), 0)


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _audio(task_dir: Path, split: str, name: str) -> np.ndarray:
    audio, rate = sf.read(str(task_dir / str(SAMPLE_RATE) / split / name), dtype="float64")
    assert rate == SAMPLE_RATE
    return audio


def test_tasks_are_registered_with_their_hear_counterparts():
    counterparts = {
        "spoken_words": "Speech Commands",
        "spoken_language": "VoxLingua107",
        "speaker_count": "LibriCount",
        "office_events": "DCASE 2016 task 2",
    }
    for name, counterpart in counterparts.items():
        assert counterpart in SUITE[name].stands_in_for
    assert SUITE["office_events"].kind == "event, multilabel"
    assert all(SUITE[name].kind == "scene, multiclass" for name in TASKS[:3])


def test_ci_tasks_are_valid_hear_tasks(built):
    expected_labels = {
        "spoken_words": [*speech.COMMAND_WORDS, "_silence_", "_unknown_"],
        "spoken_language": sorted(speech.LANGUAGES),
        "speaker_count": ["0", "1", "2", "3", "4"],
        "office_events": list(speech.OFFICE_LABELS),
    }
    for name, directory in built.items():
        task = load_task(directory)
        assert task.split_mode == "trainvaltest" and task.splits == ("train", "valid", "test")
        assert list(task.labels) == expected_labels[name]
        assert task.metadata["description"] and task.metadata["sample_duration"] == SECONDS[name]
        total = count_task_clips(task, int(SECONDS[name] * SAMPLE_RATE))
        assert 60 <= total <= 150, f"{name}: {total} clips is not a ci size"
        if task.embedding_type == "scene":
            train = Counter(label for labels in task.split_labels("train").values() for label in labels)
            assert set(train) == set(task.labels), f"{name}: every label must be trained on"
            assert max(train.values()) - min(train.values()) <= 1, f"{name}: labels are not balanced"
    assert load_task(built["office_events"]).metrics == ("event_onset_200ms_fms", "segment_1s_er")


def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    again = _build(tmp_path / "again", 0)
    other = _build(tmp_path / "other", 1)
    for name in TASKS:
        first, second, third = _files(built[name]), _files(again[name]), _files(other[name])
        assert first.keys() == second.keys()
        changed = [path for path in first if first[path] != second[path]]
        assert not changed, f"{name}: same seed, different bytes in {changed[:3]}"
        audio = [path for path in first if path.endswith(".wav")]
        differing = sum(first[path] != third.get(path) for path in audio)
        assert differing == len(audio), f"{name}: seed 1 reproduced {len(audio) - differing} clips of seed 0"
        assert first["test.json"] != third["test.json"]


def test_no_audio_is_shared_between_splits(built):
    for name, directory in built.items():
        seen: dict[str, str] = {}
        for split in ("train", "valid", "test"):
            for path in sorted((directory / str(SAMPLE_RATE) / split).iterdir()):
                digest = hashlib.sha1(sf.read(str(path), dtype="int16")[0].tobytes()).hexdigest()
                assert digest not in seen, f"{name}: {split}/{path.name} repeats {seen.get(digest)}"
                seen[digest] = f"{split}/{path.name}"


def test_voice_variants_are_distinct_and_partitioned():
    try:
        variants = speech.distinct_variants()
    except MissingProgramError as error:
        pytest.skip(str(error))
    assert len(variants) >= 20 and len(set(variants)) == len(variants)
    assert all(v.replace("_", "").isalnum() for v in variants)  # no listing debris such as '5)'
    parts = speech.partition_voices(variants, np.random.default_rng(3))
    assert sorted(v for part in parts.values() for v in part) == sorted(variants)
    assert len(parts["valid"]) >= 1 and len(parts["test"]) >= 1
    assert speech.partition_voices(variants, np.random.default_rng(3)) == parts


@pytest.mark.parametrize("name", ["spoken_words", "spoken_language"])
def test_valid_and_test_voices_are_unseen_in_training(built, name):
    task = load_task(built[name])
    voices = {}
    for split in task.splits:
        voices[split] = {file.split("-")[0] for file in task.split_labels(split)} - {"none"}
        assert voices[split] <= set(speech.distinct_variants()), voices[split]
    assert not voices["train"] & voices["valid"]
    assert not voices["train"] & voices["test"]
    assert not voices["valid"] & voices["test"]
    assert len(voices["train"]) >= 10


def test_silence_and_zero_speakers_hold_no_speech(built):
    task = load_task(built["speaker_count"])
    quiet, speaking = [], []
    for split in task.splits:
        for file_name, (label,) in task.split_labels(split).items():
            audio = _audio(task.path, split, file_name)
            frames = np.sqrt(np.mean(audio[: len(audio) // 400 * 400].reshape(-1, 400) ** 2, axis=1))  # 25 ms
            (quiet if label == "0" else speaking).append(frames)
    assert quiet and speaking
    loudest_quiet = max(frames.max() for frames in quiet)
    softest_speech = min(np.median(frames) for frames in speaking)  # typical level while voices talk
    assert loudest_quiet < 0.02
    assert loudest_quiet < 0.5 * softest_speech, (loudest_quiet, softest_speech)

    words = load_task(built["spoken_words"])
    for split in words.splits:
        for file_name, (label,) in words.split_labels(split).items():
            peak = np.abs(_audio(words.path, split, file_name)).max()
            assert (peak < 0.1) == (label == "_silence_"), (file_name, label, peak)


def test_office_events_sit_exactly_where_labelled(built):
    """Energy (above 150 Hz, where the brownish background is steady) jumps at each labelled onset and
    stays well above the background before it; after the labelled end only background is left."""
    task = load_task(built["office_events"])
    highpass = butter(4, 150, "highpass", fs=SAMPLE_RATE, output="sos")
    checked = 0
    for split in task.splits:
        for file_name, events in task.split_labels(split).items():
            audio = sosfilt(highpass, _audio(task.path, split, file_name))
            events = sorted(events, key=lambda e: e["start"])
            for event, following in zip(events, [*events[1:], None]):
                start, end = float(event["start"]), float(event["end"])
                assert start == int(start) and end == int(end) and 200 <= start < end <= 10000
                assert following is None or following["start"] >= end + 250  # apart, background between
                s, e = int(start) * MS, int(end) * MS
                background = np.mean(audio[s - 190 * MS : s - 40 * MS] ** 2)
                inside = np.mean(audio[s:e] ** 2)
                assert inside > 4 * background, (file_name, event, inside / background)
                # 10 ms windows every 1 ms from 100 ms before the onset: the first one clearly above the
                # background must contain the onset and start no later than 30 ms after it.
                windows = np.array([np.mean(audio[s + (k - 100) * MS : s + (k - 90) * MS] ** 2) for k in range(131)])
                loud = np.flatnonzero(windows > 4 * background)
                assert len(loud), (file_name, event)
                rise_ms = int(loud[0]) - 100  # start of the first loud window, relative to the onset
                assert -10 < rise_ms <= 30, (file_name, event, rise_ms)
                if e + 50 * MS <= len(audio):
                    after = np.mean(audio[e + 10 * MS : e + 50 * MS] ** 2)
                    assert after < 2.5 * background, (file_name, event, after / background)
                checked += 1
    assert checked >= 100
