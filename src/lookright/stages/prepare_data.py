"""Stage ``prepare_data``: the images, samples and rejected-rows tables (Parquet).

    lookright prepare-data --out results/data [--keep-rejected logs/prepare_data.rejected.parquet]

Reads the embedded shapes generator or the real datasets of ``data.real``
(:mod:`lookright.data.prepare`), validates every row and writes ``images.parquet``,
``samples.parquet``, ``rejected.parquet`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lookright.config import DataSection, TrackingConfig
from lookright.stages.base import Stage


@dataclass
class PrepareDataConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data: DataSection = field(default_factory=DataSection)


class PrepareData(Stage):
    name: ClassVar[str] = "prepare_data"
    help: ClassVar[str] = "build the images/samples/rejected tables"
    outputs: ClassVar[tuple[str, ...]] = ("summary.json", "rejected.parquet")

    def config_class(self) -> type:
        return PrepareDataConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--keep-rejected",
            type=Path,
            default=None,
            metavar="PARQUET",
            help="where to copy rejected.parquet when too many rows are rejected: a path outside "
            "the stage's outputs, which a failed Snakemake job deletes",
        )

    def inputs(self, args: argparse.Namespace) -> dict[str, Path]:
        return {}

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        from lookright.data.prepare import prepare
        from lookright.data.validate import TooManyRejected

        try:
            summary = prepare(cfg.data, args.out, seed=cfg.seed, keep_rejected=args.keep_rejected)
        except TooManyRejected as error:  # the run ends FAILED, with the rows as an artifact
            run.log_artifact(Path(error.rejected_path))
            raise TooManyRejected(
                f"{error} They are also an artifact (rejected.parquet) of the FAILED MLflow "
                f"run {run.run_id}.",
                rejected_path=error.rejected_path,
            ) from None
        run.log_metrics({k: v for k, v in summary.items() if isinstance(v, int | float)})
        return summary

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"prepare_data: {result['n_images']} images, {result['n_samples']} samples, "
            f"{result['n_rejected']} rejected -> {args.out}"
        )


STAGE = PrepareData()
