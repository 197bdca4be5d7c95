"""What every stage execution shares: its config, its MLflow run, its ``run.json``.

A stage writes ``run.json`` (MLflow run id, config hash) into its output folder when it
succeeds; downstream stages read it to tag their runs with their upstream run ids, so the
runs of one pipeline can be found and compared together.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lookright import tracking
from lookright.config import config_hash, to_dict
from lookright.launch import NullStageRun, is_main_process


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
) -> Iterator[tracking.StageRun]:
    """Open the stage's MLflow run (FAILED on error) and write ``run.json`` on success.

    ``params`` (e.g. ``{"reward_set": "acc+fmt"}``, the branch's ablation values) become
    top-level MLflow params (``reward_set``) next to the flattened config, so the compare view
    lines ablations up, and tags ``lookright.<key>`` to filter and group runs by. With ``resume``, a run of the same stage and output folder that did not finish is
    continued, so a training stage re-run after a kill keeps one metric history.
    In a multi-process launch only rank 0 does this; other ranks get a no-op run
    (:class:`lookright.launch.NullStageRun`) and write no ``run.json``.
    ``inputs`` (``{name: Parquet path}``, see :func:`data_inputs`) are recorded as the run's
    input datasets with ``input_context`` (MLflow's Datasets column; missing files skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():  # another rank of a multi-process launch: rank 0 tracks
        yield NullStageRun()
        return
    config = to_dict(cfg)
    tracking_cfg = config.get("tracking", {})
    uri = tracking.resolve_tracking_uri(tracking_cfg.get("uri"), results_dir)
    run_key = f"{stage}:{os.path.abspath(out_dir)}"
    with tracking.stage_run(
        stage,
        config=config,
        tracking_uri=uri,
        experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking_cfg["experiment"],
        tags=dict(tags or {}),
        upstream_run_ids=upstream_run_ids(upstream or {}),
        run_key=run_key,
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
