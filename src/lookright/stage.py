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
) -> Iterator[tracking.StageRun]:
    """Open the stage's MLflow run (FAILED on error) and write ``run.json`` on success.

    ``params`` (e.g. ``{"reward_set": "acc+fmt"}``) become MLflow params ``lookright.<key>``
    next to the flattened config, so the compare view lines ablations up. With ``resume``, a run of the same stage and output folder that did not finish is
    continued, so a training stage re-run after a kill keeps one metric history.
    In a multi-process launch only rank 0 does this; other ranks get a no-op run
    (:class:`lookright.launch.NullStageRun`) and write no ``run.json``.
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
        run_name=f"{stage}:{out_dir.name}",
    ) as run:
        if params:
            run.log_params({f"lookright.{key}": value for key, value in params.items()})
        yield run
        record = {
            "run_id": run.run_id,
            "stage": stage,
            "config_hash": config_hash(cfg),
            "tracking_uri": uri,
        }
        (out_dir / "run.json").write_text(json.dumps(record, indent=2))
