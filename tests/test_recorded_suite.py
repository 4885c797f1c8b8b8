"""The recorded suite's plumbing (selection by suite, requirements, cache stamps with package versions,
command line, metadata) and its speech tasks: valid HEAR layout, deterministic bytes, no voice in two folds."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import soundfile

from hearfuse.cli import main
from hearfuse.evaluation.tasks import load_task
from hearfuse.suite import debian, recorded_speech
from hearfuse.suite.build import SUITE_VERSIONS, build_suite, package_versions, select_tasks
from hearfuse.suite.registry import SUITE
from hearfuse.suite.synth import SAMPLE_RATE, MissingProgramError
from hearfuse.suite.writer import TaskWriter

from .conftest import count_task_clips

SPEECH = ("spoken_language_recorded", "speaker_count_recorded")

try:
    for _package in recorded_speech.PACKAGES:
        debian.package_version(_package)
    _MISSING = None
except MissingProgramError as error:
    _MISSING = str(error)
needs_packages = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    if _MISSING:
        pytest.skip(_MISSING)
    root = tmp_path_factory.mktemp("recorded")
    directories = build_suite(root, suite="recorded", size="ci", seed=0, only=SPEECH, progress=False)
    return {directory.name.split("-")[0]: directory for directory in directories}


@pytest.fixture
def dpkg_knows_nothing(monkeypatch):
    """dpkg-query as on a machine without the recorded suite's packages (its answer for a missing one)."""

    def not_installed(command, **_):
        return subprocess.CompletedProcess(command, 1, "", f"dpkg-query: no packages found matching {command[-1]}\n")

    debian.package_version.cache_clear()
    monkeypatch.setattr(debian.subprocess, "run", not_installed)
    yield
    debian.package_version.cache_clear()


# ---------------------------------------------------------------------------------------------
# plumbing


