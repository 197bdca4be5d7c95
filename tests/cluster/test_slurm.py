"""`snakemake --profile slurm` against a real single-node SLURM cluster (see slurm_cluster.py).

Needs root (installs Debian's slurm packages if missing, starts munged/slurmctld/slurmd);
skips elsewhere, fails instead when CI=true. About 1.5-2 minutes in all.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from slurm_cluster import (
    REPO_ROOT,
    SlurmCluster,
    run_snakemake_on_slurm,
    submissions,
)

pytestmark = pytest.mark.slurm

TIMEOUT_S = 180  # per Snakemake run; a toy run takes ~25 s on an idle 2-core machine

# a -> (b, c) -> all (local): two rounds of SLURM jobs, b and c side by side.
TOY_SNAKEFILE = """
localrules: all

rule all:
    input:
        "results/b.txt",
        "results/c.txt",

rule a:
    output:
        "results/a.txt",
    log:
        "logs/a.log",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        'echo "rule=a slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'

rule b:
    input:
        "results/a.txt",
    output:
        "results/b.txt",
    log:
        "logs/b.log",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        'echo "rule=b slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'

rule c:
    input:
        "results/a.txt",
    output:
        "results/c.txt",
    log:
        "logs/c.log",
    resources:
        mem_mb=200,
        runtime=5,
        cpus_per_task=1,
        gpu=1,
    shell:
        'echo "rule=c slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'
"""

# all <- ok, all <- after <- flaky; flaky fails until the file `fixed` exists.
FLAKY_SNAKEFILE = """
localrules: all

rule all:
    input:
        "results/ok.txt",
        "results/after.txt",

rule ok:
    output:
        "results/ok.txt",
    log:
        "logs/ok.log",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        'echo "ok slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'

rule flaky:
    output:
        "results/flaky.txt",
    log:
        "logs/flaky.log",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        'echo partial > {output}; '
        'if [ ! -e fixed ]; then echo "flaky: failing on purpose" | tee {log} >&2; exit 3; fi; '
        'echo "flaky slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'

rule after:
    input:
        "results/flaky.txt",
    output:
        "results/after.txt",
    log:
        "logs/after.log",
    resources:
        mem_mb=200,
        runtime=5,
    shell:
        'echo "after slurm_job=$SLURM_JOB_ID" > {output} 2> {log}'
"""


# Where the repository keeps its Snakefile; the toy workflows copy that layout.
SNAKEFILE_REL = (
    "workflow/Snakefile" if (REPO_ROOT / "workflow" / "Snakefile").exists() else "Snakefile"
)


def make_workflow(tmp_path: Path, snakefile_text: str) -> Path:
    """The repository's layout in miniature: its Snakefile path and its workflow profiles."""
    snakefile = tmp_path / SNAKEFILE_REL
    snakefile.parent.mkdir(parents=True, exist_ok=True)
    snakefile.write_text(textwrap.dedent(snakefile_text).lstrip())
    for rel in ("profiles", "workflow/profiles"):
        if (REPO_ROOT / rel).is_dir():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).symlink_to(REPO_ROOT / rel, target_is_directory=True)
    return snakefile


def report(name: str, out: str, cluster: SlurmCluster) -> str:
    return f"\n===== snakemake output ({name}) =====\n{out}\n{cluster.diagnostics()}"


def rules_by_slurm_job(cluster: SlurmCluster, job_ids: list[str]) -> dict[str, str]:
    jobs = cluster.jobs()
    return {jid: jobs[jid].rule for jid in job_ids if jid in jobs}


