"""Start-up cost of the ``lookright`` CLI and of every stage, before its first model load.

Every job of the DAG is one ``lookright <stage>`` process, so what a stage does before its work
(imports, argument parsing, config loading and validation, opening its MLflow run) is paid 88
times by ``make run``. Two measurements per stage, each the median wall time of ``--repeats``
fresh processes:

- ``help``: ``lookright <command> --help`` (imports and argument parsing only);
- ``startup``: a fresh process that imports the CLI and the stage, loads and validates the
  stage's sections of ``config/config.yaml`` (as its rule passes them) into its typed config and opens and closes the
  stage's MLflow run on a SQLite store created beforehand (``lookright tracking-init``, as the
  Snakefile's ``onstart`` does; what :meth:`Stage.main` does before ``run``).

    .venv/bin/python benchmarks/bench_startup.py [--repeats 3] [--baseline-commit 95227de]

With ``--baseline-commit``, the ``--help`` times of that commit's ``src/`` (``git archive``,
same interpreter and packages) are measured in the same run, side by side.

Goal (issue 16): ``lookright --help`` <= 1 s, each stage's start-up <= 2 s.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOKRIGHT = [sys.executable, "-m", "lookright.cli"]

STARTUP = """
import argparse, sys, yaml
from lookright.cli import parse_args
from lookright.stages import branches, load_stage
from lookright.stages.base import stage_execution
stage = load_stage(sys.argv[1])
config = yaml.safe_load(open(sys.argv[2]))
model = config["run_models"][0]
job_config = {
    "prepare_data": lambda: branches.stage_config(config, "data"),
    "pretrain": lambda: branches.stage_config(config, "pretrain", model=model),
    "sft": lambda: branches.stage_config(config, "sft", model=model),
    "grpo": lambda: branches.grpo_config(config, model, config["grpo"]["run_reward_sets"][-1]),
    "decode": lambda: branches.decode_config(config, model, "sgrs"),
    "evaluate_saliency": lambda: branches.evaluate_saliency_config(config, model),
    "evaluate_answers": lambda: branches.evaluate_answers_config(config, model),
    "report": lambda: branches.stage_config(config, "report"),
}
text = job_config[stage.name]()  # as the stage's rule passes it (rules/*.smk params.cfg)
cfg = stage.load_config(argparse.Namespace(config=[], config_json=[text]))
with stage_execution(stage.name, cfg, out_dir=sys.argv[3], results_dir=sys.argv[3]):
    pass
"""


def wall(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one fresh process (NaN when it fails, e.g. a command the baseline lacks)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - start if done.returncode == 0 else math.nan


def median_wall(command: list[str], env: dict[str, str], repeats: int) -> float:
    return statistics.median(wall(command, env) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--baseline-commit", default=None)
    args = parser.parse_args()
    from lookright.stages import STAGE_COMMANDS

    with tempfile.TemporaryDirectory() as baseline_dir:
        baseline_env = None
        if args.baseline_commit:
            archive = subprocess.run(
                ["git", "archive", args.baseline_commit, "src"],
                cwd=ROOT, check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", baseline_dir], input=archive, check=True)
            baseline_env = {**os.environ, "PYTHONPATH": f"{baseline_dir}/src"}
        report(args, STAGE_COMMANDS, baseline_env)


def report(args: argparse.Namespace, stages: dict[str, str], baseline_env: dict | None) -> None:
    env = dict(os.environ)

    print(
        f"machine: {platform.node()} ({os.cpu_count()} cores), python {platform.python_version()}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    base = f" ({args.baseline_commit})" if baseline_env else ""
    print(f"| command | `--help` (s) | `--help`{base} (s) | start-up before work (s) |")
    print("| --- | --- | --- | --- |")
    for stage, command in [("lookright", None), *stages.items()]:
        help_args = [*LOOKRIGHT, *([command] if command else []), "--help"]
        help_s = median_wall(help_args, env, args.repeats)
        old = f"{median_wall(help_args, baseline_env, args.repeats):.2f}" if baseline_env else "-"
        startup_s = "-"
        if command:
            with tempfile.TemporaryDirectory() as tmp:  # the store exists, as in a DAG run
                init = [*LOOKRIGHT, "tracking-init", "--results-dir", tmp]
                subprocess.run(init, check=True, capture_output=True, cwd=ROOT, env=env)
                startup = [sys.executable, "-c", STARTUP, stage, args.config, tmp]
                startup_s = f"{median_wall(startup, env, args.repeats):.2f}"
        print(f"| {stage} | {help_s:.2f} | {old} | {startup_s} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
