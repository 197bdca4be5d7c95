"""Decode jobs on a few cores: one job at a time with every core, or one job per core.

``make run`` decodes 36 branches (6 sources x 6 strategies) of the tiny model, each a
``lookright decode`` process whose wall time is mostly start-up (imports, MLflow, model
load) and small matrix products. Snakemake runs ``--cores / threads`` of them at a time, with
``OMP_NUM_THREADS`` = the rule's threads (``resources.decode_threads``). This benchmark runs the
same decode jobs (the SFT model of a finished ``make run``, every strategy) under each thread
setting, the jobs of a setting ``cores // threads`` at a time as Snakemake would, and reports
each setting's wall time for the whole set, side by side in one run (settings alternate over
``--repeats``):

    .venv/bin/python benchmarks/bench_decode_threads.py --results results [--threads 1 2]
        [--cores 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from lookright.decoding.params import STRATEGIES
from lookright.stages import branches

ROOT = Path(__file__).resolve().parents[1]
LOOKRIGHT = [sys.executable, "-m", "lookright.cli"]


def decode_commands(results: Path, model: str, out: Path) -> list[list[str]]:
    """One ``lookright decode`` per strategy, with the config its rule would pass."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return [
        [
            *LOOKRIGHT,
            "decode",
            "--config-json",
            branches.decode_config(config, model, strategy),
            "--data",
            str(results / "data"),
            "--model-dir",
            str(results / "sft" / model / "model"),
            "--strategy",
            strategy,
            "--out",
            str(out / strategy),
        ]
        for strategy in STRATEGIES
    ]


def run_set(commands: list[list[str]], threads: int, cores: int, env: dict[str, str]) -> float:
    """Wall seconds of every command, ``cores // threads`` at a time, each with ``threads``."""
    job_env = {**env, "OMP_NUM_THREADS": str(threads)}

    def one(command: list[str]) -> None:
        subprocess.run(command, env=job_env, check=True, capture_output=True, text=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, cores // threads)) as pool:
        list(pool.map(one, commands))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--model", default="tiny-qwen2.5-vl")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not (args.results / "sft" / args.model / "model" / "config.json").is_file():
        parser.error(f"--results {args.results}: no sft/{args.model}/model (run `make run`)")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        subprocess.run([*LOOKRIGHT, "tracking-init"], env=env, check=True, capture_output=True)
        walls: dict[int, list[float]] = {t: [] for t in args.threads}
        for _ in range(args.repeats):
            for threads in args.threads:
                commands = decode_commands(args.results, args.model, Path(tmp) / f"t{threads}")
                walls[threads].append(run_set(commands, threads, args.cores, env))
    n = len(STRATEGIES)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; ")
    print(f"{n} decode jobs (SFT model, every strategy), --cores {args.cores}\n")
    print("| threads per job | jobs at a time | wall of the set, median (s) | per job (s) | runs |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.median(walls[args.threads[0]])
    for threads, values in walls.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(
            f"| {threads} | {max(1, args.cores // threads)} | {median:.1f} "
            f"({median / base:.2f}x) | {median / n:.1f} | {runs} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
