"""What every stage shares: its CLI arguments, its MLflow run, its ``run.json``, its summary.

A stage (one module of :mod:`lookright.stages`) is a :class:`Stage` subclass: its ``name``, its
typed ``config`` dataclass (the config sections it reads), its own CLI arguments, and
``run(cfg, args, run)``, which does the work with the library packages and returns what it
measured. :meth:`Stage.main` is the sequence every stage follows:

1. load the config (``--config`` YAML files, then ``--config-json``, over the dataclass
   defaults; a misspelt key or a wrong type is a :class:`~lookright.config.ConfigError`);
2. open the stage's MLflow run (:func:`stage_execution`: FAILED on error, resumed for training
   stages, tagged with the branch, the upstream runs and the invocation, inputs logged as
   datasets) and fail on purpose when the workflow's failure tests ask (``--fail-for-test``);
3. ``run``; log the stage's ``outputs`` as artifacts; write ``run.json`` (the run id that
   downstream stages record);
4. print one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from lookright.config import config_hash, load_stage_config, to_dict


class InjectedFailure(RuntimeError):
    """Raised inside a stage's run when its rule is in config ``debug.fail_rules``.

    The workflow tests use it to prove a failed job leaves a FAILED MLflow run, its log, and
    a rerun that resumes.
    """


def fail_if_asked(args: Any, stage: str) -> None:
    """Raise :class:`InjectedFailure` when the CLI got ``--fail-for-test``."""
    if getattr(args, "fail_for_test", False):
        raise InjectedFailure(f"{stage}: failing on purpose (config debug.fail_rules)")


def upstream_run_ids(run_files: Mapping[str, str | Path]) -> dict[str, str]:
    """``{stage: run_id}`` from the upstream stages' ``run.json`` files (missing ones skipped)."""
    ids = {}
    for stage, path in run_files.items():
        path = Path(path)
        if path.is_file():
            ids[stage] = json.loads(path.read_text())["run_id"]
    return ids


def data_inputs(data_dir: str | Path) -> dict[str, Path]:
    """The prepared data tables of ``data_dir`` (``prepare_data``'s outputs) by name."""
    return {name: Path(data_dir) / f"{name}.parquet" for name in ("samples", "images")}


def branch_run_name(stage: str, tags: Mapping[str, str], out_dir: Path) -> str:
    """``"decode tiny-qwen2.5-vl/grpo-acc+fmt/sgrs"``: the stage and its branch (the rule's
    wildcard values, in order), or the output folder's name outside Snakemake."""
    wildcards = tags.get("snakemake.wildcards", "")
    values = [pair.partition("=")[2] for pair in wildcards.split(",") if "=" in pair]
    return f"{stage} {'/'.join(values) if values else out_dir.name}"


