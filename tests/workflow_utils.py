"""Run the real Snakemake workflow in an isolated copy (tests of the DAG)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "envs", "config", "profiles")


def copy_workflow(destination: Path) -> Path:
    """Copy the workflow files and the package sources (for code fingerprints) to a folder."""
    destination.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, destination / part, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination / part)
    shutil.copytree(
        REPO / "src" / "lookright",
        destination / "src" / "lookright",
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
    return destination


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run snakemake in ``workdir`` with the venv's executables first on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [f"{bin_dir}/snakemake", "--cores", "2", *args]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout
    )


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """``{rule: count}`` that a dry run would execute (empty when nothing is to be done)."""
    result = snakemake(workdir, "--dry-run", *args)
    if result.returncode != 0:
        raise AssertionError(f"dry run failed:\n{result.stdout}\n{result.stderr}")
    text = result.stdout + result.stderr
    match = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal", text, re.S)
    if not match:
        assert "Nothing to be done" in text, text
        return {}
    jobs = {}
    for line in match.group(1).splitlines():
        rule, count = line.split()
        jobs[rule] = int(count)
    jobs.pop("all", None)
    return jobs
