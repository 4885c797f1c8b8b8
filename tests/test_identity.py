"""One rule for "the same embeddings" (hearfuse.identity): embed's resume, the reader, export and the
evaluation cache agree on it; a rerun says why it embeds again; old manifests still read; records of
several manifests are ordered by when they were written."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import hearfuse
from hearfuse.cli import main
from hearfuse.collection.layout import ManifestRecord, read_manifests
from hearfuse.collection.writer import embed_files
from hearfuse.errors import UsageError
from hearfuse.identity import EMBEDDING_VERSION, UNVERSIONED, EmbeddingIdentity
from hearfuse.model import FusionModel

from .test_embeddings import crepe_tiny, write_tones

NATIVE = "bfloat16=0.8,float16=60"  # so that bfloat16 is said nothing of, on any CPU


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARFUSE_CPU_SLOWDOWN", NATIVE)
    inputs = tmp_path / "in"
    write_tones(inputs, [0.5, 0.6, 0.7])
    return inputs, str(crepe_tiny(tmp_path)), tmp_path / "out"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _embed(inputs, config, out, *options) -> int:
    return main(["embed", str(inputs), "--model", config, "--out", str(out), "-q", *options])


def test_a_rerun_in_another_precision_embeds_again_and_says_why(folder, caplog, capsys):
    inputs, config, out = folder
    assert _embed(inputs, config, out) == 0
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        assert _embed(inputs, config, out, "--dtype", "bfloat16") == 0
    said = [r.getMessage() for r in caplog.records if r.name.startswith("hearfuse.collection")]
    assert said == ["embedding 3 files again: the dtype (float32 -> bfloat16) changed"]
    assert "embedded 3 files" in capsys.readouterr().out
    latest = read_manifests(out)
    assert {record.dtype for record in latest.values()} == {"bfloat16"}
    assert {record.embedding_version for record in latest.values()} == {EMBEDDING_VERSION}
    assert {record.hearfuse_version for record in latest.values()} == {hearfuse.__version__}
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        assert _embed(inputs, config, out, "--dtype", "bfloat16") == 0  # the same way again: nothing to do
    assert "skipped 3 already done" in capsys.readouterr().out


def test_each_cause_is_one_line(folder, caplog):
    inputs, config, out = folder
    assert _embed(inputs, config, out) == 0
    (inputs / "tone0.wav").write_bytes((inputs / "tone0.wav").read_bytes())  # a new modification time
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        assert _embed(inputs, config, out, "--store-dtype", "float16", "--dtype", "bfloat16") == 0
    said = sorted(r.getMessage() for r in caplog.records if r.name.startswith("hearfuse.collection"))
    assert said == [
        "embedding 1 file again: the audio file changed (size or modification time)",
        "embedding 3 files again: the dtype (float32 -> bfloat16) changed",
        "embedding 3 files again: the store dtype (float32 -> float16) changed",
    ]


def _as_written_by(out: Path, **fields) -> None:
    """Rewrite the manifest as another hearfuse would have written it (fields set, or None: dropped)."""
    lines = []
    for record in _records(out):
        record.update(fields)
        lines.append(json.dumps({key: value for key, value in record.items() if value is not None}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_another_code_version_embeds_again_unless_reuse_is_asked_and_recorded(folder, caplog, capsys):
    inputs, config, out = folder
    assert _embed(inputs, config, out) == 0
    _as_written_by(out, embedding_version=EMBEDDING_VERSION + 7)
    assert _embed(inputs, config, out, "--reuse-other-code") == 0
    assert "skipped 3 already done (3 made by another code version, kept as asked)" in capsys.readouterr().out
    kept = read_manifests(out)
    assert {(r.embedding_version, r.reused_under_version) for r in kept.values()} == {
        (EMBEDDING_VERSION + 7, EMBEDDING_VERSION)
    }
    assert _embed(inputs, config, out) == 0  # kept under this version: done, no option needed any more
    assert "skipped 3 already done" in capsys.readouterr().out

    _as_written_by(out, embedding_version=EMBEDDING_VERSION + 7, reused_under_version=None)
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        assert _embed(inputs, config, out) == 0
    said = [r.getMessage() for r in caplog.records if r.name.startswith("hearfuse.collection")]
    assert said == [f"embedding 3 files again: the embedding code version ({EMBEDDING_VERSION + 7} -> 1) changed"]


def test_a_manifest_of_an_older_hearfuse_still_reads_and_is_embedded_again_only_by_the_rule(folder, caplog):
    inputs, config, out = folder
    assert _embed(inputs, config, out) == 0
    _as_written_by(out, dtype=None, dtype_requested=None, embedding_version=None, hearfuse_version=None, time_ns=None)
    assert not any("dtype" in record or "embedding_version" in record for record in _records(out))
    folder_ = hearfuse.open_embeddings(out)
    assert len(folder_) == 3 and folder_.identity.dtype == "float32" and folder_.identity.code == UNVERSIONED
    assert folder_[0].identity.code == UNVERSIONED
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        assert _embed(inputs, config, out) == 0  # its code is not known to be this one: embedded again
    assert "the embedding code version (0 -> 1) changed" in caplog.text and "dtype" not in caplog.text


def test_the_reader_never_mixes_two_ways_unless_asked(folder, tmp_path):
    inputs, config, out = folder
    model = hearfuse.load_model(config)
    embed_files(model, [inputs], out, progress=False)
    (inputs / "late.wav").write_bytes((inputs / "tone0.wav").read_bytes())
    embed_files(hearfuse.load_model(config, dtype="bfloat16"), [inputs / "late.wav"], out, progress=False)
    with pytest.raises(UsageError, match="2 ways") as error:
        hearfuse.open_embeddings(out)
    assert "float32" in str(error.value) and "bfloat16" in str(error.value) and "\n" not in str(error.value)
    assert hearfuse.open_embeddings(out, compute_dtype="bfloat16").paths == ["late.wav"]
    assert len(hearfuse.open_embeddings(out, compute_dtype="float32")) == 3
    mixed = hearfuse.open_embeddings(out, mix=True)
    assert len(mixed) == 4 and mixed.identity is None
    assert {record.identity.dtype for record in mixed} == {"float32", "bfloat16"}
    assert main(["export", str(out), "--to", "webdataset", str(tmp_path / "wds"), "-q"]) == 2  # refused, one line


def test_records_of_shard_jobs_written_later_win_whatever_the_files_are_called(folder, tmp_path):
    """A plain run with one config, then the same inputs as --shard jobs with another: the shard jobs' records
    are the current ones (they were merged by file name, and manifest.jsonl sorts after manifest-shard-*)."""
    inputs, config, out = folder
    first = hearfuse.load_model(config)
    embed_files(first, [inputs], out, progress=False)
    other = FusionModel.from_config(first.config.with_options(name="other", window_seconds=20.0))
    assert other.config.fingerprint() != first.config.fingerprint()
    for shard in ((1, 2), (2, 2)):
        embed_files(other, [inputs], out, shard=shard, progress=False)
    reader = hearfuse.open_embeddings(out)
    assert reader.fingerprint == other.config.fingerprint() and len(reader) == 3 and reader.stale == 0
    assert embed_files(first, [inputs], out, progress=False).embedded == 3  # the first config's files are gone


def test_the_identity_words_and_the_evaluation_cache_key_come_from_one_rule():
    stored = EmbeddingIdentity("abc", "float32", 1, "float32", ("scene",))
    wanted = EmbeddingIdentity("abc", "bfloat16", 2, "float16", ("scene", "timestamp"))
    assert stored.why_not_reusable_for(wanted) == [
        "the dtype (float32 -> bfloat16) changed",
        "the embedding code version (1 -> 2) changed",
        "the store dtype (float32 -> float16) changed",
        "the timestamp embeddings were not written",
    ]
    assert "the embedding code version (1 -> 2) changed" not in stored.why_not_reusable_for(wanted, any_code=True)
    assert wanted.why_not_reusable_for(EmbeddingIdentity("abc", "bfloat16", 2, "float16", ("scene",))) == []

    from hearfuse.evaluation.cache import embedding_key
    from hearfuse.evaluation.provenance import changes

    config = hearfuse.hear.resolve_config("crepe")
    key = embedding_key(config)
    assert key == {"config": config.fingerprint(), "dtype": "float32", "embedding_code": EMBEDDING_VERSION}
    assert changes({**key, "dtype": "float32"}, {**key, "dtype": "bfloat16"}) == [
        "the dtype (float32 -> bfloat16) changed"
    ]


def test_a_record_round_trips_and_unknown_fields_are_ignored():
    record = ManifestRecord(path="a.wav", status="ok", kinds=("scene",), output="a.wav.npz", time_ns=5)
    assert ManifestRecord.from_dict({**json.loads(record.to_json()), "from_the_future": 1}) == record
