"""Embedding audio collections: formats, bad files, resume after SIGKILL, shards, resampling."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hearfuse
from hearfuse.audio import AudioError, load_audio
from hearfuse.batching import plan_batches
from hearfuse.collection.discovery import discover, in_shard, parse_shard
from hearfuse.collection.writer import embed_files
from hearfuse.errors import UsageError

RATES = (8000, 22050, 44100, 48000)

CREPE_CONFIG = """
name = "crepe_{capacity}_{hop}"
[[members]]
name = "crepe"
family = "crepe"
checkpoint = "{capacity}"
options = {{ hop_ms = {hop}, scene_hop_ms = {hop} }}
"""


def _config(tmp_path: Path, capacity: str = "tiny", hop: int = 50) -> Path:
    path = tmp_path / f"crepe_{capacity}_{hop}.toml"
    path.write_text(CREPE_CONFIG.format(capacity=capacity, hop=hop))
    return path


def _tone(rate: int, seconds: float, frequency: float, channels: int = 1) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = 0.4 * np.sin(2 * np.pi * frequency * t)
    return np.stack([mono, 0.5 * mono], axis=1) if channels == 2 else mono


@pytest.fixture()
def collection(tmp_path) -> Path:
    """Real files of several formats, rates and channel counts, plus every kind of bad file."""
    root = tmp_path / "in"
    (root / "music" / "deep").mkdir(parents=True)
    index = 0
    for rate in RATES:
        for fmt in ("wav", "flac", "ogg"):
            for channels in (1, 2):
                folder = root / ("music/deep" if index % 3 == 0 else "music" if index % 3 == 1 else "")
                sf.write(
                    folder / f"tone_{rate}_{channels}ch.{fmt}",
                    _tone(rate, 0.6 + 0.1 * (index % 2), 200 + 40 * index, channels),
                    rate,
                )
                index += 1
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("this is a text file renamed .wav\n")
    sf.write(root / "zero.wav", np.zeros(0), 16000)
    good = (root / "music" / "deep" / "tone_8000_1ch.wav").read_bytes()
    (root / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(2000))
    (root / "truncated.wav").write_bytes(good[:30])
    (root / "readme.txt").write_text("not picked up: not an audio extension")
    return root


BAD = {"empty.wav", "notes.wav", "zero.wav", "corrupt.flac", "truncated.wav"}


def test_embeds_every_format_rate_and_layout_and_records_bad_files(collection, tmp_path):
    model = hearfuse.load_model(_config(tmp_path))
    out = tmp_path / "out"
    summary = embed_files(model, [collection], out, progress=False)
    assert summary.embedded == 24 and summary.skipped == 0
    assert {f.relative for f in summary.failures} == BAD
    records = {r["path"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert len(records) == 29
    for name in BAD:
        assert records[name]["status"] == "failed" and records[name]["error"]
    assert "empty" in records["empty.wav"]["error"] and "zero samples" in records["zero.wav"]["error"]
    record = records["music/deep/tone_8000_1ch.wav"]
    assert record["status"] == "ok" and record["sample_rate"] == 8000 and record["duration"] == pytest.approx(0.6)
    assert record["config_fingerprint"] == model.config.fingerprint() and record["model"] == "crepe_tiny_50"
    with np.load(out / record["output"]) as arrays:
        assert arrays["timestamp_embeddings"].shape == (1 + 9600 // 800, 256)
        assert arrays["timestamps"].shape == (13,) and arrays["scene_embedding"].shape == (256,)
        assert arrays["timestamp_embeddings"].dtype == np.float32
    assert (out / "music" / "deep" / "tone_8000_1ch.wav.npz").is_file()  # mirrors the input tree
    assert not list(out.rglob("*.partial"))


def test_rerun_skips_done_files_and_redoes_changed_ones(collection, tmp_path):
    model = hearfuse.load_model(_config(tmp_path))
    out = tmp_path / "out"
    embed_files(model, [collection], out, progress=False)
    again = embed_files(model, [collection], out, progress=False)
    assert again.embedded == 0 and again.skipped == 24 and len(again.failures) == len(BAD)
    changed = collection / "music" / "tone_8000_2ch.wav"
    sf.write(changed, _tone(8000, 0.9, 300, 2), 8000)
    third = embed_files(model, [collection], out, progress=False)
    assert third.embedded == 1
    other_model = hearfuse.load_model(_config(tmp_path, hop=25))
    assert embed_files(other_model, [collection], out, progress=False, kinds=("scene",)).embedded == 24


def test_outputs_equal_the_hear_api_on_the_loaded_audio(collection, tmp_path):
    import torch

    model = hearfuse.load_model(_config(tmp_path))
    out = tmp_path / "out"
    embed_files(model, [collection], out, progress=False, batch_seconds=100)
    (item,) = [f for f in discover([collection]).files if f.path.name == "tone_44100_2ch.ogg"]
    audio = torch.from_numpy(load_audio(item.path, 16000))[None]
    expected, timestamps = hearfuse.get_timestamp_embeddings(audio, model)
    with np.load(out / item.output) as arrays:
        np.testing.assert_allclose(arrays["timestamp_embeddings"], expected[0].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(arrays["timestamps"], timestamps[0].numpy())


def test_resampling_matches_the_analytic_signal(tmp_path):
    for rate in RATES:
        path = tmp_path / f"sine_{rate}.wav"
        sf.write(path, _tone(rate, 1.0, 1000.0), rate, subtype="FLOAT")
        audio = load_audio(path, 16000)
        assert len(audio) == 16000
        expected = _tone(16000, 1.0, 1000.0)
        middle = slice(400, -400)  # away from the filter's edge effects
        assert np.max(np.abs(audio[middle] - expected[middle])) < 2e-3


def test_stereo_is_downmixed_by_averaging(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = _tone(16000, 0.5, 300), _tone(16000, 0.5, 700)
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("name, content, message", [("e.wav", b"", "empty"), ("t.wav", b"hello", "not readable")])
def test_load_audio_errors(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(AudioError, match=message):
        load_audio(tmp_path / name, 16000)


def test_shards_cover_every_input_exactly_once(collection):
    files = discover([collection]).files
    for count in (1, 2, 3, 7):
        shards = [{str(f.relative) for f in files if in_shard(f.relative, (i, count))} for i in range(1, count + 1)]
        assert set().union(*shards) == {str(f.relative) for f in files}
        assert sum(map(len, shards)) == len(files)


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "2"])
def test_bad_shard_specs(text):
    with pytest.raises(ValueError):
        parse_shard(text)


def test_discovery_of_files_folders_and_globs(collection):
    by_folder = {str(f.relative) for f in discover([collection]).files}
    assert "readme.txt" not in by_folder and "music/deep/tone_8000_1ch.wav" in by_folder
    by_glob = {str(f.relative) for f in discover([str(collection / "music" / "**" / "*.flac")]).files}
    assert by_glob == {s[len("music/") :] for s in by_folder if s.startswith("music/") and s.endswith(".flac")}
    named = discover([collection / "notes.wav"]).files
    assert [str(f.relative) for f in named] == ["notes.wav"]
    with pytest.raises(UsageError, match="does not exist"):
        discover([collection / "missing.wav"])
    assert (
        len(discover([collection / "music" / "deep", collection / "music" / "deep" / "tone_8000_1ch.wav"]).files) == 8
    )
    twin = collection.parent / "twin"
    twin.mkdir()
    (twin / "tone_8000_1ch.wav").write_bytes((collection / "music" / "deep" / "tone_8000_1ch.wav").read_bytes())
    with pytest.raises(ValueError, match="common parent"):
        discover([collection / "music" / "deep", twin])


def test_batches_hold_only_equal_lengths_and_respect_the_budget(collection):
    from hearfuse.audio import audio_info

    items = [(f, audio_info(f.path)) for f in discover([collection / "music"]).files]
    for batch in plan_batches(items, batch_seconds=2.0):
        assert len({(info.frames, info.sample_rate) for _, info in batch}) == 1
        assert len(batch) == 1 or sum(info.duration for _, info in batch) <= 2.0
    assert sum(len(b) for b in plan_batches(items, 2.0)) == len(items)


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hearfuse", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_resume_after_sigkill_is_byte_identical_and_skips_finished_files(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(8):
        sf.write(inputs / f"clip{index:02d}.wav", _tone(16000, 0.6 + index / 100, 150 + 30 * index), 16000)
    config = _config(tmp_path, capacity="full", hop=25)  # slow enough (~0.4 s a file) to be killed mid-run
    reference = tmp_path / "reference"
    embed_files(hearfuse.load_model(config), [inputs], reference, progress=False, batch_seconds=1)

    out = tmp_path / "out"
    run = _cli("embed", str(inputs), "--model", str(config), "--out", str(out), "--batch-seconds", "1", "-q")
    deadline = time.time() + 120
    while time.time() < deadline:
        manifest = out / "manifest.jsonl"
        if manifest.is_file() and manifest.read_text().count('"ok"') >= 2:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    finished = (out / "manifest.jsonl").read_text().count('"ok"')
    assert 2 <= finished < 8, "the run should have been killed mid-way"

    rerun = _cli("embed", str(inputs), "--model", str(config), "--out", str(out), "--batch-seconds", "1", "-q")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"skipped {finished} already done" in stdout
    for expected in sorted(reference.glob("*.npz")):
        assert (out / expected.name).read_bytes() == expected.read_bytes()
    assert len(list(out.glob("*.npz"))) == 8


def test_a_scan_reports_every_path_it_cannot_embed(tmp_path):
    """Broken links, link loops, linked folders and aliases are reported with their reason; a file cut
    short is a failure, not a shorter clip; nothing is dropped without a word."""
    import os

    from hearfuse.collection.writer import embed_files
    from hearfuse.hear import load_model

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "real.wav", _tone(16000, 0.5, 300, 1), 16000)
    os.symlink(folder / "real.wav", folder / "a_alias.wav")  # sorts before the real file
    os.symlink(folder / "gone.wav", folder / "broken.wav")
    os.symlink(folder / "loop.wav", folder / "loop.wav")
    os.symlink(folder / "sub", folder / "linked")
    sf.write(folder / "sub" / "cut.wav", _tone(16000, 1.0, 300, 1), 16000, subtype="PCM_16")
    data = (folder / "sub" / "cut.wav").read_bytes()
    (folder / "sub" / "cut.wav").write_bytes(data[:1044])  # header says 16,000 frames; 500 left
    found = discover([folder])
    assert [str(f.relative) for f in found.files] == ["real.wav", "sub/cut.wav"]
    reasons = {str(u.relative): (u.status, u.reason) for u in found.unusable}
    assert reasons["a_alias.wav"][0] == "alias" and "alias of real.wav" in reasons["a_alias.wav"][1]
    assert reasons["broken.wav"] == ("failed", f"broken symbolic link to {folder / 'gone.wav'}")
    assert reasons["loop.wav"] == ("failed", "symbolic link loop")
    assert reasons["linked"][0] == "failed" and "not followed" in reasons["linked"][1]

    model = load_model(str(_config(tmp_path)))
    summary = embed_files(model, [folder], tmp_path / "out", progress=False)
    failed = {f.relative: f.reason for f in summary.failures}
    assert set(failed) == {"broken.wav", "loop.wav", "linked", "sub/cut.wav"}
    assert failed["sub/cut.wav"] == "truncated: the header declares 16000 frames, only 500 are in the file"
    assert summary.embedded == 1 and summary.aliases == 1
    records = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {r["path"]: r["status"] for r in records} == {
        "a_alias.wav": "alias",
        "broken.wav": "failed",
        "loop.wav": "failed",
        "linked": "failed",
        "sub/cut.wav": "failed",
        "real.wav": "ok",
    }


def test_names_that_are_not_utf8_are_embedded_and_reported_safely(tmp_path, capsys):
    import os

    from hearfuse.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "good.wav", _tone(16000, 0.5, 300, 1), 16000)
    sf.write(folder / "plain.wav", _tone(16000, 0.5, 300, 1), 16000)
    (folder / "plain.wav").rename(folder / os.fsdecode(b"caf\xe9.wav"))  # Latin-1 bytes: not UTF-8
    (folder / os.fsdecode(b"bad\xe9.wav")).write_bytes(b"not audio")
    code = main(["embed", str(folder), "--model", str(_config(tmp_path)), "--out", str(tmp_path / "out"), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad\\udce9.wav: not readable as audio" in err  # shown with an escape, not a crash
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9.wav.npz")).is_file()


def test_two_runs_side_by_side_on_one_output_folder_both_succeed_with_a_clean_runs_outputs(tmp_path):
    """Started together, many times: unique temporary names per write and locked manifest appends, so
    neither run dies on the other's files and every output equals a clean run's."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(6):
        sf.write(inputs / f"clip{index:02d}.wav", _tone(16000, 0.5 + index / 50, 200 + 40 * index), 16000)
    config = _config(tmp_path)
    reference = tmp_path / "reference"
    embed_files(hearfuse.load_model(config), [inputs], reference, progress=False, batch_seconds=1)
    expected = {path.name: path.read_bytes() for path in reference.glob("*.npz")}
    for attempt in range(6):
        out = tmp_path / f"out{attempt}"
        command = ("embed", str(inputs), "--model", str(config), "--out", str(out), "--batch-seconds", "1", "-q")
        runs = [_cli(*command), _cli(*command)]
        for run in runs:
            _, stderr = run.communicate(timeout=300)
            assert run.returncode == 0, stderr
        assert {path.name: path.read_bytes() for path in out.glob("*.npz")} == expected
        assert not list(out.rglob("*.partial"))
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert {r["path"] for r in records} == {name.removesuffix(".npz") for name in expected}
        assert all(r["status"] == "ok" for r in records)  # every line whole: appends never interleave


def test_a_torn_manifest_line_loses_no_record_and_a_rerun_does_nothing(tmp_path):
    """A record cut short (full disk, crashed NFS client) is skipped; the next record starts on a new line
    and counts; a record that an older writer glued onto a torn line is still read."""
    from hearfuse.collection.layout import read_manifests

    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(4):
        sf.write(inputs / f"clip{index}.wav", _tone(16000, 0.5, 300 + 50 * index), 16000)
    model = hearfuse.load_model(_config(tmp_path))
    out = tmp_path / "out"
    embed_files(model, [inputs / "clip0.wav", inputs / "clip1.wav"], out, progress=False)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    # the second record cut mid-way, then an old-style writer's record glued straight onto it
    manifest.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2] + lines[1])
    assert set(read_manifests(out)) == {"clip0.wav", "clip1.wav"}
    manifest.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # now only torn
    summary = embed_files(model, [inputs], out, progress=False)
    assert summary.skipped == 1 and summary.embedded == 3  # clip1's record was lost with its line
    assert manifest.read_text().count("\n") == 5 and set(read_manifests(out)) == {f"clip{i}.wav" for i in range(4)}
    rerun = embed_files(model, [inputs], out, progress=False)
    assert rerun.embedded == 0 and rerun.skipped == 4
