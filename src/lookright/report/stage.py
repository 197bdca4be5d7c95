"""The ``report`` stage: every evaluation output gathered into tables, plots and one page.

    lookright report --eval-dir results/eval --grpo-dir results/grpo --data results/data \\
        --out results/report [--config-json '{"report": {...}, "seed": 0}']

Writes into ``--out``: ``answers.parquet`` and ``saliency.parquet`` (the summary tables,
:mod:`lookright.report.tables`; zero rows when not available), ``summary.md`` (Markdown),
``report.html`` (self-contained), ``plots/*.png`` (deletion/insertion and GRPO reward curves)
and ``gallery/gallery__<model>.png`` (saliency gallery sheets), all logged as artifacts of one
MLflow run. Missing pieces make their section say "not available"; an evaluation folder with
no output at all is an error naming it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyarrow as pa

from lookright.io import atomic_write_table
from lookright.report.collect import KEY_COLUMNS, EvalOutputs, discover, load_grpo
from lookright.report.config import ReportConfig, load_report_config, validate
from lookright.report.content import ReportContent, summary_markdown
from lookright.report.files import atomic_write_text
from lookright.report.gallery import build_galleries
from lookright.report.html import render_html
from lookright.report.plots import faithfulness_plots, reward_plots
from lookright.report.tables import answers_table, curves_table, saliency_table


def _empty(*extra: str) -> pa.Table:
    names = (*KEY_COLUMNS, *extra)
    return pa.table({n: pa.array([], pa.string()) for n in names})


def _missing(outputs: EvalOutputs, grpo_dir: Path | None, cfg: ReportConfig) -> dict[str, str]:
    root = outputs.root
    rewards = (
        "no GRPO folder given (--grpo-dir)"
        if grpo_dir is None
        else f"no GRPO rollouts (<model>/<reward_set>/samples.parquet) under {grpo_dir}"
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


def run_report(
    cfg: ReportConfig,
    eval_dir: str | Path,
    grpo_dir: str | Path | None,
    data_dir: str | Path | None,
    out_dir: str | Path,
    run: Any = None,
) -> dict[str, Any]:
    """Build the whole report into ``out_dir``; returns what was written (paths, row counts)."""
    validate(cfg)
    out = Path(out_dir)
    for folder in (out, out / "plots", out / "gallery"):  # declared outputs, even when empty
        folder.mkdir(parents=True, exist_ok=True)
    outputs = discover(eval_dir)
    grpo = None if grpo_dir is None else Path(grpo_dir)
    content = ReportContent(
        eval_dir=outputs.root,
        answers=answers_table(outputs),
        saliency=saliency_table(outputs),
        curve_plots=faithfulness_plots(curves_table(outputs), out / "plots"),
        reward_plots=reward_plots(load_grpo(grpo), cfg.report.smooth_window, out / "plots"),
        galleries=build_galleries(outputs, data_dir, cfg.report, out / "gallery"),
        **_missing(outputs, grpo, cfg),
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


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--eval-dir`` (required), ``--grpo-dir``, ``--data`` of ``lookright report``.

    The arguments every stage has (``--config-json``, ``--out``, ...) come from
    ``lookright.cli._stage_parser``.
    """
    parser.add_argument(
        "--eval-dir", required=True, type=Path, help="evaluate output root (results/eval)"
    )
    parser.add_argument(
        "--grpo-dir", default=None, type=Path, help="GRPO output root (results/grpo); optional"
    )
    parser.add_argument(
        "--data", default=None, type=Path, help="prepare_data output folder (gallery images)"
    )
    return parser


def report_main(args: argparse.Namespace) -> int:
    """Entry point of ``lookright report`` (arguments from :func:`add_report_arguments`)."""
    from lookright.stage import fail_if_asked, stage_execution

    cfg = load_report_config(*args.config, *args.config_json)
    discover(args.eval_dir)  # fail before opening a run when there is nothing to report
    with stage_execution(
        "report",
        cfg,
        out_dir=args.out,
        results_dir=args.results_dir,
        tags=dict(args.tag),
        upstream=dict(args.upstream),
        params=dict(args.param),
    ) as run:
        fail_if_asked(args, "report")
        summary = run_report(cfg, args.eval_dir, args.grpo_dir, args.data, args.out, run)
    missing = ", ".join(summary["not_available"]) or "none"
    print(
        f"report: {summary['answers_rows']} answer rows, {summary['saliency_rows']} saliency "
        f"rows, {len(summary['plots'])} plots, {len(summary['galleries'])} galleries "
        f"(not available: {missing}) -> {summary['report_html']}"
    )
    return 0