def test_tasks_belong_to_a_suite_and_the_listing_says_which(capsys):
    for name in SPEECH:
        task = SUITE[name]
        assert task.suite == "recorded" and task.packages == recorded_speech.PACKAGES
    assert "VoxLingua107" in SUITE["spoken_language_recorded"].stands_in_for
    assert "LibriCount" in SUITE["speaker_count_recorded"].stands_in_for
    assert {task.suite for task in select_tasks("synthetic")} == {"synthetic"}
    assert {task.suite for task in select_tasks("recorded")} == {"recorded"}
    assert [task.name for task in select_tasks("all")] == list(SUITE)
    assert main(["tasks", "list"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^spoken_language_recorded +recorded ", listing, re.M)
    assert re.search(r"^gm_pitch +synthetic ", listing, re.M)


def test_a_recorded_task_names_its_packages():
    from hearfuse.suite.registry import suite_task

    with pytest.raises(ValueError, match="names the Debian packages"):
        suite_task("x_recorded", stands_in_for="-", kind="-", labels="-", metric="-", suite="recorded")
    with pytest.raises(ValueError, match="names the Debian packages"):
        suite_task("x", stands_in_for="-", kind="-", labels="-", metric="-", packages=("sox",))


def test_only_names_tasks_of_the_suite_chosen(tmp_path, capsys):
    assert main(["tasks", "build", "--out", str(tmp_path), "--only", "spoken_language_recorded"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not in the synthetic suite" in error and "--suite recorded" in error
    assert main(["tasks", "build", "--out", str(tmp_path), "--suite", "recorded", "--only", "gm_pitch"]) == 2
    assert "not in the recorded suite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["tasks", "build", "--out", str(tmp_path), "--suite", "both"])
    assert exit_.value.code == 2
    assert not list(tmp_path.iterdir())


def test_a_missing_package_is_one_line_naming_the_install(dpkg_knows_nothing, tmp_path, capsys):
    assert main(["tasks", "build", "--out", str(tmp_path), "--suite", "recorded", "-q"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and debian.RECORDED_INSTALL in error
    assert not list(tmp_path.iterdir())


def test_the_synthetic_suite_does_not_need_the_recorded_packages(dpkg_knows_nothing):
    try:
        assert package_versions(select_tasks("synthetic")) == {}
    except MissingProgramError as error:  # no fluidsynth or espeak-ng here: the synthetic suite's own need
        assert "fluidsynth" in str(error) or "espeak-ng" in str(error) or "SoundFont" in str(error)


def test_make_system_deps_installs_every_recorded_package():
    makefile = (Path(__file__).parents[1] / "Makefile").read_text()
    listed = re.search(r"^RECORDED_PACKAGES := (.+)$", makefile, re.M).group(1).split()
    assert tuple(listed) == debian.RECORDED_PACKAGES
    demo = makefile[makefile.index("\ndemo:") :].split("\n\n")[0]
    assert "--suite synthetic" in demo and "--suite recorded" in demo  # make demo builds both suites


def test_writer_adds_metadata_and_each_clips_sources(tmp_path):
    writer = TaskWriter(
        tmp_path,
        "toy",
        "ci",
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="new_split_kfold",
        splits=["fold00", "fold01", "fold02"],
        evaluation=["top1_acc"],
        sample_duration=0.1,
        labels=["a", "b"],
    )
    writer.add("fold00", "x.wav", [0.0] * 1600, ["a"], ["speaker2", "speaker1"])
    writer.add("fold01", "y.wav", [0.0] * 1600, ["b"], ["speaker3"])
    writer.add("fold02", "z.wav", [0.0] * 1600, ["b"])
    writer.add_metadata(sources=[{"id": "speaker1"}])
    with pytest.raises(ValueError, match="already has"):
        writer.add_metadata(task_name="other")
    metadata = json.loads((writer.finish({}) / "task_metadata.json").read_text())
    assert metadata["sources"] == [{"id": "speaker1"}] and metadata["task_name"] == "toy"
    assert metadata["source_of_split"] == {"fold00": ["speaker1", "speaker2"], "fold01": ["speaker3"], "fold02": []}
    assert metadata["source_of_clip"]["fold00"] == {"x.wav": ["speaker1", "speaker2"]}


@needs_packages
def test_a_package_upgrade_rebuilds_and_says_why(built, tmp_path, monkeypatch, caplog):
    root = tmp_path / "tasks"
    shutil.copytree(built["speaker_count_recorded"], root / built["speaker_count_recorded"].name)
    marker = root / built["speaker_count_recorded"].name / ".complete"
    stamp = json.loads(marker.read_text())
    assert stamp == {
        "seed": 0,
        "size": "ci",
        "suite_version": SUITE_VERSIONS["recorded"],
        "packages": {package: debian.package_version(package) for package in recorded_speech.PACKAGES},
    }
    again = ["speaker_count_recorded"]
    assert build_suite(root, suite="recorded", only=again, progress=False) == [marker.parent]
    assert json.loads(marker.read_text()) == stamp and not caplog.records  # reused as it was
    installed, real = debian.package_version("ktuberling-data"), debian.package_version
    monkeypatch.setattr(debian, "package_version", lambda p: "9:99-1" if p == "ktuberling-data" else real(p))
    with caplog.at_level(logging.WARNING, logger="hearfuse.suite.build"):
        build_suite(root, suite="recorded", only=again, progress=False)
    assert f"ktuberling-data {installed} -> 9:99-1" in caplog.text
    assert json.loads(marker.read_text())["packages"]["ktuberling-data"] == "9:99-1"
    sources = json.loads((marker.parent / "task_metadata.json").read_text())["sources"]
    assert {s["version"] for s in sources if s["package"] == "ktuberling-data"} == {"9:99-1"}


# ---------------------------------------------------------------------------------------------
# the voices


@needs_packages
def test_voices_are_distinct_recordings_credited_as_the_packages_say():
    voices = recorded_speech.voices()
    ids = [voice.id for voice in voices]
    assert len(set(ids)) == len(ids) and len(voices) >= 30
    files = [path for voice in voices for path in voice.files]
    assert len(set(files)) == len(files)
    digests = {hashlib.sha1(path.read_bytes()).hexdigest() for path in files}
    assert len(digests) == len(files), "one recording counted twice"
    assert all(len(voice.files) >= recorded_speech.MIN_RECORDINGS for voice in voices)
    assert not any(voice.id.startswith("ktuberling-data/words/nn") for voice in voices)  # speech synthesis
    # one person (ARTIST Andrius Jurkus) recorded tuxpaint's Lithuanian descriptions and numbers: one voice
    assert "tuxpaint-stamps-default/descriptions+numbers and letters/lt" in ids
    serbian = [voice for voice in voices if voice.language == "sr"]  # sr/ and sr@latin/ hold the same files
    assert len(serbian) == 1 and all("@" not in str(path) for path in serbian[0].files)
    for voice in voices:
        provenance = voice.provenance()
        assert provenance["licence"] in ("GPL-2", "GPL-2+") and provenance["version"], voice.id


@needs_packages
def test_artist_tags_read_from_the_bytes_agree_with_libsndfile():
    checked = 0
    for voice in recorded_speech.voices():
        for path in voice.files[:: max(1, len(voice.files) // 4)]:
            if path.suffix in (".ogg", ".opus"):
                with soundfile.SoundFile(path) as sound:
                    expected = {sound.artist} - {""}
                assert recorded_speech.ogg_artists(path.read_bytes()) == expected, path
                checked += 1
    assert checked > 100


# ---------------------------------------------------------------------------------------------
# the tasks


@needs_packages
def test_ci_tasks_are_valid_hear_tasks(built, capsys):
    expected_labels = {
        "spoken_language_recorded": sorted(recorded_speech.language_voices()),
        "speaker_count_recorded": ["1", "2", "3", "4"],
    }
    for name, directory in built.items():
        task = load_task(directory, read_headers=True)
        kind = (task.embedding_type, task.prediction_type, task.split_mode)
        assert kind == ("scene", "multiclass", "new_split_kfold")
        assert task.splits == ("fold00", "fold01", "fold02") and list(task.metrics) == ["top1_acc"]
        assert list(task.labels) == expected_labels[name]
        assert task.metadata["suite"] == "recorded" and task.metadata["description"]
        total = count_task_clips(task, int(recorded_speech.SECONDS * SAMPLE_RATE))
        assert 60 <= total <= 150, f"{name}: {total} clips is not a ci size"
        for fold in task.splits:
            counts = Counter(label for labels in task.split_labels(fold).values() for label in labels)
            assert set(counts) == set(task.labels) and len(set(counts.values())) == 1, f"{name} {fold}: {counts}"
    assert len(expected_labels["spoken_language_recorded"]) >= 10
    assert main(["tasks", "check", *map(str, built.values())]) == 0
    assert capsys.readouterr().out.count("ok: ") == 2


@needs_packages
def test_same_seed_same_bytes_other_seed_other_bytes(built, tmp_path):
    again = build_suite(tmp_path / "again", suite="recorded", only=SPEECH, progress=False)
    other = build_suite(tmp_path / "other", suite="recorded", only=SPEECH, seed=1, progress=False)
    for first, second, third in zip(map(_digest, built.values()), map(_digest, again), map(_digest, other)):
        assert first == second
        audio = [path for path in first if path.endswith(".wav")]
        assert sum(first[path] != third[path] for path in audio) > 0.9 * len(audio)


@needs_packages
def test_no_voice_is_in_two_folds_and_every_voice_is_credited(built):
    for name, directory in built.items():
        task = load_task(directory)
        of_split = task.metadata["source_of_split"]
        for one, two in [("fold00", "fold01"), ("fold00", "fold02"), ("fold01", "fold02")]:
            assert not set(of_split[one]) & set(of_split[two]), f"{name}: a voice in {one} and {two}"
        credited = {source["id"]: source for source in task.metadata["sources"]}
        assert set(credited) == {voice for ids in of_split.values() for voice in ids}
        for source in credited.values():
            assert source["version"] == debian.package_version(source["package"]) and source["licence"]
        for fold in task.splits:
            clips = task.metadata["source_of_clip"][fold]
            assert clips.keys() == task.split_labels(fold).keys()
            assert sorted({voice for ids in clips.values() for voice in ids}) == of_split[fold]


@needs_packages
def test_every_language_has_its_own_voice_in_every_fold_and_kinds_of_recording_are_spread(built):
    task = load_task(built["spoken_language_recorded"])
    for fold in task.splits:
        clips, labels = task.metadata["source_of_clip"][fold], task.split_labels(fold)
        assert all(ids[0].rsplit("/", 1)[1] == labels[clip][0] for clip, ids in clips.items())
        collections = Counter(voice.split("/")[1] for voice in task.metadata["source_of_split"][fold])
        # descriptions, numbers, words and letters each for several languages: the kind of recording
        # (and the package) cannot stand in for the language
        assert all(collections[kind] >= 2 for kind in ("descriptions", "words", "letters and syllables")), collections


@needs_packages
def test_each_mix_has_as_many_voices_as_its_label_each_of_another_language(built):
    task = load_task(built["speaker_count_recorded"])
    for fold in task.splits:
        labels = task.split_labels(fold)
        for clip, voices in task.metadata["source_of_clip"][fold].items():
            assert len(voices) == int(labels[clip][0])
            assert len({voice.rsplit("/", 1)[1] for voice in voices}) == len(voices)
