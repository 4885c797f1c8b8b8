"""The suite's music tasks (FluidR3 GM): HEAR layout, determinism, labels that match the audio, no leakage."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from hearfuse.evaluation.tasks import load_task
from hearfuse.suite import synth

try:
    synth.require("fluidsynth")
    synth.soundfont()
except synth.MissingProgramError as error:
    pytest.skip(str(error), allow_module_level=True)

from hearfuse.suite import music
from hearfuse.suite.registry import SUITE

from .conftest import count_task_clips

MUSIC = ("gm_pitch", "gm_instrument", "gm_percussion", "piano_onsets", "sound_mixtures")
RATE = synth.SAMPLE_RATE


def _build(root: Path, name: str, seed: int) -> Path:
    writer = SUITE[name].build(root, "ci", np.random.default_rng(seed))
    return writer.finish({"seed": seed})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("music")
    return {name: _build(root, name, 0) for name in MUSIC}


def _audio(task_dir: Path, split: str, name: str) -> np.ndarray:
    audio, rate = soundfile.read(str(task_dir / str(RATE) / split / name), dtype="float32")
    assert rate == RATE
    return audio


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_every_music_task_is_registered_and_builds_a_valid_hear_task(built):
    expected = {
        "gm_pitch": ("scene", "multiclass", "trainvaltest", ["pitch_acc", "chroma_acc"]),
        "gm_instrument": ("scene", "multiclass", "new_split_kfold", ["top1_acc"]),
        "gm_percussion": ("scene", "multiclass", "trainvaltest", ["top1_acc"]),
        "piano_onsets": (
            "event",
            "multilabel",
            "trainvaltest",
            ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"],
        ),
        "sound_mixtures": ("scene", "multilabel", "trainvaltest", ["mAP"]),
    }
    for name, directory in built.items():
        assert SUITE[name].stands_in_for and SUITE[name].build.__module__ == music.__name__
        task = load_task(directory)
        assert (task.embedding_type, task.prediction_type, task.split_mode, list(task.metrics)) == expected[name]
        assert task.metadata["description"] and task.metadata["mode"] == "ci"
        total = count_task_clips(task, round(task.metadata["sample_duration"] * RATE))
        assert 60 <= total <= 150, f"{name}: {total} clips at size ci"
    assert load_task(built["gm_instrument"]).splits == ("fold00", "fold01", "fold02")
    pitch = load_task(built["gm_pitch"])
    assert list(pitch.labels) == [str(p) for p in range(48, 85)]  # consecutive, so chroma_acc is pitch mod 12


def test_every_split_holds_every_class_where_the_design_promises_it(built):
    for name in ("gm_percussion", "sound_mixtures", "gm_instrument"):
        task = load_task(built[name])
        for split in task.splits:
            seen = {label for labels in task.split_labels(split).values() for label in labels}
            assert seen == set(task.labels), f"{name}/{split} lacks {set(task.labels) - seen}"
    mixtures = load_task(built["sound_mixtures"])
    sizes = [len(labels) for split in mixtures.splits for labels in mixtures.split_labels(split).values()]
    assert set(sizes) == {1, 2, 3}


def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    for name in ("gm_percussion", "sound_mixtures"):
        again = _digest(_build(tmp_path / "again", name, 0))
        assert again == _digest(built[name])
        other = _digest(_build(tmp_path / "other", name, 1))
        assert other != again
        differing = [path for path in again if path.endswith(".wav") and other.get(path) != again[path]]
        assert len(differing) > 0.9 * sum(path.endswith(".wav") for path in again)


def test_no_audio_is_in_two_splits(built):
    for name, directory in built.items():
        task = load_task(directory)
        owner: dict[bytes, str] = {}
        for split in task.splits:
            for file_name in task.split_labels(split):
                digest = hashlib.sha256(_audio(directory, split, file_name).tobytes()).digest()
                assert owner.setdefault(digest, split) == split, f"{name}: {file_name} also in {owner[digest]}"


def test_gm_pitch_instruments_of_valid_and_test_are_unseen_in_training(built):
    task = load_task(built["gm_pitch"])
    programs = {
        split: {int(re.match(r"prog(\d{3})_", file_name).group(1)) for file_name in task.split_labels(split)}
        for split in task.splits
    }
    assert not programs["train"] & programs["valid"]
    assert not programs["train"] & programs["test"]
    assert not programs["valid"] & programs["test"]
    assert set().union(*programs.values()) <= set(music.PITCH_PROGRAMS)
    assert all(p < 112 for p in music.PITCH_PROGRAMS)


def test_gm_pitch_labels_are_the_pitch_crepe_hears(built):
    torch = pytest.importorskip("torch")
    from hearfuse.upstream.crepe import packaged_weights
    from hearfuse.upstream.crepe_net import CrepeNet, normalize_frames
    from hearfuse.upstream.weights import WeightsNotFoundError

    try:
        net = CrepeNet("tiny").load_keras_weights(packaged_weights("tiny")).eval()
    except WeightsNotFoundError as error:
        pytest.skip(str(error))
    task = load_task(built["gm_pitch"])
    hold_ms = 1500  # the ci notes are held 1.5 s of their 2 s
    clips, frames, owners = [], [], []
    for split in task.splits:
        for file_name, (label,) in task.split_labels(split).items():
            audio = _audio(built["gm_pitch"], split, file_name)
            starts = np.arange(100 * 16, (hold_ms - 64) * 16, 800)  # 50 ms hop inside the held part
            windows = np.stack([audio[s : s + 1024] for s in starts])
            loud = np.sqrt((windows**2).mean(axis=1))
            windows = windows[loud >= 0.2 * loud.max()]  # a decaying note: only its sounding part
            frames.append(windows)
            owners += [len(clips)] * len(windows)
            clips.append((file_name, int(label)))
    with torch.inference_mode():
        salience = net.salience(normalize_frames(torch.from_numpy(np.concatenate(frames)))).numpy()
    cents = 1997.3794084376191 + 20 * salience.argmax(axis=1)
    owners = np.array(owners)
    wrong = []
    for index, (file_name, pitch) in enumerate(clips):
        expected = 1200 * np.log2(440 * 2 ** ((pitch - 69) / 12) / 10)
        heard = float(np.median(cents[owners == index]))
        if abs(heard - expected) > 50:
            wrong.append((file_name, pitch, round((heard - expected) / 100, 2)))
    assert not wrong, f"CREPE hears other pitches than the labels (file, label, error in semitones): {wrong}"


def _rms_rise(audio: np.ndarray, centre_ms: float, reach_ms: float = 60.0) -> float:
    """Where the RMS envelope (8 ms windows, 4 ms hop) rises most over 8 ms within ``reach_ms`` of ``centre_ms``."""
    frames = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64), 128)[::64]
    envelope = np.sqrt((frames**2).mean(axis=1))
    first = max(0, int((centre_ms - reach_ms) / 4))
    last = min(len(envelope) - 2, int((centre_ms + reach_ms) / 4))
    return (first + int(np.argmax(envelope[first + 2 : last + 2] - envelope[first:last])) + 1) * 4.0


def _spectral_flux(audio: np.ndarray) -> np.ndarray:
    """Rectified rise of the log spectrum (32 ms Hann windows centred every 4 ms)."""
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(audio.astype(np.float64), 256), 512)[::64]
    spectrum = np.log(1e-4 + np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)))
    return np.concatenate([[0.0], np.maximum(0.0, np.diff(spectrum, axis=0)).sum(axis=1)])


def _flux_peak(flux: np.ndarray, centre_ms: float, reach_ms: float = 60.0) -> float:
    first = max(0, int((centre_ms - reach_ms) / 4))
    return (first + int(np.argmax(flux[first : int((centre_ms + reach_ms) / 4)]))) * 4.0


def test_piano_onset_labels_are_where_the_audio_rises(built):
    """Each labelled note-on (at least 120 ms from any other) is where the sound rises.

    Over notes still ringing, the RMS envelope beats and its steepest rise can lie 50 ms off, so it
    is used where the piano was silent for 300 ms before; elsewhere the spectral flux (which sees a
    new note's partials appear) is.
    """
    task = load_task(built["piano_onsets"])
    rms_errors, flux_errors, shifted = [], [], []
    for split in task.splits:
        for file_name, events in task.split_labels(split).items():
            assert all(0 <= e["start"] < e["end"] <= 1000 * task.metadata["sample_duration"] for e in events)
            audio = _audio(built["piano_onsets"], split, file_name)
            flux = _spectral_flux(audio)
            onsets = sorted({event["start"] for event in events})
            for k, onset in enumerate(onsets):
                before = onsets[k - 1] if k else -1e9
                after = onsets[k + 1] if k + 1 < len(onsets) else 1e9
                if onset - before < 120 or after - onset < 120:
                    continue
                flux_errors.append(_flux_peak(flux, onset) - onset)
                if not any(e["start"] < onset and e["end"] > onset - 300 for e in events):
                    rms_errors.append(_rms_rise(audio, onset) - onset)
                if after - onset > 200:  # control: labels 45 ms late would be caught
                    shifted.append(_flux_peak(flux, onset + 45) - (onset + 45))
    flux_errors, rms_errors = np.abs(flux_errors), np.abs(rms_errors)
    assert len(flux_errors) > 200 and len(rms_errors) > 20
    assert np.all(flux_errors <= 30), f"{np.sum(flux_errors > 30)} of {len(flux_errors)} onsets off by > 30 ms"
    assert np.all(rms_errors <= 30), f"{np.sum(rms_errors > 30)} of {len(rms_errors)} onsets off by > 30 ms"
    assert np.median(flux_errors) <= 10
    assert np.mean(np.abs(shifted) > 30) > 0.95


def test_render_clips_cuts_each_clip_at_its_own_offset():
    """Clips share fluidsynth calls, yet nothing rings over from the clip before (a low steel-guitar
    note rings for 20 s in FluidR3), a repeated clip renders to the same samples, and a note moved
    by t ms on the 4 ms grid moves by exactly t ms in the audio."""
    Note, Clip = music.Note, music.Clip
    a = Clip((Note(0, 60, 0, 300, 100),), 1000)
    late = Clip((Note(0, 60, 100, 400, 100),), 1000)
    low = Clip((Note(0, 28, 0, 1000, 127),), 1000)
    together = music.render_clips([a, low, late, low, a])
    assert [len(x) for x in together] == [16000] * 5
    assert np.array_equal(together[0], together[4])
    assert not together[2][:1600].any() and np.array_equal(together[2][1600:], together[0][:-1600])
    assert not together[0][:16].any() and np.abs(together[0][16 * 10 : 16 * 100]).max() > 0.01
    # In mixed company (other programs, drum kits), silence before each note is still exact silence,
    # and a clip sounds as when rendered alone (to within a few percent: some presets' filters carry
    # a little state from voice to voice inside fluidsynth).
    ringing = Clip((Note(25, 40, 0, 1000, 127), Note(music.DRUM_KIT + 25, 49, 0, 1000, 127)), 1000)
    drums = Clip((Note(music.DRUM_KIT + 25, 38, 100, 400, 110), Note(40, 67, 200, 700, 90)), 1000)
    mixed = music.render_clips([ringing, late, drums, ringing, drums])
    assert not mixed[1][:1600].any() and not mixed[2][:1600].any() and not mixed[4][:1600].any()
    assert np.array_equal(mixed[1], together[2])
    solo = music.render_clips([drums])[0]
    for clip in (mixed[2], mixed[4]):
        assert np.abs(clip - solo).max() < 0.1 * np.abs(solo).max()
    with pytest.raises(ValueError, match="does not fit"):
        music.render_clips([Clip((Note(0, 60, 500, 1200, 100),), 1000)])
    with pytest.raises(ValueError, match="grid"):
        music.render_clips([Clip((Note(0, 60, 2, 300, 100),), 1000)])


def test_stored_labels_are_json_sorted(built):
    events = json.loads((built["piano_onsets"] / "train.json").read_text())
    for file_events in events.values():
        starts = [event["start"] for event in file_events]
        assert starts == sorted(starts)
