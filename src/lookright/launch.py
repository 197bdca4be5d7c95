"""Start a training stage (``sft``, ``grpo``) as one process per GPU, and rank helpers.

``python -m lookright.launch --stage sft --gpus N [--cpus C] -- <stage arguments>``

* ``--gpus 0`` or ``1``: runs ``lookright <stage> <stage arguments>`` (one process; with one GPU
  the trainer uses it, with none the CPU).
* ``--gpus N`` (N >= 2): runs ``accelerate launch --multi_gpu --num_processes N ... -m
  lookright.cli <stage> <stage arguments>``: N data-parallel processes (torch DDP, NCCL), one
  per GPU, on this machine. Accelerate names its torchrun-based launcher ``--multi_gpu``.
* ``--gpus 0 --processes N`` (N >= 2): the same launcher on the CPU (DDP over gloo), with
  ``CUDA_VISIBLE_DEVICES`` emptied so no GPU of the node is touched; for tests and debugging.
  (``accelerate launch --cpu --num_processes N`` starts only ONE process unless MPI is set up,
  so it is not used.)

The GPU count is always the explicit ``--gpus`` (the rules pass their ``resources.gpu``, the
count SLURM allocated); nothing is guessed from ``CUDA_VISIBLE_DEVICES`` or ``SLURM_*``.
``--cpus`` (the rule's threads) is split over the processes (``OMP_NUM_THREADS`` of each).
The command replaces this process (``os.execvp``), so exit status and signals are the stage's;
``lookright``/``accelerate`` are taken from this Python's environment (its ``bin/``), else PATH.

Under a multi-process launch every rank runs the same stage code. Only the main process (global
rank 0, :func:`is_main_process`) opens the MLflow run, writes ``run.json``, saves the final
model, evaluates and writes ``metrics.json``; the others log into a :class:`NullStageRun`
and stop after training. The trainers themselves handle DDP (sharded batches, gradient
all-reduce, checkpoints written by rank 0).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TRAINING_STAGES",
    "NullStageRun",
    "is_main_process",
    "main",
    "process_rank",
    "training_command",
    "training_env",
    "world_size",
]

TRAINING_STAGES = ("sft", "grpo")
MIXED_PRECISION = ("no", "fp16", "bf16", "fp8")


# --------------------------------------------------------------------------- ranks


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer") from None


def process_rank() -> int:
    """Global rank of this process (``$RANK``, set by torchrun/accelerate); 0 when unset."""
    return _env_int("RANK", 0)


def world_size() -> int:
    """Number of processes of the job (``$WORLD_SIZE``); 1 when unset."""
    return _env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """Whether this process owns the stage's outputs: global rank 0, or not launched at all.

    Read from the environment that torchrun/accelerate set for every process, so it can be
    asked before the trainer sets up ``torch.distributed`` (the MLflow run opens first).
    """
    return process_rank() == 0


class NullStageRun:
    """A :class:`lookright.tracking.StageRun` that logs nothing: the run of ranks other than 0."""

    run_id: str | None = None
    tracking_uri: str | None = None
    resumed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_input_table(self, path: str | Path, name: str, context: str) -> None:
        pass

    def log_table(self, frame: Any, artifact_file: str) -> None:
        pass

    def last_step(self, name: str) -> int | None:
        return None


# --------------------------------------------------------------------------- commands


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _process_count(gpus: int, processes: int | None) -> int:
    _check_count("gpus", gpus, 0)
    if processes is None:
        return max(gpus, 1)
    _check_count("processes", processes, 1)
    if gpus > 0 and processes != gpus:
        raise ValueError(
            f"processes={processes} with gpus={gpus}: a GPU job runs one process per GPU "
            f"(leave processes unset); processes is for CPU jobs (gpus=0) only"
        )
    return processes


def training_command(
    stage: str,
    args: Sequence[str],
    *,
    gpus: int,
    processes: int | None = None,
    cpus: int | None = None,
    main_process_port: int | None = None,
    mixed_precision: str | None = None,
) -> list[str]:
    """The argv that runs training stage ``stage`` with its CLI arguments ``args``.

    ``gpus`` <= 1 (and no ``processes``): ``["lookright", stage, *args]``. Otherwise
    ``accelerate launch`` with one process per GPU (or ``processes`` CPU processes when
    ``gpus`` is 0), ``cpus`` threads split over them, on ``main_process_port`` (None or 0: a
    free port, so jobs sharing a node do not collide). ``mixed_precision`` is accelerate's
    default only; the stage's trainer arguments (bf16 on CUDA) decide.
    """
    if stage not in TRAINING_STAGES:
        raise ValueError(f"stage must be one of {list(TRAINING_STAGES)}, got {stage!r}")
    n = _process_count(gpus, processes)
    if cpus is not None:
        _check_count("cpus", cpus, 1)
    port = 0 if main_process_port is None else main_process_port
    _check_count("main_process_port", port, 0)
    if port > 65535:
        raise ValueError(f"main_process_port must be <= 65535, got {port}")
    precision = mixed_precision or "no"
    if precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision must be one of {list(MIXED_PRECISION)}, got {mixed_precision!r}"
        )
    if n == 1:
        return ["lookright", stage, *args]
    argv = ["accelerate", "launch", "--multi_gpu", "--num_processes", str(n)]
    argv += ["--num_machines", "1", "--main_process_port", str(port)]
    argv += ["--mixed_precision", precision, "--dynamo_backend", "no"]
    if cpus is not None:
        argv += ["--num_cpu_threads_per_process", str(max(1, cpus // n))]
    return [*argv, "-m", "lookright.cli", stage, *args]


def training_env(*, gpus: int, processes: int | None = None) -> dict[str, str]:
    """Environment overrides for :func:`training_command`: a CPU multi-process job hides GPUs."""
    if gpus == 0 and _process_count(gpus, processes) > 1:
        return {"CUDA_VISIBLE_DEVICES": ""}
    return {}


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lookright.launch",
        description="Run a training stage with one process per GPU (accelerate launch).",
        epilog="example: python -m lookright.launch --stage sft --gpus 2 --cpus 16 -- "
        "--config-json '{...}' --data results/data --base B --out results/sft/M",
    )
    parser.add_argument("--stage", required=True, choices=TRAINING_STAGES)
    parser.add_argument(
        "--gpus",
        required=True,
        type=int,
        help="GPUs of the job (the rule's resources.gpu): 0/1 = one process, N = N processes",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="CPU data-parallel processes (only with --gpus 0; tests/debugging)",
    )
    parser.add_argument(
        "--cpus", type=int, default=None, help="CPU threads of the job, split over the processes"
    )
    parser.add_argument(
        "--main-process-port",
        type=int,
        default=None,
        help="rendezvous port of a multi-process job (default 0: a free port)",
    )
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default=None)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the command instead of running it"
    )
    parser.add_argument("stage_args", nargs=argparse.REMAINDER, help="-- then the stage's args")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stage_args = list(args.stage_args)
    if stage_args[:1] == ["--"]:
        stage_args = stage_args[1:]
    try:
        command = training_command(
            args.stage,
            stage_args,
            gpus=args.gpus,
            processes=args.processes,
            cpus=args.cpus,
            main_process_port=args.main_process_port,
            mixed_precision=args.mixed_precision,
        )
        env = training_env(gpus=args.gpus, processes=args.processes)
    except ValueError as error:
        parser.error(str(error))
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    line = f"{shown} {shlex.join(command)}".strip()
    if args.dry_run:
        print(line)
        return 0
    print(f"lookright.launch: {line}", file=sys.stderr, flush=True)
    os.environ.update(env)
    os.execvp(_executable(command[0]), command)
    return 1  # not reached


def _executable(name: str) -> str:
    """``name`` from this Python's environment (its bin folder) when there, else from PATH."""
    sibling = Path(sys.executable).parent / name
    return str(sibling) if os.access(sibling, os.X_OK) else name


if __name__ == "__main__":
    sys.exit(main())
