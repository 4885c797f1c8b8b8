"""Reading an embed output folder back (hearfuse.open_embeddings) and float16 storage."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import hearfuse
from hearfuse.cli import main
from hearfuse.collection.reader import collate_frames
from hearfuse.collection.writer import embed_files
from hearfuse.errors import UsageError

from .test_corpus import _config as crepe_config


def crepe_tiny(tmp_path: Path, hop: int = 50) -> Path:
    """A CREPE tiny config (weights installed with the package) named ``crepe_tiny_<hop>``."""
    return crepe_config(tmp_path, "tiny", hop)


def write_tones(folder: Path, seconds: list[float]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, length in enumerate(seconds):
        t = np.arange(round(16000 * length)) / 16000
        path = folder / ("sub" if index % 2 else "") / f"tone{index}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, 0.4 * np.sin(2 * np.pi * (180 + 60 * index) * t), 16000)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """An output folder with good, failed, aliased and stale records (two configs)."""
    root = tmp_path_factory.mktemp("mixed")
    inputs = root / "in"
    write_tones(inputs, [0.5, 0.8, 1.1, 0.7])
    (inputs / "broken.wav").write_bytes(b"RIFF not really")
    os.symlink("tone2.wav", inputs / "same_as_2.wav")
    out = root / "out"
    first, second = crepe_tiny(root, 50), crepe_tiny(root, 25)
    embed_files(hearfuse.load_model(first), [inputs], out, progress=False)
    # the second config re-embeds one input: its record (and .npz) now belong to the second config
    embed_files(hearfuse.load_model(second), [inputs / "tone0.wav"], out, progress=False)
    return out, hearfuse.FusionConfig.load(first), hearfuse.FusionConfig.load(second), inputs


def test_a_folder_of_two_configs_is_an_error_naming_both_unless_one_is_chosen(mixed_folder):
    out, first, second, _ = mixed_folder
    with pytest.raises(UsageError) as error:
        hearfuse.open_embeddings(out)
    for config in (first, second):
        assert config.fingerprint() in str(error.value) and config.name in str(error.value)
    current = hearfuse.open_embeddings(out, config=first)
    assert current.paths == ["sub/tone1.wav", "sub/tone3.wav", "tone2.wav"]
    assert current.stale == 1 and current.fingerprint == first.fingerprint()
    assert hearfuse.open_embeddings(out, config=first.fingerprint()[:6]).paths == current.paths
    assert hearfuse.open_embeddings(out, config="crepe_tiny_25").paths == ["tone0.wav"]
    with pytest.raises(UsageError, match="matches none"):
        hearfuse.open_embeddings(out, config="no_such_model")
    assert current.config.fingerprint() == first.fingerprint()


def test_failed_and_aliased_inputs_are_listed_and_lookup_finds_every_name(mixed_folder):
    out, first, _, inputs = mixed_folder
    current = hearfuse.open_embeddings(out, config=first)
    assert list(current.failed) == ["broken.wav"] and current.failed["broken.wav"]
    assert current.aliases == {"same_as_2.wav": "tone2.wav"}
    by_path = current["tone2.wav"]
    assert current["same_as_2.wav"] is by_path
    assert current[str(inputs / "tone2.wav")] is by_path  # the source path it was embedded from
    assert current[2] is by_path and "tone2.wav" in current and "tone0.wav" not in current
    with pytest.raises(KeyError, match="it failed"):
        current["broken.wav"]
    with pytest.raises(KeyError, match="no current embedding"):
        current["tone0.wav"]  # embedded, but by the other config


def test_scene_matrix_and_records_equal_the_npz_files(mixed_folder):
    out, first, _, _ = mixed_folder
    current = hearfuse.open_embeddings(out, config=first)
    paths, matrix = current.scene_matrix()
    assert paths == current.paths and matrix.shape == (3, current.dim) and matrix.dtype == np.float32
    for row, path in enumerate(paths):
        with np.load(out / f"{path}.npz") as npz:
            np.testing.assert_array_equal(matrix[row], npz["scene_embedding"])
            embeddings, timestamps = current[path].timestamp_embeddings()
            np.testing.assert_array_equal(embeddings, npz["timestamp_embeddings"])
            np.testing.assert_array_equal(timestamps, npz["timestamps"])
    assert [record.path for record in current] == paths
    assert current["tone2.wav"].duration == pytest.approx(1.1)


def test_frame_dataset_and_collate_pad_and_give_lengths(mixed_folder):
    out, first, _, _ = mixed_folder
    dataset = hearfuse.open_embeddings(out, config=first).frames()
    items = [dataset[index] for index in range(len(dataset))]
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_frames)))
    lengths = [len(embeddings) for embeddings, _, _ in items]
    assert len(set(lengths)) == 3, "the clips were chosen to have different lengths"
    assert batch.embeddings.shape == (3, max(lengths), items[0][0].shape[1])
    assert batch.lengths.tolist() == lengths and batch.paths == [path for _, _, path in items]
    assert batch.mask.sum().item() == sum(lengths)
    for row, (embeddings, timestamps, _) in enumerate(items):
        torch.testing.assert_close(batch.embeddings[row, : lengths[row]], embeddings, rtol=0, atol=0)
        torch.testing.assert_close(batch.timestamps[row, : lengths[row]], timestamps, rtol=0, atol=0)
        assert not batch.embeddings[row, lengths[row] :].any()


def test_scene_matrix_reads_no_frame_sequence(tmp_path):
    """Memory: the scene matrix costs the matrix, not the files' frame arrays (20 s at a 10 ms hop:
    about 2 MB of frames per file)."""
    inputs = tmp_path / "in"
    write_tones(inputs, [20.0, 20.0, 20.0])
    out = tmp_path / "out"
    embed_files(hearfuse.load_model(crepe_tiny(tmp_path, 10)), [inputs], out, progress=False)
    folder = hearfuse.open_embeddings(out)
    frame_bytes = folder[0].timestamp_embeddings()[0].nbytes
    assert frame_bytes > 1_500_000
    tracemalloc.start()
    _, matrix = folder.scene_matrix()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert matrix.shape == (3, 256)
    assert peak < frame_bytes / 4, f"peak {peak} bytes while reading scene embeddings"


def test_float16_storage_round_trip_and_what_a_rerun_compares(tmp_path):
    inputs = tmp_path / "in"
    write_tones(inputs, [0.6, 0.9])
    model = hearfuse.load_model(crepe_tiny(tmp_path))
    reference, half = tmp_path / "f32", tmp_path / "f16"
    embed_files(model, [inputs], reference, progress=False)
    summary = embed_files(model, [inputs], half, store_dtype="float16", progress=False)
    assert summary.embedded == 2
    for path in ("tone0.wav", "sub/tone1.wav"):
        with np.load(reference / f"{path}.npz") as full, np.load(half / f"{path}.npz") as stored:
            for name in ("timestamp_embeddings", "scene_embedding"):
                assert stored[name].dtype == np.float16
                np.testing.assert_array_equal(stored[name], full[name].astype(np.float16))
            assert stored["timestamps"].dtype == np.float32
            np.testing.assert_array_equal(stored["timestamps"], full["timestamps"])
    records = [json.loads(line) for line in (half / "manifest.jsonl").read_text().splitlines()]
    assert {record["store_dtype"] for record in records} == {"float16"}

    assert embed_files(model, [inputs], half, store_dtype="float16", progress=False).skipped == 2
    again = embed_files(model, [inputs], half, store_dtype="float32", progress=False)
    assert (again.embedded, again.skipped) == (2, 0), "a new store dtype embeds again"
    with np.load(half / "tone0.wav.npz") as stored:
        assert stored["scene_embedding"].dtype == np.float32

    folder = hearfuse.open_embeddings(reference, dtype="float16")
    _, matrix = folder.scene_matrix()
    assert matrix.dtype == np.float16
    embeddings, timestamps = folder[0].timestamp_embeddings()
    assert embeddings.dtype == np.float16 and timestamps.dtype == np.float32
    assert hearfuse.open_embeddings(reference).frames("float16")[0][0].dtype == torch.float16


def test_store_dtype_on_the_command_line(tmp_path, capsys):
    inputs = tmp_path / "in"
    write_tones(inputs, [0.5])
    config = str(crepe_tiny(tmp_path))
    out = tmp_path / "out"
    assert main(["embed", str(inputs), "--model", config, "--out", str(out), "--store-dtype", "float16", "-q"]) == 0
    assert hearfuse.open_embeddings(out).scene_matrix()[1].dtype == np.float16
    with pytest.raises(SystemExit) as exit_:
        main(["embed", str(inputs), "--model", config, "--out", str(out), "--store-dtype", "int8"])
    assert exit_.value.code == 2
    assert "--store-dtype" in capsys.readouterr().err


def test_reader_usage_errors(tmp_path, mixed_folder):
    with pytest.raises(UsageError, match="no such folder"):
        hearfuse.open_embeddings(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UsageError, match="no manifest.jsonl"):
        hearfuse.open_embeddings(tmp_path / "plain")
    scene_only = tmp_path / "scene_only"
    write_tones(tmp_path / "in", [0.5])
    embed_files(
        hearfuse.load_model(crepe_tiny(tmp_path)), [tmp_path / "in"], scene_only, kinds=["scene"], progress=False
    )
    with pytest.raises(UsageError, match="without timestamp embeddings"):
        hearfuse.open_embeddings(scene_only).frames()
    assert hearfuse.open_embeddings(scene_only).scene_matrix()[1].shape == (1, 256)


def test_shard_manifests_are_read_together(tmp_path):
    inputs = tmp_path / "in"
    write_tones(inputs, [0.5, 0.6, 0.7, 0.8, 0.9])
    model = hearfuse.load_model(crepe_tiny(tmp_path))
    out = tmp_path / "out"
    for shard in ((1, 2), (2, 2)):
        embed_files(model, [inputs], out, shard=shard, progress=False)
    assert sorted(path.name for path in out.glob("manifest*.jsonl")) == [
        "manifest-shard-1-of-2.jsonl",
        "manifest-shard-2-of-2.jsonl",
    ]
    assert hearfuse.open_embeddings(out).paths == [
        "sub/tone1.wav",
        "sub/tone3.wav",
        "tone0.wav",
        "tone2.wav",
        "tone4.wav",
    ]


def test_export_of_a_folder_of_two_configs_names_them_in_one_line(mixed_folder, tmp_path, capsys):
    out, first, second, _ = mixed_folder
    assert main(["export", str(out), "--to", "webdataset", str(tmp_path / "wds")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and first.fingerprint() in error and second.fingerprint() in error
    assert (
        main(["export", str(out), "--to", "webdataset", str(tmp_path / "wds"), "--config", "crepe_tiny_25", "-q"]) == 0
    )
    assert "1 inputs that failed to embed, 3 records of other configs" in capsys.readouterr().err
