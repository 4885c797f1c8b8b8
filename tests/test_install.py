"""``pip install .`` into a fresh virtual environment beside *other* versions of the libraries
hearfuse depends on (the lower ends of its ranges, not the versions of constraints.txt), and the
embeddings it then makes equal this environment's.

It needs the package index (PyPI or the configured mirror) and about a minute; it skips, saying
so, where no index answers. torch stays at the version of this environment: other builds are
gigabytes of download, and torch's own range is checked by the metadata test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from . import processes

ROOT = Path(__file__).resolve().parent.parent

#: Versions other than constraints.txt's, at the lower ends of pyproject's ranges where a wheel
#: for this Python exists (a test fails if any lies outside the ranges).
OTHER_VERSIONS = {
    "numpy": "1.26.4",
    "scipy": "1.11.4",
    "transformers": "5.0.0",
    "h5py": "3.8.0",
    "soundfile": "0.12.0",
    "soxr": "0.3.7",
    "tqdm": "4.60.0",
}


def test_the_other_versions_are_inside_the_ranges_and_differ_from_the_tested_ones():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    ranges = {
        Requirement(r).name: Requirement(r).specifier
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    for name, version in OTHER_VERSIONS.items():
        assert ranges[name].contains(Version(version)), f"{name}=={version} is outside {ranges[name]}"
        assert pins[name] != version, f"{name}=={version} is what constraints.txt tests already"


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    # The test session sets HF_HUB_OFFLINE for hearfuse; pip needs the environment as the user has it.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "PIP_CONSTRAINT")}
    command = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    return processes.run(command, timeout=900, env=env)


def _embed(hearfuse: Path, config: Path, clip: Path, out: Path) -> dict[str, np.ndarray]:
    command = [str(hearfuse), "embed", str(clip), "-m", str(config), "--out", str(out)]
    processes.run(command, check=True, timeout=300, capture_output=False)
    with np.load(out / f"{clip.name}.npz") as data:
        return dict(data)


def test_pip_install_beside_other_versions_embeds_as_this_environment_does(tmp_path, tiny_fusion_config):
    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    probe = _pip(python, "download", "--no-deps", "--dest", str(tmp_path / "probe"), "tqdm==4.60.0")
    if probe.returncode != 0:
        pytest.skip(f"no package index answers here: {probe.stderr.strip().splitlines()[-1:]}")
    this_torch = torch.__version__.split("+")[0]
    pins = [f"{name}=={version}" for name, version in OTHER_VERSIONS.items()]
    installed = _pip(python, "install", "--quiet", f"torch=={this_torch}", *pins, str(ROOT))
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = json.loads(_pip(python, "list", "--format", "json").stdout)
    versions = {item["name"].lower(): item["version"] for item in listed}
    for name, version in OTHER_VERSIONS.items():
        assert versions[name] == version, f"{name}: {versions[name]} installed, {version} asked"

    # the fusion recipe with tiny random wav2vec2/HuBERT checkpoints (transformers 5.0 reads what this
    # environment's transformers saved) and real CREPE tiny weights
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(tiny_fusion_config.to_dict()))
    clip = tmp_path / "clip.wav"
    rng = np.random.default_rng(0)
    sf.write(clip, (0.1 * rng.standard_normal(24000)).astype(np.float32), 16000)
    theirs = _embed(venv / "bin" / "hearfuse", config, clip, tmp_path / "out_fresh")
    ours = _embed(Path(sys.executable).parent / "hearfuse", config, clip, tmp_path / "out_here")
    assert theirs.keys() == ours.keys()
    for key in ours:
        np.testing.assert_allclose(theirs[key], ours[key], rtol=1e-4, atol=1e-5, err_msg=key)
    # the published HEAR 2021 results ship inside the package (package data), not only in the source tree
    shipped = processes.run(
        [str(venv / "bin" / "hearfuse"), "reference", "--model", "crepe", "--json"],
        timeout=120,
        cwd=tmp_path,
    )
    assert shipped.returncode == 0, shipped.stderr
    assert json.loads(shipped.stdout)["model"]["submission"] == "HEAR torchcrepe"
