"""Tests of lookright.tracking against real SQLite MLflow stores in tmp_path."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from lookright import tracking

CONFIG = {
    "model": {"name": "tiny-vlm", "lora": {"r": 8, "alpha": 16}},
    "train": {"lr": 1e-4, "steps": [1, 2, 3]},
    "long": "x" * 7000,
}
N_WORKERS = 6
N_STEPS = 20


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated store for the single-process tests (migrations take seconds)."""
    store_uri = tracking.default_tracking_uri(tmp_path_factory.mktemp("results"))
    tracking.init_store(store_uri)
    return store_uri


def test_uri_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.default_tracking_uri(tmp_path) == default
    assert tracking.resolve_tracking_uri(None, tmp_path) == default
    assert tracking.resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.resolve_tracking_uri("http://host:5000", tmp_path) == "http://env:5000"


def test_flatten_and_hash() -> None:
    flat = tracking.flatten_config(CONFIG)
    assert flat["model.lora.r"] == "8"
    assert flat["train.steps"] == "[1, 2, 3]"
    assert len(flat["long"]) == 6000
    reordered = {"long": CONFIG["long"], "train": CONFIG["train"], "model": CONFIG["model"]}
    assert tracking.config_hash(reordered) == tracking.config_hash(CONFIG)
    assert len(tracking.config_hash(CONFIG)) == 16


