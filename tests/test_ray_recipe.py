"""The two-machine Ray recipe of the documentation (docs/guide/ray.md), run as written from fresh homes:
machine A (head and driver) and machine B (a second node), each with its own empty HOME, on loopback addresses
127.0.0.2 and 127.0.0.3 inside a network and PID namespace of the test's own. Ray's servers listen on every
interface of a multi-node cluster; in that namespace every interface is a private loopback, and
everything the recipe started ends with the namespace's first process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray", reason="Ray is not installed (pip install 'hearfuse[ray]'; make install has it)")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CREPE_TINY = str(ROOT / "examples" / "crepe_tiny.toml")
RECIPE_HEAD, RECIPE_PORT = "10.0.0.1", "6379"
HEAD, NODE_B, PORT = "127.0.0.2", "127.0.0.3", "6380"

#: (machine, the recipe's line, what this one-machine run adds to it). The additions keep two Ray
#: nodes small on 2 cores and name B's address, which a real machine B finds by itself.
SMALL = " --num-cpus 1 --object-store-memory 100000000 --disable-usage-stats"
RECIPE = [
    ("A", "export RAY_AUTH_MODE=token", ""),
    ("A", "ray get-auth-token --generate > /dev/null", ""),
    (
        "A",
        f"ray start --head --node-ip-address {RECIPE_HEAD} --port {RECIPE_PORT}",
        SMALL + " --include-dashboard false",
    ),
    ("B", "mkdir -p ~/.ray && scp 10.0.0.1:.ray/auth_token ~/.ray/auth_token", ""),
    ("B", "export RAY_AUTH_MODE=token", ""),
    ("B", f"ray start --address {RECIPE_HEAD}:{RECIPE_PORT}", SMALL + f" --node-ip-address {NODE_B}"),
]


def _documented_recipe() -> str:
    text = (ROOT / "docs" / "guide" / "ray.md").read_text()
    start = text.index("Two machines, A (10.0.0.1)")
    return text[start : text.index("How it works", start)]


def test_every_line_of_the_recipe_is_in_the_documentation():
    recipe = _documented_recipe()
    for _, line, _ in RECIPE:
        assert line in recipe, line
    assert f"--ray {RECIPE_HEAD}:{RECIPE_PORT}" in recipe and "ray stop" in recipe


def _on_loopback(line: str, home_a: Path) -> str:
    line = line.replace(f"{RECIPE_HEAD}:{RECIPE_PORT}", f"{HEAD}:{PORT}").replace(
        f"--port {RECIPE_PORT}", f"--port {PORT}"
    )
    line = line.replace(f"--node-ip-address {RECIPE_HEAD}", f"--node-ip-address {HEAD}")
    # B fetches A's token; on one machine, a copy from A's home is that step
    return line.replace(f"scp {RECIPE_HEAD}:.ray/auth_token", f"cp {home_a}/.ray/auth_token")


def test_the_documented_recipe_from_fresh_homes_runs_hearfuse_embed_on_two_nodes(tmp_path):
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2) for a private network namespace")
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network and PID namespace here: {probe.stderr.strip()}")
    # short paths: Ray's unix sockets live below the temporary folder
    scratch = Path(tempfile.mkdtemp(prefix="hf-recipe-"))
    try:
        homes = {machine: scratch / machine for machine in "AB"}
        for home in homes.values():
            home.mkdir()
        corpus, out = scratch / "corpus", scratch / "emb"
        corpus.mkdir()
        rng = np.random.default_rng(0)
        for index in range(6):
            sf.write(
                corpus / f"clip{index}.wav", (0.1 * rng.standard_normal(16000 * (1 + index))).astype("float32"), 16000
            )

        def shell(machine: str, *lines: str) -> str:
            """One machine's fresh shell: its own HOME, nothing exported before."""
            return "( " + "; ".join([f"export HOME={homes[machine]}", f"cd {homes[machine]}", *lines]) + " )"

        def recipe(machine: str) -> list[str]:
            return [_on_loopback(line, homes["A"]) + added for where, line, added in RECIPE if where == machine]

        # two model workers of one CPU each: only a cluster that B joined (1 CPU a node) holds them
        driver = [CREPE_TINY, "--out", str(out), "--ray", f"{HEAD}:{PORT}", "--workers", "2", "--worker-cpus", "1"]
        script = "\n".join(
            [
                "set -euo pipefail",
                "ip link set lo up",
                f"export PATH={shlex.quote(str(BIN))}:$PATH TMPDIR={scratch}",
                shell("A", *recipe("A")),
                shell("B", *recipe("B")),
                shell("A", "export RAY_AUTH_MODE=token", f"hearfuse embed {corpus} --model {shlex.join(driver)} -q"),
                "ray stop",
            ]
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HF_HUB_OFFLINE"))}
        result = subprocess.run(
            ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", script],
            env=env, capture_output=True, text=True, timeout=420,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert sorted(r["path"] for r in records if r["status"] == "ok") == [f"clip{i}.wav" for i in range(6)]
        assert (homes["B"] / ".ray" / "auth_token").read_text() == (homes["A"] / ".ray" / "auth_token").read_text()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
