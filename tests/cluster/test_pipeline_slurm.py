"""The real pipeline (smoke config) through `snakemake --profile slurm` on a real cluster.

1. With ``debug.fail_rules: [sft]`` the sft job fails: Snakemake exits non-zero naming the
   job's SLURM log, and the sft MLflow run is FAILED.
2. ``--rerun-incomplete`` without the flag redoes only sft and the GRPO branch behind it;
   every job went through sbatch.
3. The results equal a local run with the same seeds.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
import yaml
from slurm_cluster import SlurmCluster, run_snakemake_on_slurm, submissions

from tests.workflow_utils import copy_workflow, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TIMEOUT_S = 900


def _runs_by_stage(results: Path) -> dict[str, list]:
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lookright")
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment.experiment_id]):
        runs.setdefault(run.data.tags["lookright.stages.base"], []).append(run)
    return runs


def _rules_of(cluster: SlurmCluster, log: str) -> list[str]:
    jobs = cluster.jobs()
    return sorted(jobs[s.slurm_jobid].rule for s in submissions(log))


def test_pipeline_fails_resumes_and_matches_local(slurm_cluster: SlurmCluster, tmp_path: Path):
    on_slurm = copy_workflow(tmp_path / "slurm")
    one_branch = {
        "grpo": {"run_reward_sets": ["acc+fmt"]},
        "decode": {"run_strategies": ["greedy"]},
    }
    (on_slurm / "fail.yaml").write_text(
        yaml.safe_dump({**one_branch, "debug": {"fail_rules": ["sft"]}})
    )
    (on_slurm / "branch.yaml").write_text(yaml.safe_dump(one_branch))
    failed = run_snakemake_on_slurm(
        on_slurm,
        on_slurm / "Snakefile",
        extra_args=["--configfile", "config/smoke.yaml", "fail.yaml"],
        timeout_s=TIMEOUT_S,
    )
    log = failed.stdout
    assert failed.returncode not in (0, 124, 137), log[-4000:] + slurm_cluster.diagnostics()
    assert _rules_of(slurm_cluster, log) == ["prepare_data", "pretrain", "sft"]
    jobs = slurm_cluster.jobs()
    (sft_job,) = [s for s in submissions(log) if jobs[s.slurm_jobid].rule == "sft"]
    failure_report = log[log.index("Error in rule sft") :]
    assert sft_job.slurm_log in failure_report, failure_report[:3000]
    assert (
        "failing on purpose"
        in Path(sft_job.slurm_log).read_text()
        + (on_slurm / "logs-smoke" / "sft" / "tiny-qwen2.5-vl.log").read_text()
    )
    results = on_slurm / "results-smoke"
    (failed_run,) = _runs_by_stage(results)["sft"]
    assert failed_run.info.status == "FAILED"

    resumed = run_snakemake_on_slurm(
        on_slurm,
        on_slurm / "Snakefile",
        extra_args=["--configfile", "config/smoke.yaml", "branch.yaml", "--rerun-incomplete"],
        timeout_s=TIMEOUT_S,
    )
    assert resumed.returncode == 0, resumed.stdout[-4000:] + slurm_cluster.diagnostics()
    assert _rules_of(slurm_cluster, resumed.stdout) == [
        "decode",
        "decode",
        "evaluate_answers",
        "evaluate_answers",
        "evaluate_saliency",
        "evaluate_saliency",
        "grpo",
        "report",
        "sft",
    ]
    # A training stage resumes its unfinished run: same run id, now FINISHED.
    (resumed_run,) = _runs_by_stage(results)["sft"]
    assert resumed_run.info.run_id == failed_run.info.run_id
    assert resumed_run.info.status == "FINISHED"

    local = copy_workflow(tmp_path / "local")
    (local / "branch.yaml").write_text(yaml.safe_dump(one_branch))
    done = snakemake(local, "--configfile", "config/smoke.yaml", "branch.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    for table in ("data/images.parquet", "data/samples.parquet"):
        assert pq.read_table(results / table).equals(
            pq.read_table(local / "results-smoke" / table)
        ), table
    for stage in ("pretrain", "sft"):
        path = f"{stage}/tiny-qwen2.5-vl/val_predictions.parquet"
        slurm_predictions = pq.read_table(results / path).to_pylist()
        local_predictions = pq.read_table(local / "results-smoke" / path).to_pylist()
        assert slurm_predictions == local_predictions, stage
