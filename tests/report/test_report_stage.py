"""``run_report`` end to end, missing pieces, and ``lookright report`` through the CLI parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from report_inputs import GRPO, MODEL, SFT, Inputs, build_inputs

from lookright.report.collect import ReportInputError
from lookright.report.config import ReportConfig, load_report_config
from lookright.report.stage import add_report_arguments, report_main, run_report


class FakeRun:
    """Records what a stage logs to MLflow."""

    def __init__(self) -> None:
        self.artifacts: list[tuple[str, str | None]] = []
        self.metrics: dict[str, float] = {}

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        assert Path(path).is_file(), path
        self.artifacts.append((Path(path).name, artifact_path))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics |= metrics


def test_full_report(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "stale.png").write_bytes(b"old")
    run = FakeRun()
    summary = run_report(
        ReportConfig(), inputs.eval_dir, inputs.grpo_dir, inputs.data_dir, out, run
    )
    assert summary["not_available"] == []
    assert (summary["answers_rows"], summary["saliency_rows"]) == (3, 4)
    assert len(pq.read_table(out / "answers.parquet")) == 3
    assert len(pq.read_table(out / "saliency.parquet")) == 4
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == [
        f"faithfulness__{MODEL}__{GRPO}.png",
        f"faithfulness__{MODEL}__{SFT}.png",
        f"grpo_compare__{MODEL}.png",
        f"grpo_rewards__{MODEL}__acc+fmt+sal.png",
        f"grpo_rewards__{MODEL}__acc.png",
    ]  # the stale PNG of an earlier report is gone
    for path in [*(out / "plots").glob("*.png"), out / "gallery" / f"gallery__{MODEL}.png"]:
        with Image.open(path) as image:
            image.verify()
    with Image.open(out / "gallery" / f"gallery__{MODEL}.png") as sheet:
        # 4 columns (2 sources x 2 methods) of 160 px after a 170 px label column
        assert sheet.size[0] == 170 + 4 * 164
    text = (out / "summary.md").read_text()
    assert "## Answers" in text and "Not available" not in text
    assert f"](plots/faithfulness__{MODEL}__{SFT}.png)" in text
    assert f"](gallery/gallery__{MODEL}.png)" in text
    logged = set(run.artifacts)
    assert {("report.html", None), ("summary.md", None), ("answers.parquet", None)} <= logged
    assert (f"grpo_compare__{MODEL}.png", "plots") in logged
    assert (f"gallery__{MODEL}.png", "gallery") in logged
    assert run.metrics["saliency_rows"] == 4.0


def test_missing_pieces_say_not_available(tmp_path: Path) -> None:
    inputs = build_inputs(tmp_path / "results", answers=False, grpo=False, maps=False)
    out = tmp_path / "report"
    cfg = load_report_config({"report": {"gallery_samples": 2}})
    summary = run_report(cfg, inputs.eval_dir, inputs.grpo_dir, None, out)
    assert summary["not_available"] == ["grpo_rewards", "gallery"]
    text = (out / "summary.md").read_text()
    assert (
        f"_Not available: no GRPO rollouts (<model>/<reward_set>/samples.parquet) under {inputs.grpo_dir}_"
        in text
    )
    assert "_Not available: no saliency maps" in text
    html = (out / "report.html").read_text()
    assert html.count('class="not-available"') == 2
    # the answers table still has the VQA accuracy of each source, without strategies
    assert pq.read_table(out / "answers.parquet").column("strategy").to_pylist() == [None, None]


def test_no_answers_and_no_saliency_summary(tmp_path: Path) -> None:
    inputs = build_inputs(tmp_path / "results", grpo=False)
    for source in (SFT, GRPO):
        folder = inputs.eval_dir / MODEL / source
        (folder / "saliency" / "summary.parquet").unlink()
        (folder / "saliency" / "metrics.json").unlink()
        for strategy in folder.iterdir():
            if strategy.name != "saliency":
                for path in strategy.iterdir():
                    path.unlink()
    summary = run_report(ReportConfig(), inputs.eval_dir, None, inputs.data_dir, tmp_path / "r")
    assert summary["not_available"] == ["answers", "saliency", "grpo_rewards"]
    assert pq.read_table(tmp_path / "r" / "answers.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "r" / "saliency.parquet").column_names == [
        "model", "source", "reward_set", "method",
    ]  # fmt: skip
    assert "no GRPO folder given (--grpo-dir)" in (tmp_path / "r" / "summary.md").read_text()


def _parser() -> argparse.ArgumentParser:
    from lookright.cli import _stage_parser

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    report = _stage_parser(sub, "report", "build the report")
    add_report_arguments(report)
    report.set_defaults(func=report_main)
    return parser


def test_cli_fails_clearly_on_an_empty_eval_dir(tmp_path: Path) -> None:
    (tmp_path / "eval").mkdir()
    args = _parser().parse_args(
        ["report", "--eval-dir", str(tmp_path / "eval"), "--out", str(tmp_path / "out"),
         "--results-dir", str(tmp_path)]
    )  # fmt: skip
    with pytest.raises(ReportInputError, match=str(tmp_path / "eval")):
        args.func(args)
    assert not (tmp_path / "mlflow.db").exists()  # failed before opening a run


def test_cli_logs_an_mlflow_run(inputs: Inputs, tmp_path: Path, capsys) -> None:
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    args = _parser().parse_args(
        ["report", "--eval-dir", str(inputs.eval_dir), "--grpo-dir", str(inputs.grpo_dir),
         "--data", str(inputs.data_dir), "--out", str(out), "--results-dir", str(tmp_path),
         "--config-json", '{"report": {"gallery_samples": 1, "smooth_window": 2}}',
         "--tag", "snakemake.rule=report", "--param", "what=test"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert "report: 3 answer rows, 4 saliency rows, 5 plots, 1 galleries" in capsys.readouterr().out
    record = json.loads((out / "run.json").read_text())
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["snakemake.rule"] == "report"
    assert run.data.params["report.smooth_window"] == "2"
    names = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"report.html", "summary.md", "plots", "gallery"} <= names
    plots = {a.path for a in client.list_artifacts(record["run_id"], "plots")}
    assert f"plots/faithfulness__{MODEL}__{SFT}.png" in plots
