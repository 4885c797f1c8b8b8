"""The error policy through the real command line, in a subprocess: a user's mistake is one line on
stderr naming the thing, exit status 2, and never a traceback."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from . import processes

CREPE = '[[members]]\nname = "crepe"\nfamily = "crepe"\ncheckpoint = "tiny"\n'


# Permission failures are tested as a user whom permission bits refuse: a real unprivileged user
# (uid 65534) wherever that user can start this Python; else root without the two capabilities by
# which it ignores permission bits (uid still 0, so this Python stays reachable).
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
WITHOUT_PERMISSION_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                               "--inh-caps=-dac_override,-dac_read_search", "--"]  # fmt: skip


@functools.cache
def _nobody_cannot_start_python() -> str | None:
    """Why uid 65534 cannot run this Python with hearfuse, or None when it can."""
    if os.geteuid() != 0:
        return "not root: the tests already run as an unprivileged user"
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import hearfuse"], cwd="/", capture_output=True, text=True
    )
    return None if probe.returncode == 0 else (probe.stderr.strip().splitlines() or ["exit status"])[-1]


@pytest.fixture(params=["uid-65534", "root-without-override"])
def refused(request, tmp_path_factory) -> tuple[list[str], Path]:
    """(prefix, workdir): how to run a command as a user whom permission bits refuse, and a folder that
    user can reach and write (pytest's own folders are root's alone). One of the two params runs."""
    why_not = _nobody_cannot_start_python()
    if request.param == "uid-65534" and why_not:
        pytest.skip(f"uid 65534 cannot run hearfuse with {sys.executable} ({why_not}); tested as root without override")
    if request.param == "root-without-override" and not why_not:
        pytest.skip("tested as a real unprivileged user (uid 65534) instead")
    prefix = AS_NOBODY if request.param == "uid-65534" else WITHOUT_PERMISSION_OVERRIDE if os.geteuid() == 0 else []
    workdir = Path(tempfile.mkdtemp(prefix="hearfuse-refused-"))
    (workdir / "home").mkdir()
    for folder in (workdir, workdir / "home"):
        folder.chmod(0o777)
    sf.write(workdir / "clip.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    yield prefix, workdir
    for path in workdir.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(workdir)


def run(*args: str, cwd: Path, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd / "home")} if prefix == AS_NOBODY else None
    result = processes.run(
        [*prefix, sys.executable, "-m", "hearfuse", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if prefix and result.stderr.startswith("setpriv:"):
        pytest.skip(f"cannot run as a user whom permission bits refuse here: {result.stderr.strip()}")
    return result


def assert_usage_error(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def workdir(tmp_path) -> Path:
    sf.write(tmp_path / "clip.wav", (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    return tmp_path


def config(workdir: Path, text: str, name: str = "mine.toml") -> str:
    (workdir / name).write_text(text)
    return name


@pytest.mark.parametrize(
    "text, words",
    [
        ('interleave = "false"\n' + CREPE, ["mine.toml", "interleave must be true or false"]),
        ("scene_groups = 2.5\n" + CREPE, ["mine.toml", "scene_groups must be an integer"]),
        ('scene_groups = "2"\n' + CREPE, ["scene_groups must be an integer"]),
        ('feature_dim = "128"\n' + CREPE, ["feature_dim must be an integer"]),
        ('members = "crepe"\n', ["members: must be a non-empty list"]),
        ("window_seconds = 1e308\n" + CREPE, ["window_seconds must be <= 86400"]),
        (CREPE + 'options = { hop_ms = "50" }\n', ["members[0].options: hop_ms must be a number"]),
        (CREPE + "options = { hop = 50 }\n", ["unknown option(s) ['hop']"]),
        (CREPE + 'options = { conv_form = "fft" }\n', ["conv_form must be one of auto, conv, matmul"]),
        (CREPE + "options = { hop_ms = 0.01 }\n", ["member 'crepe'", "hop_ms=0.01 must be a positive whole number"]),
        ("window_seconds = 0.05\nwindow_context_seconds = 0.0\n" + CREPE, ["window_seconds 0.05 is too short"]),
        ("members = [\n", ["not valid TOML"]),
    ],
)
def test_config_mistakes(workdir, text, words):
    name = config(workdir, text)
    assert_usage_error(run("embed", "clip.wav", "-m", name, "--out", "out", "-q", cwd=workdir), *words)


def test_a_crepe_checkpoint_that_is_not_hdf5(workdir):
    (workdir / "weights.h5").write_text("not weights")
    name = config(workdir, CREPE.replace('"tiny"', f'"{workdir / "weights.h5"}"'))
    assert_usage_error(run("embed", "clip.wav", "-m", name, "--out", "out", "-q", cwd=workdir), "not a Keras HDF5")


def test_out_that_is_a_file_or_below_one(workdir):
    (workdir / "taken").write_text("x")
    assert_usage_error(
        run("embed", "clip.wav", "-m", "crepe", "--out", "taken", cwd=workdir), "--out taken", "is a file"
    )
    assert_usage_error(
        run("embed", "clip.wav", "-m", "crepe", "--out", "taken/sub", cwd=workdir), "lies below", "which is a file"
    )
    assert_usage_error(
        run("evaluate", "-m", "crepe", "--tasks", ".", "--results", "taken", cwd=workdir), "--results taken"
    )


def test_out_that_is_not_writable(refused):
    prefix, workdir = refused
    (workdir / "locked").mkdir(mode=0o555)
    result = run("embed", "clip.wav", "-m", "crepe", "--out", "locked", cwd=workdir, prefix=prefix)
    assert_usage_error(result, "--out locked", "cannot write there")
    result = run("evaluate", "-m", "crepe", "--tasks", ".", "--results", "locked/r", cwd=workdir, prefix=prefix)
    assert_usage_error(result, "--results locked/r", "cannot write there")


def _failed_records(workdir: Path) -> dict[str, dict]:
    records = [json.loads(line) for line in (workdir / "out" / "manifest.jsonl").read_text().splitlines()]
    return {record["path"]: record for record in records}


def test_unreadable_files_and_folders_in_a_scan_are_reported_and_the_run_goes_on(refused):
    """Exit 1 (a per-file problem), each unreadable thing named in the manifest with its reason; the
    readable clip is embedded."""
    prefix, workdir = refused
    collection = workdir / "collection"
    (collection / "closed").mkdir(parents=True)
    (workdir / "clip.wav").rename(collection / "good.wav")
    (collection / "secret.wav").write_bytes((collection / "good.wav").read_bytes())
    (collection / "closed" / "inner.wav").write_bytes((collection / "good.wav").read_bytes())
    os.chmod(collection / "secret.wav", 0)
    os.chmod(collection / "closed", 0)
    mine = config(workdir, CREPE)
    result = run("embed", "collection", "-m", mine, "--out", "out", cwd=workdir, prefix=prefix)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    by_path = _failed_records(workdir)
    assert by_path["good.wav"]["status"] == "ok"
    assert by_path["secret.wav"]["status"] == "failed" and "ermission" in by_path["secret.wav"]["error"]
    assert by_path["closed"]["status"] == "failed" and "ermission" in by_path["closed"]["error"]


def test_named_inputs_that_cannot_be_examined_are_recorded_and_the_run_goes_on(refused):
    """A named file below a folder that cannot be entered, a name too long and a link loop: each failed
    with its reason (exit 1, no traceback), the good clip embedded."""
    prefix, workdir = refused
    (workdir / "closed").mkdir()
    (workdir / "closed" / "inside.wav").write_bytes((workdir / "clip.wav").read_bytes())
    os.chmod(workdir / "closed", 0)
    os.symlink("loop.wav", workdir / "loop.wav")
    too_long = "x" * 300 + ".wav"
    mine = config(workdir, CREPE)
    result = run("embed", "closed/inside.wav", too_long, "loop.wav", "clip.wav", "-m", mine, "--out", "out",
                 cwd=workdir, prefix=prefix)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    by_path = _failed_records(workdir)
    assert by_path["clip.wav"]["status"] == "ok"
    assert by_path["inside.wav"]["status"] == "failed" and "Permission denied" in by_path["inside.wav"]["error"]
    assert by_path[too_long]["status"] == "failed" and "name too long" in by_path[too_long]["error"]
    assert by_path["loop.wav"] == {**by_path["loop.wav"], "status": "failed", "error": "symbolic link loop"}


@pytest.mark.parametrize(
    "device, words",
    [("bogus", ["--device 'bogus'", "expected a torch device"]), ("cuda", ["--device cuda", "no CUDA device"])],
)
def test_devices(workdir, device, words):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_usage_error(run("embed", "clip.wav", "-m", "crepe", "--out", "out", "--device", device, cwd=workdir), *words)


def test_an_empty_shard(workdir):
    assert_usage_error(run("embed", "clip.wav", "-m", "crepe", "--out", "out", "--shard", "", cwd=workdir), "shard")


def test_out_where_even_root_cannot_write(workdir):
    """sysfs refuses new folders to everyone, root included: the same one-line error as a read-only folder."""
    if not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    result = run("embed", "clip.wav", "-m", "crepe", "--out", "/sys/hearfuse-out", cwd=workdir)
    assert_usage_error(result, "--out /sys/hearfuse-out", "cannot write there")


def test_a_ray_address_that_is_not_one(workdir):
    result = run("evaluate", "-m", "crepe", "--tasks", ".", "--ray", "nothere", cwd=workdir)
    assert_usage_error(result, "--ray 'nothere'", "expected a Ray address")


@pytest.mark.parametrize(
    "options, words",
    [
        (["--write-config", "chosen.txt"], ["--write-config chosen.txt", "expected a .toml or .json"]),
        (["--write-config", "taken/chosen.toml"], ["--write-config", "is a file"]),
        (["--members", "hubert"], ["--members hubert", "not a member of 'crepe'"]),
        (["--tasks", "no-such-tasks"], ["no-such-tasks", "does not exist"]),
    ],
)
def test_layers_mistakes(workdir, options, words):
    (workdir / "taken").write_text("a file")
    command = ["layers", "-m", "crepe", "--tasks", ".", "--results", "r", "-q", *options]
    assert_usage_error(run(*command, cwd=workdir), *words)


@pytest.fixture(scope="module")
def broken_checkpoints(tiny_checkpoints, tmp_path_factory) -> Path:
    """Checkpoints built here that their member cannot load: another family's, files cut short, files missing;
    beside them a hub cache (HF_HUB_CACHE) holding such a checkpoint under a hub id, and an intact .bin one."""
    import h5py
    import torch
    import transformers

    from hearfuse.upstream.crepe import packaged_weights

    root = tmp_path_factory.mktemp("broken")
    torch.manual_seed(0)
    ast = transformers.ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=32,
        max_length=128,
    )
    transformers.ASTModel(ast).save_pretrained(root / "ast")
    transformers.ASTFeatureExtractor(num_mel_bins=32, max_length=128).save_pretrained(root / "ast")
    wav2vec2 = tiny_checkpoints["wav2vec2"]

    def copy(source: Path, name: str) -> Path:
        shutil.copytree(source, root / name)
        return root / name

    def cut(path: Path, keep: int | None = None) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2 if keep is None else keep])

    cut(copy(wav2vec2, "half") / "model.safetensors")
    cut(copy(wav2vec2, "header") / "model.safetensors", 100)
    cut(copy(wav2vec2, "config") / "config.json", 100)
    (copy(wav2vec2, "no_weights") / "model.safetensors").unlink()
    cut(copy(root / "ast", "ast_extractor") / "preprocessor_config.json", 40)
    bin_dir = copy(wav2vec2, "bin")
    state = transformers.Wav2Vec2Model.from_pretrained(wav2vec2).state_dict()
    (bin_dir / "model.safetensors").unlink()
    torch.save(state, bin_dir / "pytorch_model.bin")
    cut(shutil.copy(bin_dir / "pytorch_model.bin", copy(bin_dir, "bin_half") / "pytorch_model.bin"))
    cut(Path(shutil.copy(packaged_weights("tiny"), root / "crepe_half.h5")))
    with h5py.File(shutil.copy(packaged_weights("tiny"), root / "crepe_without_conv3.h5"), "a") as weights:
        del weights["conv3"]
    for hub_id, source in (("someone--wav2vec2", wav2vec2), ("someone--half", root / "half")):
        snapshot = root / "hub" / f"models--{hub_id}" / "snapshots" / "0"
        shutil.copytree(source, snapshot)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0")
    return root


@pytest.mark.parametrize(
    "family, checkpoint, words",
    [
        ("hubert", "WAV2VEC2", ["holds a model of type 'wav2vec2'", "this family loads type 'hubert'"]),
        ("whisper", "ast", ["family 'whisper'", "type 'audio-spectrogram-transformer'", "loads type 'whisper'"]),
        ("ast", "WAV2VEC2", ["holds a model of type 'wav2vec2'", "loads type 'audio-spectrogram-transformer'"]),
        ("wav2vec2", "half", ["model.safetensors is cut short", "bytes of"]),
        ("wav2vec2", "header", ["model.safetensors is cut short", "fewer than its header"]),
        ("wav2vec2", "bin_half", ["pytorch_model.bin is cut short"]),
        ("wav2vec2", "config", ["config.json is not valid JSON"]),
        ("ast", "ast_extractor", ["preprocessor_config.json is not valid JSON"]),
        ("crepe", "crepe_half.h5", ["crepe_half.h5 is not a Keras HDF5 file", "truncated"]),
        ("crepe", "crepe_without_conv3.h5", ["does not hold the weights of CREPE tiny whole", "conv3"]),
        ("hubert", "someone/wav2vec2", ["'someone/wav2vec2' holds a model of type 'wav2vec2'"]),  # from the cache
        ("wav2vec2", "someone/half", ["'someone/half': model.safetensors is cut short"]),
    ],
)
def test_a_checkpoint_its_member_cannot_load_is_one_line(
    workdir, broken_checkpoints, tiny_checkpoints, monkeypatch, family, checkpoint, words
):
    monkeypatch.setenv("HF_HUB_CACHE", str(broken_checkpoints / "hub"))
    if checkpoint == "WAV2VEC2":
        checkpoint = str(tiny_checkpoints["wav2vec2"])
    elif "/" not in checkpoint:
        checkpoint = str(broken_checkpoints / checkpoint)
    name = config(workdir, f'[[members]]\nname = "m"\nfamily = "{family}"\ncheckpoint = "{checkpoint}"\n')
    result = run("embed", "clip.wav", "-m", name, "--out", "out", "-q", cwd=workdir)
    assert_usage_error(result, "member 'm'", f"family '{family}'", checkpoint, *words)


def test_a_checkpoint_without_weights_is_named(workdir, broken_checkpoints):
    checkpoint = broken_checkpoints / "no_weights"
    name = config(workdir, f'[[members]]\nname = "m"\nfamily = "wav2vec2"\ncheckpoint = "{checkpoint}"\n')
    result = run("embed", "clip.wav", "-m", name, "--out", "out", "-q", cwd=workdir)
    assert_usage_error(result, str(checkpoint), "holds no weights", "model.safetensors or pytorch_model.bin")


def test_the_checks_pass_sound_checkpoints(workdir, broken_checkpoints, tiny_checkpoints, monkeypatch):
    import torch

    from hearfuse.upstream import get_family

    family = get_family("wav2vec2")
    reference = family.build(str(tiny_checkpoints["wav2vec2"])).state_dict()
    for key, value in family.build(str(broken_checkpoints / "bin")).state_dict().items():  # a torch.save zip
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
    monkeypatch.setenv("HF_HUB_CACHE", str(broken_checkpoints / "hub"))
    name = config(workdir, '[[members]]\nname = "m"\nfamily = "wav2vec2"\ncheckpoint = "someone/wav2vec2"\n')
    result = run("embed", "clip.wav", "-m", name, "--out", "out", "-q", cwd=workdir)
    assert result.returncode == 0, result.stderr
