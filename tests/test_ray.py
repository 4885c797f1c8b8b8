"""``--ray``: the same outputs, bytes for bytes, as one process; every input done once when a model
worker or the driver is killed; evaluation on Ray equal to a serial run.

One cluster serves every test here: ``ray start --head --block`` on 127.0.0.1 with 2 CPUs, which
this process joins with ``ray.init`` and the command-line tests with ``--ray ADDRESS``; it is
stopped by its process group at the end.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hearfuse.catalogue import describe
from hearfuse.cluster import check_cluster
from hearfuse.collection.ray_writer import embed_files_on_ray
from hearfuse.collection.writer import embed_files
from hearfuse.errors import UsageError
from hearfuse.hear import resolve_config
from hearfuse.model import FusionModel

from . import taskgen

# Loopback only: Ray turns 127.0.0.1 in an address into the machine's own IP unless it is told that
# this "cluster" is one machine. Ray 2.60 heads authenticate: the cluster's token is made here, for
# the head and every client this module starts, and given as RAY_AUTH_TOKEN, so nothing is read from
# or written to anyone's ~/.ray. All three are read when ray is imported, so they are set before.
TOKEN = secrets.token_hex(32)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = TOKEN
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'hearfuse[ray]'; make install has it)")

ROOT = Path(__file__).resolve().parent.parent
CREPE_TINY = str(ROOT / "examples" / "crepe_tiny.toml")
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The address of a 2-CPU Ray head on 127.0.0.1, joined by this process."""
    port = _free_port()
    log = tmp_path_factory.mktemp("ray") / "head.log"
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # joined only once the head answers and takes the token
            try:
                check_cluster(address)
                break
            except UsageError:
                if time.monotonic() > deadline or head.poll() is not None:
                    raise RuntimeError(f"the Ray head did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        yield address
    finally:
        ray.shutdown()
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Clips of many lengths and rates (several batches, resampling), a folder, and two bad files."""
    root = tmp_path_factory.mktemp("collection")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    for index in range(14):
        seconds = 1.0 + index * 0.75
        sf.write(
            root / f"clip{index:02d}.wav", (0.1 * rng.standard_normal(int(16000 * seconds))).astype("float32"), 16000
        )
    for index in range(3):
        sf.write(root / "sub" / f"other{index}.flac", (0.1 * rng.standard_normal(22050 * 2)).astype("float32"), 22050)
    (root / "sub" / "empty.wav").write_bytes(b"")
    (root / "not_audio.wav").write_bytes(b"this is not a wav file")
    return root


@pytest.fixture(scope="module")
def reference(collection, tmp_path_factory) -> Path:
    """The single-process output of the collection."""
    out = tmp_path_factory.mktemp("single")
    model = FusionModel.from_config(resolve_config(CREPE_TINY))
    summary = embed_files(model, [collection], out, progress=False)
    assert summary.embedded == 17 and len(summary.failures) == 2
    return out


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npz"))}


def _final_records(out: Path) -> dict[str, dict]:
    import dataclasses

    from hearfuse.collection.layout import read_manifests

    return {path: dataclasses.asdict(record) for path, record in read_manifests(out).items()}


def _ok_records(out: Path) -> list[str]:
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return [r["path"] for r in lines if r["status"] == "ok"]


def assert_same_as_reference(out: Path, reference: Path) -> None:
    assert _outputs(out) == _outputs(reference)
    ours, theirs = _final_records(out), _final_records(reference)
    assert {k: r["status"] for k, r in ours.items()} == {k: r["status"] for k, r in theirs.items()}
    assert {k: r["error"] for k, r in ours.items()} == {k: r["error"] for k, r in theirs.items()}
    assert not list(out.rglob("*.partial"))


def test_ray_outputs_equal_a_single_process_byte_for_byte(cluster, collection, reference, tmp_path):
    summary = embed_files_on_ray(resolve_config(CREPE_TINY), [collection], tmp_path, workers=1, progress=False)
    assert summary.embedded == 17 and len(summary.failures) == 2
    assert_same_as_reference(tmp_path, reference)
    assert sorted(_ok_records(tmp_path)) == sorted(set(_ok_records(tmp_path)))  # each input once
    again = embed_files_on_ray(resolve_config(CREPE_TINY), [collection], tmp_path, workers=1, progress=False)
    assert again.embedded == 0 and again.skipped == 17  # resumable exactly like a single process


REAL_FUSION = ROOT / "examples" / "whisper_crepe_ge2e_wakeword.toml"


def test_a_fusion_of_four_real_models_on_ray_equals_a_single_process(cluster, tmp_path):
    """Whisper tiny.en, CREPE, GE2E and speech_embedding (weights from packages): what Ray's workers write is
    what one process writes, bytes for bytes."""
    config = resolve_config(str(REAL_FUSION))
    if not describe(config)["weights_available"]:
        pytest.skip("the real models' packages are not installed (make install installs them)")
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for index, seconds in enumerate((0.5, 1.7, 3.2)):  # one shorter than speech_embedding's 775 ms window
        audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype("float32")
        sf.write(tmp_path / "in" / f"clip{index}.wav", audio, 16000)
    single = embed_files(FusionModel.from_config(config), [tmp_path / "in"], tmp_path / "single", progress=False)
    on_ray = embed_files_on_ray(config, [tmp_path / "in"], tmp_path / "ray", workers=1, progress=False)
    assert single.embedded == on_ray.embedded == 3
    assert_same_as_reference(tmp_path / "ray", tmp_path / "single")


def test_a_rerun_on_ray_in_another_precision_embeds_again_and_says_why(cluster, collection, tmp_path, caplog):
    import logging

    config = resolve_config(CREPE_TINY)
    first = embed_files_on_ray(config, [collection], tmp_path, workers=1, progress=False)
    with caplog.at_level(logging.INFO, logger="hearfuse"):
        again = embed_files_on_ray(config, [collection], tmp_path, workers=1, dtype="bfloat16", progress=False)
    assert again.embedded == first.embedded and again.skipped == 0
    said = [r.getMessage() for r in caplog.records if r.name.startswith("hearfuse.collection")]
    assert said == [f"embedding {first.embedded} files again: the dtype (float32 -> bfloat16) changed"]
    assert again.again == {"the dtype (float32 -> bfloat16) changed": first.embedded}  # also for library callers
    ok = [record for record in _final_records(tmp_path).values() if record["status"] == "ok"]
    assert {record["dtype"] for record in ok} == {"bfloat16"}


def test_float16_storage_on_ray_equals_a_single_process(cluster, collection, tmp_path):
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    model = FusionModel.from_config(resolve_config(CREPE_TINY))
    embed_files(model, [collection], single, store_dtype="float16", progress=False)
    config = resolve_config(CREPE_TINY)
    embed_files_on_ray(config, [collection], on_ray, workers=1, store_dtype="float16", progress=False)
    assert _outputs(on_ray) == _outputs(single)
    stored = {record["store_dtype"] for record in _final_records(on_ray).values() if record["status"] == "ok"}
    assert stored == {"float16"}


def _kill_when(condition, command: list[str]) -> threading.Thread:
    """In the background: once ``condition()`` holds, SIGKILL the processes ``pgrep -f`` finds."""

    def watch():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not condition():
            time.sleep(0.05)
        found = subprocess.run(["pgrep", "-f", *command], capture_output=True, text=True).stdout.split()
        for pid in found:
            os.kill(int(pid), signal.SIGKILL)
        watch.killed = found

    thread = threading.Thread(target=watch, daemon=True)
    watch.killed = []
    thread.start()
    thread.killed = lambda: watch.killed
    return thread


def _ok_count(out: Path) -> int:
    manifest = out / "manifest.jsonl"
    return manifest.read_text().count('"status": "ok"') if manifest.is_file() else 0


def test_a_model_worker_killed_mid_run_is_restarted_and_every_input_is_done_once(
    cluster, collection, reference, tmp_path
):
    killer = _kill_when(lambda: _ok_count(tmp_path) >= 3, ["ray::_EmbedWorker"])
    summary = embed_files_on_ray(
        resolve_config(CREPE_TINY), [collection], tmp_path, workers=1, batch_seconds=2.0, progress=False
    )
    killer.join()
    assert killer.killed(), "no model worker was found to kill"
    assert summary.embedded == 17 and len(summary.failures) == 2
    assert_same_as_reference(tmp_path, reference)
    assert sorted(_ok_records(tmp_path)) == sorted(set(_ok_records(tmp_path)))


def test_the_driver_killed_with_sigkill_and_started_again_resumes(cluster, collection, reference, tmp_path):
    command = [str(BIN / "hearfuse"), "embed", str(collection), "-m", CREPE_TINY, "--out", str(tmp_path)]
    command += ["--ray", cluster, "--batch-seconds", "2", "-q"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _ok_count(tmp_path) < 3 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert driver.returncode == -signal.SIGKILL, driver.stderr.read()
    finished = len(set(_ok_records(tmp_path)))
    assert 3 <= finished < 17
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1, rerun.stderr  # the two bad files
    assert f"skipped {finished} already done" in rerun.stdout
    assert "Traceback" not in rerun.stderr
    assert_same_as_reference(tmp_path, reference)


def test_evaluate_on_ray_equals_a_serial_run(cluster, tmp_path):
    from hearfuse.evaluation.evaluate import EvaluationSettings, evaluate
    from hearfuse.evaluation.protocol import Protocol

    tasks = tmp_path / "tasks"
    taskgen.scene_task(tasks)
    taskgen.scene_task(tasks, multilabel=True)
    protocol = Protocol(grid_points=2, max_epochs=40)

    def run(name: str, on_ray: bool) -> list[dict]:
        settings = EvaluationSettings(tmp_path / name / "cache", tmp_path / name / "results", protocol=protocol)
        return evaluate([CREPE_TINY], tasks, settings, on_ray=on_ray)

    serial, distributed = run("serial", False), run("ray", True)
    assert [r["status"] for r in distributed] == ["ok", "ok"]
    for ours, theirs in zip(distributed, serial):
        assert (ours["model"], ours["task"]) == (theirs["model"], theirs["task"])
        for key in ("test", "validation_score", "selected_hyperparameters", "grid"):
            assert ours[key] == theirs[key], key


def test_the_evaluate_command_on_ray_writes_what_a_serial_run_writes(cluster, tmp_path):
    from hearfuse.cli import main

    tasks = tmp_path / "tasks"
    taskgen.scene_task(tasks)
    common = ["evaluate", "-m", CREPE_TINY, "--tasks", str(tasks), "--grid-points", "1", "--max-epochs", "20", "-q"]
    assert main([*common, "--results", str(tmp_path / "serial"), "--device", "cpu"]) == 0
    assert main([*common, "--results", str(tmp_path / "ray"), "--ray", cluster]) == 0
    (serial,) = (tmp_path / "serial").glob("*/*.json")
    (distributed,) = (tmp_path / "ray").glob("*/*.json")
    ours, theirs = json.loads(distributed.read_text()), json.loads(serial.read_text())
    assert ours["status"] == "ok" and ours["test"] == theirs["test"] and ours["grid"] == theirs["grid"]


@pytest.mark.parametrize(
    "options, words",
    [(["--workers", "0"], "--workers and --worker-cpus must be at least 1"), (["--worker-cpus", "3"], "need more")],
)
def test_worker_counts_the_cluster_cannot_hold_are_usage_errors(cluster, collection, tmp_path, capsys, options, words):
    from hearfuse.cli import main

    assert main(["embed", str(collection), "-m", CREPE_TINY, "--out", str(tmp_path), "--ray", cluster, *options]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    "credentials, words",
    [
        ({"RAY_AUTH_MODE": "token"}, "RAY_AUTH_MODE=token but this client has no token"),
        ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}, "the cluster refused the token from RAY_AUTH_TOKEN"),
        ({}, "the cluster requires a token and this client sends none"),
    ],
    ids=["no-token", "another-token", "no-auth-mode"],
)
@pytest.mark.parametrize("command", ["embed", "evaluate"])
def test_a_client_without_the_clusters_token_is_told_in_one_line(
    cluster, collection, tmp_path, credentials, words, command
):
    """Missing or wrong credentials: exit 2, one line saying what to do, at once (not Ray's 20 s of retries)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | credentials
    env["HOME"] = str(tmp_path)  # an empty home: no ~/.ray/auth_token
    if command == "embed":
        args = ["embed", str(collection), "-m", CREPE_TINY, "--out", str(tmp_path / "out")]
    else:
        taskgen.scene_task(tmp_path / "tasks")
        args = ["evaluate", "-m", CREPE_TINY, "--tasks", str(tmp_path / "tasks"), "--results", str(tmp_path / "out")]
    started = time.monotonic()
    result = subprocess.run([str(BIN / "hearfuse"), *args, "--ray", cluster], env=env, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert words in lines[0] and f"--ray {cluster}" in lines[0] and "ray get-auth-token" in lines[0], lines[0]
    assert time.monotonic() - started < 15
    assert not list(tmp_path.glob("out/**/*.json*"))  # nothing written


def test_an_address_where_nothing_listens_is_told_at_once(tmp_path):
    command = ["embed", str(tmp_path), "--out", str(tmp_path / "out"), "--ray", f"127.0.0.1:{_free_port()}"]
    result = subprocess.run([str(BIN / "hearfuse"), *command], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "nothing answers there" in lines[0], result.stderr
