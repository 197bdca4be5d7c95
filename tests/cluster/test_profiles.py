"""The SLURM profile and the workflow profile, checked without a cluster (fast, no root)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from slurm_cluster import PROFILE_DIR, REPO_ROOT
from test_slurm import TOY_SNAKEFILE, make_workflow

WORKFLOW_PROFILE = next(
    (
        REPO_ROOT / rel / "config.yaml"
        for rel in ("profiles/default", "workflow/profiles/default")
        if (REPO_ROOT / rel / "config.yaml").exists()
    ),
    REPO_ROOT / "workflow" / "profiles" / "default" / "config.yaml",
)
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(workdir: Path, *args: str) -> str:
    res = subprocess.run(
        [SNAKEMAKE, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    return out


def test_slurm_profile_content():
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    # sacct needs slurmdbd; without it Snakemake never learns a job's status
    assert profile["slurm-status-command"] == "squeue"
    # GPUs go through the plugin's gpu/gres resources, never slurm_extra
    assert "slurm_extra" not in str(profile)
    assert profile["rerun-incomplete"] is True


def test_workflow_profile_content():
    profile = yaml.safe_load(WORKFLOW_PROFILE.read_text())
    # keys here override --profile slurm: `cores` would cap every SLURM job's threads,
    # `default-resources` would drop the SLURM profile's account/partition
    assert not {"cores", "default-resources", "executor", "jobs"} & set(profile), profile


def test_profiles_are_found_like_in_the_repository(tmp_path: Path):
    """`snakemake --profile slurm` finds ./slurm; the workflow profile applies by itself.

    Snakemake 9 looks for the workflow profile in profiles/default next to the working
    directory or next to the Snakefile: workflow/profiles/default is only found when the
    Snakefile is workflow/Snakefile.
    """
    snakefile = make_workflow(tmp_path, TOY_SNAKEFILE)
    (tmp_path / "slurm").symlink_to(PROFILE_DIR, target_is_directory=True)
    where = WORKFLOW_PROFILE.parent.relative_to(REPO_ROOT)
    found = (tmp_path / "profiles" / "default").exists() or (
        snakefile.parent / "profiles" / "default"
    ).exists()
    assert found, (
        f"Snakemake will not find the workflow profile {where} for the Snakefile at "
        f"{snakefile.relative_to(tmp_path)}: move it to profiles/default/ or the Snakefile to "
        "workflow/Snakefile"
    )

    local = snakemake(tmp_path, "--cores", "1", "--dry-run")
    assert "Using workflow specific profile" in local, local

    cluster = snakemake(
        tmp_path, "--profile", "slurm", "--dry-run", "--set-resources", "c:mem_mb=321"
    )
    assert "Using profiles slurm and workflow specific profile" in cluster, cluster
    assert "mem_mb=321" in cluster, cluster


def test_unavailable_cluster_skips_but_fails_on_ci(monkeypatch):
    import pytest
    from slurm_cluster import skip_or_fail

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        skip_or_fail("needs root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run on CI: needs root"):
        skip_or_fail("needs root")
