"""``run_report`` end to end, missing pieces, and ``lookright report`` through the CLI parser."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from lookright.cli import parse_args
from lookright.report.collect import ReportInputError
from lookright.stages.report import ReportConfig, load_report_config, run_report
from tests.report.report_inputs import GRPO, MODEL, SFT, Inputs, build_inputs


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


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return build_inputs(tmp_path / "results")


def test_full_report(inputs: Inputs, tmp_path: Path) -> None:
    out = tmp_path / "report"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "stale.png").write_bytes(b"old")
    run = FakeRun()
    summary = run_report(
        ReportConfig(), inputs.evaluations(), inputs.grpo_samples(), inputs.data_dir, out, run
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
    summary = run_report(cfg, inputs.evaluations(), inputs.grpo_samples(), None, out)
    assert summary["not_available"] == ["grpo_rewards", "gallery"]
    text = (out / "summary.md").read_text()
    assert "_Not available: no GRPO rollouts given (--grpo-samples)_" in text
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
    summary = run_report(ReportConfig(), inputs.evaluations(), [], inputs.data_dir, tmp_path / "r")
    assert summary["not_available"] == ["answers", "saliency", "grpo_rewards"]
    assert pq.read_table(tmp_path / "r" / "answers.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "r" / "saliency.parquet").column_names == [
        "model", "source", "reward_set", "method",
    ]  # fmt: skip
    assert "no GRPO rollouts given (--grpo-samples)" in (tmp_path / "r" / "summary.md").read_text()


def test_cli_fails_clearly_without_evaluations(tmp_path: Path) -> None:
    (tmp_path / "eval" / "m" / "sft" / "greedy").mkdir(parents=True)
    args = parse_args(["report", "--out", str(tmp_path / "out"), "--results-dir", str(tmp_path)])
    with pytest.raises(ReportInputError, match="no evaluation folder given"):
        args.func(args)
    empty = str(tmp_path / "eval" / "m" / "sft" / "greedy")
    args = parse_args(["report", "--evaluation", empty, "--out", str(tmp_path / "out")])
    with pytest.raises(ReportInputError, match=f"{empty}: no evaluation output"):
        args.func(args)
    assert not (tmp_path / "mlflow.db").exists()  # failed before opening a run


def test_the_report_reads_only_the_folders_it_is_given(inputs: Inputs, tmp_path: Path) -> None:
    """A branch left over from an older config (still on disk) must not enter the report."""
    from lookright.report.collect import collect

    given = [f for f in inputs.evaluations() if f.parent.name == SFT]
    outputs = collect(given)
    assert {d.source for d in outputs.saliency + outputs.answers} == {SFT}


def test_cli_logs_an_mlflow_run(inputs: Inputs, tmp_path: Path, capsys) -> None:
    pytest.importorskip("mlflow")
    out = tmp_path / "out"
    folders = [a for f in inputs.evaluations() for a in ("--evaluation", str(f))]
    samples = [a for f in inputs.grpo_samples() for a in ("--grpo-samples", str(f))]
    args = parse_args(
        ["report", *folders, *samples,
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
