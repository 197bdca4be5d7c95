"""The ``report`` stage: every evaluation output gathered into tables, plots and one page.

    lookright report --evaluation results/eval/<model>/<source>/saliency ... \\
        --grpo-samples results/grpo/<model>/<reward_set>/samples.parquet ... \\
        --data results/data --out results/report [--config-json '{"report": {...}}']

Writes into ``--out``: ``answers.parquet`` and ``saliency.parquet`` (the summary tables,
:mod:`lookright.report.tables`; zero rows when not available), ``summary.md`` (Markdown),
``report.html`` (self-contained), ``plots/*.png`` (deletion/insertion and GRPO reward curves)
and ``gallery/gallery__<model>.png`` (saliency gallery sheets), all logged as artifacts of one
MLflow run. It reads exactly the folders and files it is given (the ones its rule declares),
never a whole results tree, so a branch left over from an older config never enters it.
Missing pieces make their section say "not available"; a given evaluation folder with no
output at all is an error naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pyarrow as pa
from tqdm.auto import tqdm

from lookright.config import ConfigError, TrackingConfig, load_stage_config
from lookright.io import atomic_write_table
from lookright.report.collect import KEY_COLUMNS, EvalOutputs, collect, load_grpo
from lookright.report.config import ReportSection
from lookright.report.content import ReportContent, summary_markdown
from lookright.report.files import atomic_write_text
from lookright.report.gallery import build_galleries
from lookright.report.html import render_html
from lookright.report.plots import faithfulness_plots, reward_plots
from lookright.report.tables import answers_table, curves_table, saliency_table
from lookright.stages.base import Stage

T = TypeVar("T")


@dataclass
class ReportConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportSection = field(default_factory=ReportSection)


def validate(cfg: ReportConfig) -> ReportConfig:
    """Range checks of the ``report`` section; a :class:`ConfigError` names the key."""
    from lookright.saliency.api import available_methods

    r = cfg.report
    if r.gallery_samples < 0:
        raise ConfigError(f"report.gallery_samples must be >= 0, got {r.gallery_samples}")
    if r.smooth_window < 1:
        raise ConfigError(f"report.smooth_window must be >= 1, got {r.smooth_window}")
    if r.gallery_methods is not None:
        methods = r.gallery_methods
        if not methods or any(not m.strip() for m in methods):
            raise ConfigError(
                f"report.gallery_methods must be null (all methods) or a non-empty list of "
                f"method names, got {methods}"
            )
        duplicates = sorted({m for m in methods if methods.count(m) > 1})
        if duplicates:
            raise ConfigError(f"report.gallery_methods lists {duplicates} more than once")
        unknown = [m for m in methods if m not in available_methods()]
        if unknown:
            raise ConfigError(
                f"report.gallery_methods: unknown method(s) {unknown}; valid: {available_methods()}"
            )
    return cfg


def load_report_config(*sources: str | Path | dict | None) -> ReportConfig:
    """Defaults, merged with ``sources`` (YAML paths, JSON strings, dicts), validated."""
    return validate(load_stage_config(ReportConfig, *sources))


def _empty(*extra: str) -> pa.Table:
    names = (*KEY_COLUMNS, *extra)
    return pa.table({n: pa.array([], pa.string()) for n in names})


def _missing(outputs: EvalOutputs, n_grpo: int, cfg: ReportConfig) -> dict[str, str]:
    root = outputs.root
    rewards = (
        "no GRPO rollouts given (--grpo-samples)"
        if n_grpo == 0
        else f"none of the {n_grpo} GRPO rollout tables given has a reward column"
    )
    gallery = (
        "report.gallery_samples is 0"
        if cfg.report.gallery_samples == 0
        else f"no saliency maps (<model>/<source>/saliency/maps.parquet) under {root}"
    )
    return {
        "answers_missing": f"no decode-strategy evaluation (<model>/<source>/<strategy>/) "
        f"and no VQA accuracy under {root}",
        "saliency_missing": f"no saliency summary (<model>/<source>/saliency/summary.parquet) "
        f"under {root}",
        "curves_missing": f"no deletion/insertion curves (<model>/<source>/saliency/"
        f"curves.parquet) under {root}",
        "rewards_missing": rewards,
        "gallery_missing": gallery,
    }


def _remove_stale(folder: Path, keep: set[Path]) -> None:
    """Delete PNGs of an earlier report that this one did not write again."""
    if folder.is_dir():
        for path in folder.glob("*.png"):
            if path.resolve() not in keep:
                path.unlink()


def _log(run: Any, out: Path, content: ReportContent) -> None:
    run.log_metrics(
        {
            "answers_rows": float(0 if content.answers is None else len(content.answers)),
            "saliency_rows": float(0 if content.saliency is None else len(content.saliency)),
            "plots": float(len(content.curve_plots) + len(content.reward_plots)),
            "galleries": float(len(content.galleries)),
        }
    )
    for name in ("report.html", "summary.md", "answers.parquet", "saliency.parquet"):
        run.log_artifact(out / name)
    for plot in [*content.curve_plots, *content.reward_plots]:
        run.log_artifact(plot.path, artifact_path="plots")
    for gallery in content.galleries:
        if gallery.path is not None:
            run.log_artifact(gallery.path, artifact_path="gallery")


def _step(bar: Any, name: str, build: Callable[..., T], *args: Any) -> T:
    """One part of the report, shown on the progress bar while it is built."""
    bar.set_postfix_str(name)
    result = build(*args)
    bar.update(1)
    return result


def run_report(
    cfg: ReportConfig,
    evaluations: list[str | Path],
    grpo_samples: list[str | Path],
    data_dir: str | Path | None,
    out_dir: str | Path,
    run: Any = None,
) -> dict[str, Any]:
    """Build the whole report into ``out_dir``; returns what was written (paths, row counts)."""
    validate(cfg)
    out = Path(out_dir)
    for folder in (out, out / "plots", out / "gallery"):  # declared outputs, even when empty
        folder.mkdir(parents=True, exist_ok=True)
    outputs = collect(evaluations)
    with tqdm(total=5, desc="report", unit=" part") as bar:
        answers = _step(bar, "answers table", answers_table, outputs)
        saliency = _step(bar, "saliency table", saliency_table, outputs)
        curve_plots = _step(
            bar, "faithfulness plots", faithfulness_plots, curves_table(outputs), out / "plots"
        )
        grpo = load_grpo(grpo_samples)
        plots = _step(
            bar, "reward plots", reward_plots, grpo, cfg.report.smooth_window, out / "plots"
        )
        galleries = _step(
            bar, "gallery", build_galleries, outputs, data_dir, cfg.report, out / "gallery"
        )
    content = ReportContent(
        eval_dir=outputs.root,
        answers=answers,
        saliency=saliency,
        curve_plots=curve_plots,
        reward_plots=plots,
        galleries=galleries,
        **_missing(outputs, len(grpo_samples), cfg),
    )
    if content.galleries and (data_dir is None or not Path(data_dir).is_dir()):
        content.notes.append(f"data folder {data_dir} not found: gallery maps drawn on grey")
    plots = [p.path for p in [*content.curve_plots, *content.reward_plots]]
    sheets = [g.path for g in content.galleries if g.path is not None]
    _remove_stale(out / "plots", {p.resolve() for p in plots})
    _remove_stale(out / "gallery", {p.resolve() for p in sheets})
    atomic_write_table(
        content.answers if content.answers is not None else _empty("strategy"),
        out / "answers.parquet",
    )
    atomic_write_table(
        content.saliency if content.saliency is not None else _empty("method"),
        out / "saliency.parquet",
    )
    atomic_write_text(out / "summary.md", summary_markdown(content, out))
    atomic_write_text(out / "report.html", render_html(content))
    if run is not None:
        _log(run, out, content)
    return {
        "answers_rows": 0 if content.answers is None else len(content.answers),
        "saliency_rows": 0 if content.saliency is None else len(content.saliency),
        "plots": [str(p) for p in plots],
        "galleries": [str(p) for p in sheets],
        "report_html": str(out / "report.html"),
        "summary_md": str(out / "summary.md"),
        "not_available": [
            name
            for name, material in (
                ("answers", content.answers),
                ("saliency", content.saliency),
                ("faithfulness_curves", content.curve_plots),
                ("grpo_rewards", content.reward_plots),
                ("gallery", content.galleries),
            )
            if material is None or (isinstance(material, list) and not material)
        ],
    }


# -- CLI ----------------------------------------------------------------------------------


# -- the stage ------------------------------------------------------------------------------


class Report(Stage):
    name: ClassVar[str] = "report"
    help: ClassVar[str] = "tables, plots, gallery and report.html of every evaluation"
    input_context: ClassVar[str] = "evaluation"

    def config_class(self) -> type:
        return ReportConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--evaluation",
            action="append",
            default=[],
            type=Path,
            metavar="DIR",
            help="an evaluation folder (<model>/<source>/saliency or .../<strategy>); repeatable",
        )
        parser.add_argument(
            "--grpo-samples",
            action="append",
            default=[],
            type=Path,
            metavar="PARQUET",
            help="a GRPO branch's samples.parquet (reward curves); repeatable",
        )
        parser.add_argument(
            "--data", default=None, type=Path, help="prepare_data output folder (gallery images)"
        )

    def check(self, cfg: Any, args: argparse.Namespace) -> None:
        validate(cfg)
        collect(args.evaluation)  # nothing to report: fail before the MLflow run opens

    def inputs(self, args: argparse.Namespace) -> dict[str, Path]:
        return {}

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        return run_report(cfg, args.evaluation, args.grpo_samples, args.data, args.out, run)

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        missing = ", ".join(result["not_available"]) or "none"
        return (
            f"report: {result['answers_rows']} answer rows, {result['saliency_rows']} saliency "
            f"rows, {len(result['plots'])} plots, {len(result['galleries'])} galleries "
            f"(not available: {missing}) -> {result['report_html']}"
        )


STAGE = Report()