def test_init_store_is_idempotent(
    uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tracking.init_store(uri) == tracking.init_store(uri)
    tracking._experiment_ids.clear()  # as in a fresh process
    experiment_id = tracking.init_store(uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.main(["init", "--uri", uri]) == 0  # the Snakefile's onstart call
    assert f"id={experiment_id}" in capsys.readouterr().out
    experiment = MlflowClient(uri).get_experiment(experiment_id)
    assert experiment.name == "lookright"
    assert "/mlartifacts/" in experiment.artifact_location


def test_run_is_readable_back(uri: str, tmp_path: Path) -> None:
    artifact = tmp_path / "report.txt"
    artifact.write_text("hello")
    with tracking.stage_run(
        "evaluate",
        config=CONFIG,
        tracking_uri=uri,
        tags={"snakemake.rule": "evaluate"},
        upstream_run_ids={"train": "abc123"},
        run_key="results/eval/model-a",
    ) as run:
        for step in range(3):
            run.log_metrics({"loss": 1.0 / (step + 1), "acc": 0.1 * step}, step=step)
        run.log_metric("final", 0.5)
        run.log_params({"extra": {"seed": 3}})
        run.set_tags({"note": "ok"})
        run.log_artifact(artifact, artifact_path="reports")

    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params["model.lora.alpha"] == "16"
    assert got.data.params["train.lr"] == "0.0001"
    assert got.data.params["extra.seed"] == "3"
    assert len(got.data.params["long"]) == 6000
    tags = got.data.tags
    assert tags["lookright.stages.base"] == "evaluate"
    assert tags["lookright.config_hash"] == tracking.config_hash(CONFIG)
    assert tags["lookright.git_commit"]
    assert tags["lookright.upstream.train"] == "abc123"
    assert tags["lookright.run_key"] == "results/eval/model-a"
    assert tags["snakemake.rule"] == "evaluate" and tags["note"] == "ok"
    assert [m.step for m in client.get_metric_history(run.run_id, "loss")] == [0, 1, 2]
    assert got.data.metrics["final"] == 0.5
    assert [f.path for f in client.list_artifacts(run.run_id, "reports")] == ["reports/report.txt"]
    local = client.download_artifacts(run.run_id, "reports/report.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "hello"
    found = tracking.find_runs(uri, stage="evaluate", filter_tags={"snakemake.rule": "evaluate"})
    assert [r.info.run_id for r in found] == [run.run_id]


def test_exception_marks_failed_and_reraises(uri: str) -> None:
    with pytest.raises(ValueError, match="boom"):
        with tracking.stage_run("broken", config={}, tracking_uri=uri) as run:
            raise ValueError("boom")
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"


def test_keyboard_interrupt_marks_killed(uri: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("interrupted", config={}, tracking_uri=uri) as run:
            raise KeyboardInterrupt
    assert MlflowClient(uri).get_run(run.run_id).info.status == "KILLED"


@pytest.mark.parametrize("ending", ["failed", "left_running"])
def test_resume_continues_metric_history(uri: str, ending: str) -> None:
    key = f"results/train/{ending}"
    first = tracking.stage_run("train", config=CONFIG, tracking_uri=uri, run_key=key)
    run = first.__enter__()
    for step in range(5):
        run.log_metric("loss", 10.0 - step, step=step)
    if ending == "failed":
        first.__exit__(RuntimeError, RuntimeError("killed"), None)
    # "left_running": never exited, as when the process was killed by SIGKILL.

    with tracking.stage_run(
        "train", config=CONFIG, tracking_uri=uri, run_key=key, resume=True
    ) as again:
        assert again.run_id == run.run_id and again.resumed
        start = again.last_step("loss") + 1
        for step in range(start, start + 5):
            again.log_metric("loss", 10.0 - step, step=step)

    client = MlflowClient(uri)
    assert client.get_run(run.run_id).info.status == "FINISHED"
    steps = sorted(m.step for m in client.get_metric_history(run.run_id, "loss"))
    assert steps == list(range(10))
    # A finished run is not resumed: the next execution gets a run of its own.
    assert tracking.find_resumable_run(uri, "train", key) is None


def test_resume_needs_same_config(uri: str) -> None:
    key = "results/train/changed"
    with pytest.raises(RuntimeError):
        with tracking.stage_run("train", config=CONFIG, tracking_uri=uri, run_key=key) as first:
            raise RuntimeError
    changed = {**CONFIG, "seed": 1}
    with tracking.stage_run(
        "train", config=changed, tracking_uri=uri, run_key=key, resume=True
    ) as second:
        assert second.run_id != first.run_id and not second.resumed
    with tracking.stage_run(
        "train", config=CONFIG, tracking_uri=uri, resume_run_id=first.run_id
    ) as explicit:
        assert explicit.run_id == first.run_id


def test_retry_gives_up_with_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.RETRY_BUDGET_ENV, "0.3")
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert tracking._retry(flaky, "sqlite:///x.db", "test") == "ok"

    def locked() -> None:
        raise RuntimeError("wrapped") from sqlite3.OperationalError("database is locked")

    with pytest.raises(tracking.TrackingStoreBusyError, match="sqlite:///x.db"):
        tracking._retry(locked, "sqlite:///x.db", "test")
    with pytest.raises(ValueError):
        tracking._retry(lambda: int("not a lock error"), "sqlite:///x.db", "test")


def _worker(uri: str, name: str, workdir: str, barrier: Any, results: Any) -> None:
    """One pipeline job: a stage run with metrics, params and an artifact."""
    artifact = Path(workdir) / f"{name}.txt"
    artifact.write_text(name)
    config = {"worker": name, "nested": {"a": 1, "b": [1, 2]}}
    barrier.wait(timeout=60)  # all jobs hit the store at the same moment
    with tracking.stage_run("worker", config=config, tracking_uri=uri, run_key=name) as run:
        for step in range(N_STEPS):
            run.log_metric("m", float(step), step=step)
        run.log_metrics({"x": 1.0, "y": 2.0})
        run.log_params({"extra": name})
        run.log_artifact(artifact)
    results.put(run.run_id)


def _run_workers(uri: str, tmp_path: Path) -> list[str]:
    """Run N_WORKERS jobs in separate processes at once; return their run ids.

    Children come from a forkserver that has imported MLflow once but never opened a store,
    so each is a fresh process with its own engine, without paying 6 MLflow imports.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["lookright.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    barrier, results = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(uri, f"w{i}", str(tmp_path), barrier, results))
        for i in range(N_WORKERS)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * N_WORKERS
    return [results.get(timeout=5) for _ in procs]


@pytest.mark.parametrize("pre_init", [True, False], ids=["init_first", "racing_creation"])
def test_parallel_processes_share_one_store(tmp_path: Path, pre_init: bool) -> None:
    uri = tracking.default_tracking_uri(tmp_path / "results")
    if pre_init:
        tracking.init_store(uri)
    run_ids = _run_workers(uri, tmp_path)

    runs = tracking.find_runs(uri, stage="worker")
    assert sorted(r.info.run_id for r in runs) == sorted(run_ids)
    client = MlflowClient(uri)
    for run in runs:
        assert run.info.status == "FINISHED"
        name = run.data.tags["lookright.run_key"]
        assert run.data.params["worker"] == name and run.data.params["extra"] == name
        assert run.data.params["nested.b"] == "[1, 2]"
        assert run.data.metrics["x"] == 1.0 and run.data.metrics["y"] == 2.0
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "m"))
        assert steps == list(range(N_STEPS))
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == [f"{name}.txt"]


# --------------------------------------------------------------------------- what the UI shows


def test_experiment_opens_as_a_model_training_experiment(uri: str) -> None:
    experiment = MlflowClient(uri).get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_invocation_tag_and_system_metrics(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.INVOCATION_ENV, "20261206-120000-abcdef")
    monkeypatch.setenv(tracking.SYSTEM_METRICS_ENV, "0.2")
    with tracking.stage_run("sft", config=CONFIG, tracking_uri=uri) as run:
        import time

        time.sleep(0.6)
    data = MlflowClient(uri).get_run(run.run_id).data
    assert data.tags[tracking.TAG_INVOCATION] == "20261206-120000-abcdef"
    assert "system/cpu_utilization_percentage" in data.metrics
    assert "system/system_memory_usage_megabytes" in data.metrics
    monkeypatch.setenv(tracking.SYSTEM_METRICS_ENV, "0")
    with tracking.stage_run("sft", config=CONFIG, tracking_uri=uri) as quiet:
        pass
    assert not any(
        k.startswith("system/") for k in MlflowClient(uri).get_run(quiet.run_id).data.metrics
    )


def test_input_tables_are_logged_as_datasets(uri: str, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "samples.parquet"
    pq.write_table(pa.table({"sample_id": ["a", "b"], "label": [1, 0]}), path)
    with tracking.stage_run("decode", config=CONFIG, tracking_uri=uri) as run:
        run.log_input_table(path, "samples", "inference")
    first = MlflowClient(uri).get_run(run.run_id).inputs.dataset_inputs[0]
    assert first.dataset.name == "samples" and first.tags[0].value == "inference"
    assert str(path.resolve()) in first.dataset.source
    assert '"num_rows": 2' in first.dataset.profile and '"sample_id"' in first.dataset.schema
    pq.write_table(pa.table({"sample_id": ["a", "c"], "label": [1, 0]}), path)
    assert tracking.parquet_digest(path) != first.dataset.digest  # the digest follows the data


def test_branch_run_names_say_the_branch(tmp_path: Path) -> None:
    from lookright.stages.base import branch_run_name

    tags = {"snakemake.wildcards": "model=tiny-qwen2.5-vl,source=grpo-acc+fmt,strategy=sgrs"}
    assert branch_run_name("decode", tags, tmp_path) == "decode tiny-qwen2.5-vl/grpo-acc+fmt/sgrs"
    assert branch_run_name("sft", {}, tmp_path / "tiny") == "sft tiny"
