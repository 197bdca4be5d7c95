"""Multi-process launch of the training stages (``lookright.launch``).

The command construction and the rank helpers are checked directly; one slow test runs a real
2-process data-parallel SFT on the CPU (torch DDP over gloo) for 2 steps through
``python -m lookright.launch`` and checks that both ranks trained but only rank 0 tracked,
saved and reported.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookright import launch, tracking
from lookright.launch import NullStageRun, is_main_process, training_command, training_env
from lookright.stages.base import stage_execution

STAGE_ARGS = ["--config-json", '{"sft": {"steps": 2}}', "--out", "results/sft/m"]
ACCELERATE = ["accelerate", "launch", "--multi_gpu"]
ACCELERATE_TAIL = ["--num_machines", "1", "--main_process_port", "0"]
ACCELERATE_TAIL += ["--mixed_precision", "no", "--dynamo_backend", "no"]


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("gpus", [0, 1])
def test_no_or_one_gpu_runs_the_stage_in_one_process(gpus):
    assert training_command("sft", STAGE_ARGS, gpus=gpus) == ["lookright", "sft", *STAGE_ARGS]
    assert training_command("grpo", [], gpus=gpus, cpus=8) == ["lookright", "grpo"]
    assert training_env(gpus=gpus) == {}


@pytest.mark.parametrize("gpus", [2, 4])
def test_several_gpus_start_one_process_per_gpu(gpus):
    assert training_command("sft", STAGE_ARGS, gpus=gpus) == [
        *ACCELERATE,
        "--num_processes",
        str(gpus),
        *ACCELERATE_TAIL,
        "-m",
        "lookright.cli",
        "sft",
        *STAGE_ARGS,
    ]
    assert training_env(gpus=gpus) == {}  # the GPUs SLURM gave the job stay visible


def test_threads_port_and_precision_reach_accelerate():
    assert training_command(
        "grpo", ["--out", "o"], gpus=4, cpus=16, main_process_port=29611, mixed_precision="bf16"
    ) == [
        *ACCELERATE,
        "--num_processes",
        "4",
        "--num_machines",
        "1",
        "--main_process_port",
        "29611",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "4",
        "-m",
        "lookright.cli",
        "grpo",
        "--out",
        "o",
    ]
    # fewer CPUs than processes: still one thread each
    assert "--num_cpu_threads_per_process" in (argv := training_command("sft", [], gpus=4, cpus=2))
    assert argv[argv.index("--num_cpu_threads_per_process") + 1] == "1"


def test_cpu_data_parallel_hides_the_gpus():
    argv = training_command("sft", ["--out", "o"], gpus=0, processes=2, cpus=2)
    assert argv == [
        *ACCELERATE,
        "--num_processes",
        "2",
        *ACCELERATE_TAIL,
        "--num_cpu_threads_per_process",
        "1",
        "-m",
        "lookright.cli",
        "sft",
        "--out",
        "o",
    ]
    assert training_env(gpus=0, processes=2) == {"CUDA_VISIBLE_DEVICES": ""}
    assert training_command("sft", [], gpus=0, processes=1) == ["lookright", "sft"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus": -1}, "gpus must be an integer >= 0, got -1"),
        ({"gpus": 1.5}, "gpus must be an integer >= 0, got 1.5"),
        ({"gpus": True}, "gpus must be an integer >= 0, got True"),
        ({"gpus": 0, "processes": 0}, "processes must be an integer >= 1, got 0"),
        ({"gpus": 2, "processes": 4}, "processes=4 with gpus=2"),
        ({"gpus": 2, "cpus": 0}, "cpus must be an integer >= 1, got 0"),
        ({"gpus": 2, "main_process_port": -5}, "main_process_port must be an integer >= 0"),
        ({"gpus": 2, "main_process_port": 70000}, "main_process_port must be <= 65535"),
        ({"gpus": 2, "mixed_precision": "fp32"}, "mixed_precision must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        training_command("sft", [], **kwargs)


def test_only_training_stages_are_launched():
    with pytest.raises(ValueError, match=r"stage must be one of \['sft', 'grpo'\], got 'decode'"):
        training_command("decode", [], gpus=2)


# --------------------------------------------------------------------------- CLI


def test_cli_dry_run_prints_the_command(capsys):
    argv = ["--stage", "sft", "--gpus", "2", "--cpus", "8", "--dry-run", "--"]
    # stage arguments after "--" are passed on untouched, even names the launcher also has
    assert launch.main([*argv, "--gpus", "3", "--tag", "a=b c"]) == 0
    expected = [*ACCELERATE, "--num_processes", "2", *ACCELERATE_TAIL]
    expected += ["--num_cpu_threads_per_process", "4", "-m", "lookright.cli", "sft"]
    expected += ["--gpus", "3", "--tag", "'a=b c'"]
    assert capsys.readouterr().out == " ".join(expected) + "\n"


def test_cli_execs_the_command_with_its_environment(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(os, "execvp", lambda file, argv: calls.append((file, argv)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    launch.main(["--stage", "grpo", "--gpus", "0", "--processes", "2", "--", "--out", "o"])
    ((file, argv),) = calls
    assert argv == training_command("grpo", ["--out", "o"], gpus=0, processes=2)
    bindir = Path(sys.executable).parent
    assert file == (
        str(bindir / "accelerate") if (bindir / "accelerate").exists() else "accelerate"
    )
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "lookright.launch: CUDA_VISIBLE_DEVICES='' accelerate launch" in capsys.readouterr().err


def test_cli_rejects_a_negative_gpu_count(capsys):
    with pytest.raises(SystemExit) as exited:
        launch.main(["--stage", "sft", "--gpus", "-1", "--", "--out", "o"])
    assert exited.value.code == 2
    assert "error: gpus must be an integer >= 0, got -1" in capsys.readouterr().err


# --------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(
    ("env", "main", "size"),
    [
        ({}, True, 1),
        ({"RANK": "0", "WORLD_SIZE": "2"}, True, 2),
        ({"RANK": "3", "WORLD_SIZE": "4"}, False, 4),
    ],
)
def test_rank_from_the_launcher_environment(monkeypatch, env, main, size):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_main_process() is main
    assert launch.world_size() == size


def test_null_run_has_the_stage_run_interface():
    public = {n for n in dir(tracking.StageRun) if not n.startswith("_")}
    assert public <= set(dir(NullStageRun))
    for name in public:
        real, null = getattr(tracking.StageRun, name), getattr(NullStageRun, name)
        if callable(real):
            assert inspect.signature(null) == inspect.signature(real), name


def test_other_ranks_open_no_mlflow_run(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "sft"
    with stage_execution(
        "sft", {"tracking": {"experiment": "lookright"}}, out_dir=out, results_dir=tmp_path
    ) as run:
        assert isinstance(run, NullStageRun)
        run.log_metrics({"loss": 1.0}, step=1)
        run.log_artifact(out / "missing.json")
    assert out.is_dir() and not (out / "run.json").exists()
    assert not (tmp_path / "mlflow.db").exists()


# --------------------------------------------------------------------------- a real 2-process run


def _gloo_unavailable() -> str | None:
    """Why a 2-process gloo job cannot run here, or None."""
    import torch.distributed as dist

    if not dist.is_available():
        return "torch.distributed is not available in this torch build"
    if not dist.is_gloo_available():
        return "torch.distributed has no gloo backend in this torch build"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            probe.listen()
    except OSError as error:
        return f"cannot listen on 127.0.0.1 for the rendezvous: {error}"
    return None


@pytest.mark.slow  # prepare-data + 1-step pretrain in-process, then 2 processes (~35 s on 2 cores)
def test_two_process_cpu_sft(tmp_path, smoke_config, monkeypatch):
    reason = _gloo_unavailable()
    if reason:
        pytest.skip(reason)
    from mlflow import MlflowClient

    from lookright.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    results = tmp_path / "results"
    data, base, out = results / "data", results / "pretrain", results / "sft"
    common = ["--results-dir", str(results)]
    prepare = ["prepare-data", "--out", str(data), *common]
    assert main([*prepare, "--config-json", json.dumps({"data": smoke_config["data"]})]) == 0
    tiny = {**smoke_config["pretrain"], "steps": 1, "eval_samples": 1, "save_steps": 100}
    section = json.dumps({"pretrain": tiny, "model": {"name": "tiny"}})
    pretrain = ["pretrain", "--data", str(data), "--out", str(base), *common]
    assert main([*pretrain, "--config-json", section]) == 0

    sft = {**smoke_config["sft"], "steps": 2, "save_steps": 2, "logging_steps": 1}
    stage_args = ["--config-json", json.dumps({"sft": sft, "model": {"name": "tiny"}})]
    stage_args += ["--data", str(data), "--base", str(base / "model"), "--out", str(out), *common]
    stage_args += ["--upstream", f"pretrain={base / 'run.json'}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lookright.launch", "--stage", "sft", "--gpus", "0"]
        + ["--processes", "2", "--cpus", "2", "--", *stage_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - started
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "accelerate launch --multi_gpu --num_processes 2" in log

    # both ranks trained: the trainer saw 2 processes, each saved its RNG state
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    checkpoint = out / "checkpoints" / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("rng_state_*.pth")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]
    # only rank 0 saved, evaluated and reported
    assert log.count("sft: held-out VQA accuracy") == 1
    assert (out / "model" / "config.json").is_file()
    import pyarrow.parquet as pq

    assert pq.read_table(out / "val_predictions.parquet").num_rows == metrics["n_val"]
    # ... and tracked: one MLflow run, one loss value per step
    uri = tracking.default_tracking_uri(results)
    (run,) = tracking.find_runs(uri, stage="sft")
    assert run.info.status == "FINISHED"
    assert json.loads((out / "run.json").read_text())["run_id"] == run.info.run_id
    assert run.data.metrics["world_size"] == 2
    history = MlflowClient(tracking_uri=uri).get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == [1, 2]
    print(f"2-process CPU sft: {seconds:.1f} s")
