"""The lock, the conda environment and pyproject's ranges agree; untested versions are flagged."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from lookright import versions

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "envs" / "lookright.lock.txt"


def test_conda_env_is_generated_from_the_lock():
    expected = versions.conda_env(LOCK.read_text())
    actual = (REPO / "envs" / "lookright.yaml").read_text()
    assert actual == expected, "envs/lookright.yaml differs from the lock: run `make lock`"


def test_every_locked_package_has_hashes():
    text = LOCK.read_text()
    pins = versions.lock_pins(text)
    assert len(pins) > 100 and "torch" not in pins  # torch is installed first, on its own
    assert text.count("==") == len(pins)
    assert text.count("--hash=sha256:") >= len(pins)


def _dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + project["optional-dependencies"]["test"]
    return [Requirement(line) for line in lines]


def test_pyproject_ranges_end_just_above_the_locked_versions():
    """Each range admits its locked version and is capped at that version's next minor."""
    pins = versions.lock_pins(LOCK.read_text())
    for requirement in _dependencies():
        name = versions.canonical(requirement.name)
        if name == "torch":
            continue
        locked = Version(pins[name])
        assert requirement.specifier.contains(locked), f"{requirement} excludes locked {locked}"
        caps = [Version(s.version) for s in requirement.specifier if s.operator == "<"]
        exact = [s for s in requirement.specifier if s.operator == "=="]
        if exact:
            continue
        assert caps, f"{requirement}: no upper bound (the newest tested is {locked})"
        assert caps[0] == Version(f"{locked.major}.{locked.minor + 1}"), (
            f"{requirement}: the cap should be {locked.major}.{locked.minor + 1} "
            f"(locked {locked}); raise it only with a new lock"
        )


def test_installed_environment_matches_the_lock():
    """What `make install` installed is what the lock says (CI tests the lock)."""
    pins = versions.lock_pins(LOCK.read_text())
    for name in ("transformers", "trl", "peft", "accelerate", "mlflow", "snakemake"):
        assert str(versions.installed_version(name)) == pins[name], name


def test_untested_versions_warn_and_broken_ones_fail(monkeypatch):
    installed = {
        "transformers": "5.40.0",
        "trl": "0.29.1",
        "peft": "0.21.2",
        "accelerate": "1.16.0",
    }
    monkeypatch.setattr(versions, "installed_version", lambda name: Version(installed[name]))
    errors, warns = versions.problems()
    assert len(warns) == 1 and "transformers 5.40.0" in warns[0] and "<5.26" in warns[0]
    assert len(errors) == 1 and "trl 0.29.1 is not supported" in errors[0]
    assert "trl<1.17,>=1.16" in errors[0]  # names the range to install


def test_latest_overrides_lift_caps_to_the_next_major():
    overrides = versions.latest_overrides(REPO / "pyproject.toml").splitlines()
    assert "transformers>=5.23,<6" in overrides
    assert "peft>=0.21,<1" in overrides
    assert not any(line.startswith(("torch", "ruff", "pysaliency")) for line in overrides)


@pytest.mark.parametrize("command", [["report"], ["check"]])
def test_versions_command_line(command):
    result = subprocess.run(
        [sys.executable, "-m", "lookright.versions", *command], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    if command == ["report"]:
        assert "transformers" in result.stdout and "tested" in result.stdout
