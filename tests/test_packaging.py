"""Package metadata: version ranges (so hearfuse installs beside other versions), exact versions only in
constraints.txt, which must satisfy them; one version source."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = Version(version)
    return pins


def test_runtime_requirements_are_ranges_that_the_tested_versions_satisfy():
    project = _pyproject()["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = _constraints()
    for requirement in requirements:
        if requirement.name == "hearfuse":
            continue
        assert not any(spec.operator == "==" for spec in requirement.specifier), f"{requirement} is pinned exactly"
        assert any(spec.operator in (">=", ">") for spec in requirement.specifier), f"{requirement} has no lower bound"
        tested = pins.get(requirement.name.lower().replace("_", "-"))
        if tested is not None:
            assert requirement.specifier.contains(tested), (
                f"tested {requirement.name}=={tested} is outside {requirement}"
            )
    for name in ("torch", "transformers", "numpy", "scipy", "pytest", "ruff"):
        assert name in pins, f"constraints.txt lacks {name}"


def test_one_version_source_and_a_setuptools_floor_that_reads_the_metadata():
    data = _pyproject()
    assert "version" not in data["project"] and "version" in data["project"]["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "hearfuse.__version__"}
    import hearfuse

    assert Version(hearfuse.__version__)
    # a license expression string (PEP 639) needs setuptools >= 77
    assert isinstance(data["project"]["license"], str) and "setuptools>=77" in data["build-system"]["requires"]
