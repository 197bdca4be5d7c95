"""The Snakemake DAG: it runs end to end on the smoke config, and reruns only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
import yaml

from tests.workflow_utils import copy_workflow, planned_jobs, snakemake

SMOKE = ("--configfile", "config/smoke.yaml")


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    result = snakemake(workdir, *SMOKE)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


pytestmark = pytest.mark.slow


def test_smoke_dag_produces_tables_checkpoints_and_runs(finished_workflow: Path) -> None:
    results = finished_workflow / "results-smoke"
    samples = pq.read_table(results / "data" / "samples.parquet")
    assert set(samples["split"].to_pylist()) == {"train", "val", "test"}
    for stage in ("pretrain", "sft"):
        model_dir = results / stage / "tiny-qwen2.5-vl" / "model"
        assert (model_dir / "config.json").is_file()
        assert (model_dir / "model.safetensors").is_file()
        metrics = json.loads((results / stage / "tiny-qwen2.5-vl" / "metrics.json").read_text())
        assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lookright")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {r.data.tags["lookright.stages.base"]: r for r in runs}
    assert set(by_stage) == {
        "prepare_data",
        "pretrain",
        "sft",
        "grpo",
        "decode",
        "evaluate_saliency",
        "evaluate_answers",
        "report",
    }
    assert all(r.info.status == "FINISHED" for r in runs)
    sft = by_stage["sft"]
    assert sft.data.tags["lookright.upstream.pretrain"] == by_stage["pretrain"].info.run_id
    assert sft.data.tags["snakemake.rule"] == "sft"
    assert sft.data.params["sft.steps"] == "3"
    assert "loss" in sft.data.metrics


def test_nothing_to_do_after_a_complete_run(finished_workflow: Path) -> None:
    assert planned_jobs(finished_workflow, *SMOKE) == {}


def _with_override(workdir: Path, override: dict) -> tuple[str, ...]:
    path = workdir / "override.yaml"
    path.write_text(yaml.safe_dump(override))
    return ("--configfile", "config/smoke.yaml", str(path))


# Downstream of one trained model (SFT or a GRPO branch) in the smoke config: 2 decode
# strategies, 1 saliency evaluation and 2 answer evaluations; the report always follows.
ALL_MODELS = {"grpo": 3, "decode": 8, "evaluate_saliency": 4, "evaluate_answers": 8, "report": 1}
ONE_BRANCH = {"grpo": 1, "decode": 2, "evaluate_saliency": 1, "evaluate_answers": 2, "report": 1}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"sft": {"learning_rate": 0.01}}, {"sft": 1, **ALL_MODELS}),
        ({"pretrain": {"steps": 5}}, {"pretrain": 1, "sft": 1, **ALL_MODELS}),
        (
            {"data": {"shapes": {"seed": 7}}},
            {"prepare_data": 1, "pretrain": 1, "sft": 1, **ALL_MODELS},
        ),
        ({"tracking": {"experiment": "elsewhere"}}, {}),
        ({"grpo": {"run_reward_sets": ["acc+fmt", "acc+fmt+sal", "sayo", "acc"]}}, ONE_BRANCH),
        ({"grpo": {"reward_options": {"region_attention": {"rho": 0.2}}}}, ONE_BRANCH),
        (
            {"grpo": {"reward_set_options": {"sayo": {"region_attention": {"rho": 0.2}}}}},
            ONE_BRANCH,
        ),
        (
            {"decode": {"run_strategies": ["greedy", "sgrs+locore", "locore"]}},
            {"decode": 4, "evaluate_answers": 4, "report": 1},
        ),
        ({"decode": {"sgrs": {"alpha": 0.5}}}, {"decode": 4, "evaluate_answers": 4, "report": 1}),
        ({"evaluate": {"chair": {"singulariser": "auto"}}}, {"evaluate_answers": 8, "report": 1}),
        ({"evaluate": {"nss_percentile": 80.0}}, {"evaluate_saliency": 4, "report": 1}),
        ({"report": {"smooth_window": 3}}, {"report": 1}),
    ],
    ids=[
        "sft-param",
        "pretrain-param",
        "data-param",
        "tracking-only",
        "new-reward-set",
        "sayo-option",
        "per-set-option",
        "new-strategy",
        "sgrs-option",
        "chair-option",
        "nss-option",
        "report-option",
    ],
)
def test_changing_a_parameter_reruns_its_stage_and_downstream_only(
    finished_workflow: Path, override: dict, expected: dict[str, int]
) -> None:
    assert planned_jobs(finished_workflow, *_with_override(finished_workflow, override)) == expected


def _edit(path: Path) -> str:
    original = path.read_text()
    path.write_text(original + "\n# edited by a test\n")
    return original


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("stages/sft.py", {"sft": 1, **ALL_MODELS}),
        ("stages/pretrain.py", {"pretrain": 1, "sft": 1, **ALL_MODELS}),
        ("data/shapes.py", {"prepare_data": 1, "pretrain": 1, "sft": 1, **ALL_MODELS}),
        ("rewards/region_attention.py", ONE_BRANCH),
        ("decoding/sgrs.py", {"decode": 8, "evaluate_answers": 8, "report": 1}),
        ("metrics/chair.py", {"evaluate_answers": 8, "report": 1}),
        ("metrics/faithfulness.py", {"evaluate_saliency": 4, "report": 1}),
        ("report/html.py", {"report": 1}),
        # imported by the report only through the gallery (a hand-kept list missed it)
        ("saliency/render.py", {"report": 1}),
    ],
)
def test_editing_package_code_reruns_the_stages_that_use_it(
    finished_workflow: Path, module: str, expected: dict[str, int]
) -> None:
    path = finished_workflow / "src" / "lookright" / module
    original = _edit(path)
    try:
        assert planned_jobs(finished_workflow, *SMOKE) == expected
    finally:
        path.write_text(original)


def test_snakemake_report_holds_the_page_plots_and_gallery(finished_workflow: Path) -> None:
    """`snakemake --report report.zip`: the usual self-contained Snakemake report."""
    import zipfile

    result = snakemake(finished_workflow, *SMOKE, "--report", "report.zip")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with zipfile.ZipFile(finished_workflow / "report.zip") as archive:
        names = archive.namelist()
        page = archive.read("report/report.html").decode()
    files = sorted(Path(n).name for n in names if n.startswith("report/data/raw/"))
    assert "report.html" in files, names[:20]  # lookright's own page, embedded
    assert any(n.startswith("grpo_rewards") and n.endswith(".png") for n in files), files
    assert any(n.startswith("gallery") and n.endswith(".png") for n in files), files
    for category in ("Report", "Plots", "Saliency gallery"):
        assert category in page
