"""hearfuse export: Parquet read back by pyarrow and datasets, WebDataset shards read back by
webdataset, equal to the .npz files; a killed export rerun; destinations that are refused."""

from __future__ import annotations

import glob
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import hearfuse
from hearfuse.cli import main
from hearfuse.collection import export as export_module
from hearfuse.collection.export import export, parse_size
from hearfuse.collection.writer import embed_files
from hearfuse.errors import UsageError

from . import processes
from .test_embeddings import crepe_tiny, write_tones

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
wds = pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    inputs = root / "in"
    write_tones(inputs, [0.5, 0.7, 0.9, 1.1, 1.3])
    (inputs / "broken.wav").write_bytes(b"no audio")
    out = root / "out"
    embed_files(hearfuse.load_model(crepe_tiny(root)), [inputs], out, progress=False)
    return out


def npz_arrays(out: Path, path: str) -> dict[str, np.ndarray]:
    with np.load(out / f"{path}.npz") as npz:
        return {name: npz[name] for name in npz.files}


def test_parquet_read_back_by_pyarrow_equals_the_npz_files(embedded, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ROW_GROUP_BYTES", 20_000)  # several row groups per file
    folder = hearfuse.open_embeddings(embedded)
    summary = export(folder, tmp_path / "pq", to="parquet", shard_files=3, progress=False)
    files = sorted((tmp_path / "pq").glob("*.parquet"))
    assert (summary.files, summary.shards, len(files)) == (5, 2, 2)
    assert pq.ParquetFile(files[0]).metadata.num_row_groups > 1
    table = pa.concat_tables(pq.read_table(file) for file in files)
    assert table.column("path").to_pylist() == folder.paths
    dim = folder.dim
    assert table.schema.field("scene_embedding").type == pa.list_(pa.float32(), dim)
    for row, path in enumerate(folder.paths):
        expected = npz_arrays(embedded, path)
        frames = np.array(table.column("timestamp_embeddings")[row].as_py(), dtype=np.float32)
        np.testing.assert_array_equal(frames, expected["timestamp_embeddings"])
        np.testing.assert_array_equal(table.column("timestamps")[row].as_py(), expected["timestamps"])
        np.testing.assert_array_equal(table.column("scene_embedding")[row].as_py(), expected["scene_embedding"])
        assert table.column("duration")[row].as_py() == pytest.approx(folder[path].duration)
    meta = json.loads(pq.read_schema(files[0]).metadata[b"hearfuse"])
    assert meta["config_fingerprint"] == folder.fingerprint


def test_parquet_read_back_by_hugging_face_datasets(embedded, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    folder = hearfuse.open_embeddings(embedded, dtype="float16")
    export(folder, tmp_path / "pq", to="parquet", shard_files=2, progress=False)
    files = sorted(glob.glob(str(tmp_path / "pq" / "*.parquet")))
    loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.features["scene_embedding"].feature.dtype == "float16"
    assert loaded["path"] == folder.paths
    rows = loaded.with_format("numpy")
    for row, path in enumerate(folder.paths):
        expected = npz_arrays(embedded, path)
        np.testing.assert_array_equal(
            rows[row]["timestamp_embeddings"], expected["timestamp_embeddings"].astype(np.float16)
        )
        np.testing.assert_array_equal(rows[row]["timestamps"], expected["timestamps"])
    streamed = datasets.load_dataset("parquet", data_files=files, split="train", streaming=True)
    assert [row["path"] for row in streamed] == folder.paths


def test_webdataset_shards_read_back_by_webdataset_equal_the_npz_files(embedded, tmp_path):
    folder = hearfuse.open_embeddings(embedded)
    export(folder, tmp_path / "wds", to="webdataset", shard_files=2, progress=False)
    shards = sorted(glob.glob(str(tmp_path / "wds" / "*.tar")))
    assert len(shards) == 3
    samples = list(wds.WebDataset(shards, shardshuffle=False).decode())
    assert [sample["json"]["path"] for sample in samples] == folder.paths
    for sample in samples:
        expected = npz_arrays(embedded, sample["json"]["path"])
        for name, array in expected.items():
            np.testing.assert_array_equal(sample[f"{name}.npy"], array)
            assert sample[f"{name}.npy"].dtype == array.dtype
        assert sample["json"]["config_fingerprint"] == folder.fingerprint


def test_an_export_killed_midway_then_rerun_gives_the_uninterrupted_result(embedded, tmp_path):
    """A subprocess SIGKILLs itself in the middle of its third shard; the rerun keeps the two complete
    shards, removes the half-written one and writes the rest, byte-identical to one run."""
    for to, suffix in (("webdataset", "tar"), ("parquet", "parquet")):
        reference, killed = tmp_path / f"{to}-reference", tmp_path / f"{to}-killed"
        assert main(["export", str(embedded), "--to", to, str(reference), "--shard-files", "1", "-q"]) == 0
        script = textwrap.dedent(f"""
            import dataclasses, os, signal, sys
            from hearfuse import cli
            from hearfuse.collection import export
            original = export.FORMATS["{to}"]
            def dying(handle, shard, writing):
                if shard.first == 2:
                    handle.write(b"half a shard")
                    handle.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return original.write(handle, shard, writing)
            export.FORMATS["{to}"] = dataclasses.replace(original, write=dying)
            args = ["export", {str(embedded)!r}, "--to", "{to}", {str(killed)!r}, "--shard-files", "1", "-q"]
            sys.exit(cli.main(args))
        """)
        run = processes.run([sys.executable, "-c", script], timeout=120)
        assert run.returncode == -9, run.stderr
        left = sorted(path.name for path in killed.iterdir())
        complete = sorted(killed.glob(f"*.{suffix}"))
        assert len(complete) == 2, left
        assert any(name.endswith(".partial") for name in left), left
        assert json.loads((killed / "export.json").read_text())["complete"] is False

        rerun = processes.run(
            [sys.executable, "-m", "hearfuse", "export", str(embedded), "--to", to, str(killed), "--shard-files", "1"],
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert "(2 kept from an earlier run)" in rerun.stdout
        assert sorted(path.name for path in killed.iterdir()) == sorted(path.name for path in reference.iterdir())
        for shard in sorted(reference.glob(f"*.{suffix}")):
            assert (killed / shard.name).read_bytes() == shard.read_bytes(), shard.name
        assert json.loads((killed / "export.json").read_text())["complete"] is True


def test_a_rerun_after_the_inputs_changed_rewrites_only_what_changed(tmp_path):
    inputs = tmp_path / "in"
    write_tones(inputs, [0.5, 0.6, 0.7])
    out = tmp_path / "out"
    model = hearfuse.load_model(crepe_tiny(tmp_path))
    embed_files(model, [inputs], out, progress=False)
    dest = tmp_path / "wds"
    export(hearfuse.open_embeddings(out), dest, to="webdataset", shard_files=1, progress=False)
    write_tones(tmp_path / "more", [0.5, 0.6, 0.7, 0.8])  # the same three names, plus one more
    os.replace(tmp_path / "more" / "sub" / "tone3.wav", inputs / "sub" / "tone3.wav")
    embed_files(model, [inputs], out, progress=False)
    summary = export(hearfuse.open_embeddings(out), dest, to="webdataset", shard_files=1, progress=False)
    # sorted: sub/tone1, sub/tone3 (new), tone0, tone2: only the first shard still holds what it held
    assert (summary.files, summary.shards, summary.kept_shards, summary.stale_shards) == (4, 4, 1, 2)
    assert "2 of it replaced: their inputs or the plan changed" in summary.line()
    samples = list(wds.WebDataset(sorted(glob.glob(str(dest / "*.tar"))), shardshuffle=False).decode())
    assert [sample["json"]["path"] for sample in samples] == hearfuse.open_embeddings(out).paths


def test_destinations_and_sizes_that_are_refused(embedded, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.pdf").write_text("mine")
    with pytest.raises(UsageError, match="holds other files"):
        export(hearfuse.open_embeddings(embedded), other, to="parquet", progress=False)
    assert main(["export", str(embedded), "--to", "parquet", str(other)]) == 2
    assert "holds other files" in capsys.readouterr().err
    parquet = tmp_path / "pq"
    assert main(["export", str(embedded), "--to", "parquet", str(parquet), "-q"]) == 0
    assert main(["export", str(embedded), "--to", "webdataset", str(parquet), "-q"]) == 2
    assert "holds a parquet export" in capsys.readouterr().err
    assert main(["export", str(embedded), "--to", "parquet", str(tmp_path / "x"), "--shard-size", "lots"]) == 2
    assert "500MB" in capsys.readouterr().err
    assert parse_size("500MB") == 500_000_000 and parse_size("1G") == 10**9 and parse_size("2048") == 2048
    assert parse_size("2GiB") == 2 * 2**30 and parse_size("64kib") == 65536 and parse_size("1.5 MB") == 1_500_000


def _copy(out: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


@pytest.mark.parametrize("to", ["parquet", "webdataset"])
def test_damaged_gone_and_unreadable_inputs_are_named_and_the_rest_exported(embedded, tmp_path, capsys, to):
    out = _copy(embedded, tmp_path)
    folder = hearfuse.open_embeddings(out)
    (out / f"{folder.paths[0]}.npz").write_bytes(b"PK\x03\x04 cut short")  # damaged
    (out / f"{folder.paths[1]}.npz").unlink()  # gone
    dest = tmp_path / "dest"
    assert main(["export", str(out), "--to", to, str(dest), "--shard-files", "1", "-q"]) == 1
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 2 and any(folder.paths[0] in line for line in failed)
    index = json.loads((dest / "export.json").read_text())
    assert index["complete"] is True
    exported = sum(shard["files"] for shard in index["shards"])
    assert exported == len(folder) - 2
    # a rerun keeps what is complete, names the same inputs again, and still exits 1
    assert main(["export", str(out), "--to", to, str(dest), "--shard-files", "1", "-q"]) == 1
    assert len([line for line in capsys.readouterr().err.splitlines() if line.startswith("failed: ")]) == 2


def test_sizes_that_are_not_finite_and_an_unreadable_manifest_are_one_line(embedded, tmp_path, capsys):
    for size in ("inf", "nan", "1e400GB"):
        assert main(["export", str(embedded), "--to", "parquet", str(tmp_path / "p"), "--shard-size", size]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    out = _copy(embedded, tmp_path)
    (out / "manifest-shard-1-of-2.jsonl").mkdir()  # a manifest that cannot be read as a file
    assert main(["export", str(out), "--to", "parquet", str(tmp_path / "q")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "manifest-shard-1-of-2.jsonl" in error and "Traceback" not in error


def test_input_names_that_are_not_utf8_are_exported_with_escapes(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_tones(tmp_path / "tones", [0.5])
    name = os.fsdecode(b"caf\xe9.wav")
    (inputs / name).write_bytes((tmp_path / "tones" / "tone0.wav").read_bytes())
    out = tmp_path / "out"
    embed_files(hearfuse.load_model(crepe_tiny(tmp_path)), [inputs], out, progress=False)
    assert main(["export", str(out), "--to", "parquet", str(tmp_path / "pq"), "-q"]) == 0
    (path,) = pq.read_table(next((tmp_path / "pq").glob("*.parquet"))).column("path").to_pylist()
    assert path == "caf\\xe9.wav"


def test_a_folder_whose_files_share_no_kind_is_refused(tmp_path, capsys):
    inputs = tmp_path / "in"
    write_tones(inputs, [0.5, 0.6])
    model = hearfuse.load_model(crepe_tiny(tmp_path))
    out = tmp_path / "out"
    embed_files(model, [inputs / "tone0.wav"], out, kinds=["scene"], progress=False)
    embed_files(model, [inputs / "sub" / "tone1.wav"], out, kinds=["timestamp"], progress=False)
    assert main(["export", str(out), "--to", "parquet", str(tmp_path / "pq")]) == 2
    assert "no kind of embedding in common" in capsys.readouterr().err


def test_the_old_dtype_spelling_still_works_and_says_it_is_store_dtype(embedded, tmp_path, capsys):
    assert main(["export", str(embedded), "--to", "webdataset", str(tmp_path / "w"), "--dtype", "float16", "-q"]) == 0
    assert "--dtype is now --store-dtype" in capsys.readouterr().err
    sample = next(iter(wds.WebDataset(glob.glob(str(tmp_path / "w" / "*.tar")), shardshuffle=False).decode()))
    assert sample["scene_embedding.npy"].dtype == np.float16


def test_two_exports_into_one_folder_take_turns(embedded, tmp_path):
    """Both succeed with the same shards: neither removes the other's files."""
    dest = tmp_path / "dest"
    command = [sys.executable, "-m", "hearfuse", "export", str(embedded), "--to", "webdataset", str(dest)]
    command += ["--shard-files", "1", "-q"]
    import subprocess

    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert sorted(path.name for path in dest.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(5)]
    assert not list(dest.glob(".*.partial"))