@contextmanager
def stage_execution(
    stage: str,
    cfg: Any,
    *,
    out_dir: str | Path,
    results_dir: str | Path,
    tags: Mapping[str, str] | None = None,
    upstream: Mapping[str, str | Path] | None = None,
    resume: bool = False,
    params: Mapping[str, str] | None = None,
    inputs: Mapping[str, str | Path] | None = None,
    input_context: str = "training",
) -> Iterator[Any]:
    """Open the stage's MLflow run (FAILED on error) and write ``run.json`` on success.

    ``params`` (e.g. ``{"reward_set": "acc+fmt"}``, the branch's ablation values) become
    top-level MLflow params (``reward_set``) next to the flattened config, so the compare view
    lines ablations up, and tags ``lookright.<key>`` to filter and group runs by. With
    ``resume``, a run of the same stage and output folder that did not finish is continued,
    so a training stage re-run after a kill keeps one metric history. ``inputs``
    (``{name: Parquet path}``, see :func:`data_inputs`) are recorded as the run's input
    datasets with ``input_context`` (MLflow's Datasets column; missing files skipped). In a
    multi-process launch only rank 0 does this; other ranks get a no-op run
    (:class:`lookright.launch.NullStageRun`) and write no ``run.json``.
    """
    from lookright import tracking
    from lookright.launch import NullStageRun, is_main_process

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():  # another rank of a multi-process launch: rank 0 tracks
        yield NullStageRun()
        return
    config = to_dict(cfg)
    tracking_cfg = config.get("tracking", {})
    uri = tracking.resolve_tracking_uri(tracking_cfg.get("uri"), results_dir)
    with tracking.stage_run(
        stage,
        config=config,
        tracking_uri=uri,
        experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking_cfg["experiment"],
        tags=dict(tags or {}),
        upstream_run_ids=upstream_run_ids(upstream or {}),
        run_key=f"{stage}:{os.path.abspath(out_dir)}",
        resume=resume,
        run_name=branch_run_name(stage, tags or {}, out_dir),
    ) as run:
        if params:
            run.log_params(dict(params))
            run.set_tags({f"lookright.{key}": value for key, value in params.items()})
        for name, path in (inputs or {}).items():
            if Path(path).is_file():
                run.log_input_table(path, name, input_context)
        yield run
        record = {
            "run_id": run.run_id,
            "stage": stage,
            "config_hash": config_hash(cfg),
            "tracking_uri": uri,
        }
        (out_dir / "run.json").write_text(json.dumps(record, indent=2))


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` command-line values (``--tag``, ``--param``, ``--upstream``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every stage takes (config, output folder, tracking tags)."""
    parser.add_argument(
        "--config-json",
        action="append",
        default=[],
        metavar="JSON",
        help="stage config as JSON (repeatable; later ones win)",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        type=Path,
        help="stage config YAML file(s), merged before --config-json",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder of the stage")
    parser.add_argument(
        "--results-dir",
        default=Path("results"),
        type=Path,
        help="results root (holds the default MLflow store, results/mlflow.db)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="extra MLflow tag (e.g. snakemake.rule=sft); repeatable",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="an ablation value (e.g. reward_set=acc+fmt) as an MLflow param; repeatable",
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        type=key_value,
        metavar="STAGE=RUN_JSON",
        help="an upstream stage's run.json, recorded as a tag; repeatable",
    )
    parser.add_argument("--fail-for-test", action="store_true", help=argparse.SUPPRESS)
    return parser


class Stage(ABC):
    """One pipeline stage behind ``lookright <command>`` (see the module docstring)."""

    name: ClassVar[str]  # MLflow stage tag and Snakemake rule, e.g. "evaluate_saliency"
    help: ClassVar[str]
    resume: ClassVar[bool] = False  # training stages continue an unfinished run
    input_context: ClassVar[str] = "training"
    outputs: ClassVar[tuple[str, ...]] = ()  # files of --out logged as artifacts

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    @abstractmethod
    def config_class(self) -> type:
        """The stage's config dataclass (the config sections it reads)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """The stage's own arguments (the common ones are added by :func:`add_common_arguments`)."""

    def load_config(self, args: argparse.Namespace) -> Any:
        return load_stage_config(self.config_class(), *args.config, *args.config_json)

    def check(self, cfg: Any, args: argparse.Namespace) -> None:  # noqa: B027
        """Errors found before the MLflow run opens (bad arguments, an invalid config)."""

    def inputs(self, args: argparse.Namespace) -> dict[str, Path]:
        data = getattr(args, "data", None)
        return data_inputs(data) if data is not None else {}

    def params(self, cfg: Any, args: argparse.Namespace) -> dict[str, str]:
        return dict(getattr(args, "param", []))

    def tags(self, cfg: Any, args: argparse.Namespace) -> dict[str, str]:
        return dict(args.tag)

    @abstractmethod
    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        """Do the work; return what was measured (the summary line reads it)."""

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return f"{self.name}: done -> {args.out}"

    def main(self, args: argparse.Namespace) -> int:
        cfg = self.load_config(args)
        self.check(cfg, args)
        with stage_execution(
            self.name,
            cfg,
            out_dir=args.out,
            results_dir=args.results_dir,
            tags=self.tags(cfg, args),
            upstream=dict(args.upstream),
            resume=self.resume,
            params=self.params(cfg, args),
            inputs=self.inputs(args),
            input_context=self.input_context,
        ) as run:
            fail_if_asked(args, self.name)
            result = self.run(cfg, args, run)
            for name in self.outputs:
                if (Path(args.out) / name).exists():
                    run.log_artifact(Path(args.out) / name)
        from lookright.launch import is_main_process

        if is_main_process() and result is not None:
            print(self.summary(result, args))
        return 0