def test_toy_workflow_runs_every_job_through_sbatch(slurm_cluster: SlurmCluster, tmp_path: Path):
    snakefile = make_workflow(tmp_path, TOY_SNAKEFILE)
    start = time.monotonic()
    res = run_snakemake_on_slurm(
        tmp_path, snakefile, extra_args=["--set-resources", "b:mem_mb=300"], timeout_s=TIMEOUT_S
    )
    elapsed = time.monotonic() - start
    print(f"toy workflow on SLURM: {elapsed:.1f} s")
    out = res.stdout
    assert res.returncode == 0, report("toy", out, slurm_cluster)
    assert "Using profile slurm" in out or "Using profiles slurm" in out, out

    subs = submissions(out)
    ids = [s.slurm_jobid for s in subs]
    assert len(ids) == 3 == len(set(ids)), report("toy", out, slurm_cluster)
    # SLURM knows each of those jobs, finished successfully, under the run's job name
    jobs = slurm_cluster.jobs()
    assert {jobs[i].state for i in ids} == {"COMPLETED"}, report("toy", out, slurm_cluster)
    assert len({jobs[i].name for i in ids}) == 1
    assert sorted(jobs[i].rule for i in ids) == ["a", "b", "c"]
    # ... and each output was written inside the SLURM job Snakemake reported for it
    for jid in ids:
        rule = jobs[jid].rule
        text = (tmp_path / "results" / f"{rule}.txt").read_text()
        assert text.strip() == f"rule={rule} slurm_job={jid}", text
    # the SLURM log of every job is kept (slurm-keep-successful-logs) at the reported path
    for s in subs:
        log = Path(s.slurm_log)
        assert log.is_file(), s
        assert log.name == f"{s.slurm_jobid}.log"
        assert log.is_relative_to(tmp_path / ".snakemake" / "slurm_logs")
    # resources reached sbatch: the rules' memory (b's overridden by --set-resources), the
    # runtime as time limit, and a GPU (the plugin's `gpu` resource) for c only
    for jid in ids:
        rule = jobs[jid].rule
        details = slurm_cluster.job_details(jid)
        assert f"MinMemoryNode={300 if rule == 'b' else 200}M" in details, details
        assert "TimeLimit=00:05:00" in details, details
        assert ("TresPerJob=gres:gpu:1" in details) == (rule == "c"), details
    # `all` is a local rule: never submitted
    assert "localrule all:" in out


def test_failing_job_fails_fast_then_rerun_completes_only_missing(
    slurm_cluster: SlurmCluster, tmp_path: Path
):
    snakefile = make_workflow(tmp_path, FLAKY_SNAKEFILE)

    start = time.monotonic()
    res = run_snakemake_on_slurm(tmp_path, snakefile, timeout_s=TIMEOUT_S)
    first = time.monotonic() - start
    out = res.stdout
    assert res.returncode not in (0, 124, 137), report("failing run", out, slurm_cluster)
    subs = {slurm_cluster.jobs()[s.slurm_jobid].rule: s for s in submissions(out)}
    assert sorted(subs) == ["flaky", "ok"], report("failing run", out, slurm_cluster)
    assert slurm_cluster.jobs()[subs["flaky"].slurm_jobid].state == "FAILED"
    # the output names the failed job's SLURM log, which holds the job's stderr
    flaky_log = Path(subs["flaky"].slurm_log)
    assert str(flaky_log) in out.split("Error in rule flaky", 1)[-1], out
    assert "flaky: failing on purpose" in flaky_log.read_text()
    assert (tmp_path / "results" / "ok.txt").exists()
    assert not (tmp_path / "results" / "flaky.txt").exists()  # partial output removed

    (tmp_path / "fixed").touch()
    start = time.monotonic()
    res = run_snakemake_on_slurm(
        tmp_path, snakefile, extra_args=["--rerun-incomplete"], timeout_s=TIMEOUT_S
    )
    second = time.monotonic() - start
    out2 = res.stdout
    print(f"failing run: {first:.1f} s, rerun: {second:.1f} s")
    assert res.returncode == 0, report("rerun", out2, slurm_cluster)
    rerun_ids = [s.slurm_jobid for s in submissions(out2)]
    assert sorted(rules_by_slurm_job(slurm_cluster, rerun_ids).values()) == ["after", "flaky"]
    assert "rule ok:" not in out2
    assert (tmp_path / "results" / "after.txt").read_text().startswith("after slurm_job=")


def test_broken_status_check_is_bounded(slurm_cluster: SlurmCluster, tmp_path: Path):
    """sacct without slurmdbd never reports a status; `timeout` must end the run."""
    snakefile = make_workflow(tmp_path, TOY_SNAKEFILE)
    limit = 20
    start = time.monotonic()
    res = run_snakemake_on_slurm(
        tmp_path,
        snakefile,
        extra_args=["--slurm-status-command", "sacct", "--until", "a"],
        timeout_s=limit,
    )
    elapsed = time.monotonic() - start
    print(f"broken status check stopped after {elapsed:.1f} s")
    assert res.returncode in (124, 137), report("sacct", res.stdout, slurm_cluster)
    assert elapsed < limit + 15
    assert submissions(res.stdout), res.stdout  # the job was submitted, just never seen done
