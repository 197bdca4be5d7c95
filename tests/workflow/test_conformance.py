"""The conformance run: the five real datasets in their on-disk formats, bad rows included,
through prepare_data and a CPU-sized copy of config/cluster.yaml up to the report.

It asserts the numbers a silent misread would get wrong: POPE n per split, CHAIR mentions
in COCO captions, NSS on the VQA-HAT rows, boxes on every GRPO prompt, the saliency-r1-8k
holdout of the reference rule, and the rejected rows after a forced failure (issue 14).
One DAG run (module fixture) is shared by the asserting tests; the models of the run are
set in tests/conformance/cpu.yaml only.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from tests.fixtures.real_format import BAD_ROWS, Sizes, write_real_datasets
from tests.workflow_utils import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow

CLUSTER_DATA_ROOT = "/datasets"
CPU_ENTRY_SIZES = {
    # reader -> the keys of its config/cluster.yaml entry that are sized for 8k / 200k rows
    "saliency_r1": {"holdout": 10, "val": 5},
    "llava_conversations": {"val": 3},
}
SIZES = Sizes()


def _rebase(value: Any, root: Path) -> Any:
    """``value`` with the cluster's dataset folder replaced by ``root`` (nested)."""
    if isinstance(value, str) and value.startswith(CLUSTER_DATA_ROOT + "/"):
        return str(root / value[len(CLUSTER_DATA_ROOT) + 1 :])
    if isinstance(value, dict):
        return {k: _rebase(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, root) for v in value]
    return value


def conformance_config(data_root: Path) -> dict[str, Any]:
    """config/cluster.yaml's reader entries on the fixtures, with tests/conformance/cpu.yaml."""
    cluster = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    entries = []
    for entry in _rebase(cluster["data"]["real"], data_root):
        entries.append({**entry, **CPU_ENTRY_SIZES.get(entry["reader"], {})})
    config = yaml.safe_load((REPO / "tests" / "conformance" / "cpu.yaml").read_text())
    config["data"]["real"] = entries
    return config


def _write_config(workdir: Path, name: str, config: dict[str, Any]) -> tuple[str, ...]:
    (workdir / name).write_text(yaml.safe_dump(config))
    return ("--configfile", "config/cluster.yaml", name)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Any]:
    data_root = write_real_datasets(tmp_path_factory.mktemp("datasets"), SIZES)
    workdir = copy_workflow(tmp_path_factory.mktemp("conformance"))
    config = conformance_config(data_root)
    result = snakemake(workdir, *_write_config(workdir, "conformance.yaml", config))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    results = workdir / config["results_dir"]
    return {"workdir": workdir, "results": results, "config": config, "data_root": data_root}


def _samples(run: dict[str, Any]) -> list[dict[str, Any]]:
    columns = ["sample_id", "split", "source", "roles", "task", "boxes", "pope_split"]
    return pq.read_table(run["results"] / "data" / "samples.parquet", columns=columns).to_pylist()


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _model(run: dict[str, Any]) -> str:
    (model,) = run["config"]["run_models"]
    return model


def test_every_bad_row_is_rejected_with_its_reason(run):
    summary = _json(run["results"] / "data" / "summary.json")
    rejected = pq.read_table(run["results"] / "data" / "rejected.parquet").to_pylist()
    by_source: dict[str, int] = {}
    for row in rejected:
        if not row["reason"].startswith("filtered:"):
            by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    assert by_source == BAD_ROWS
    assert summary["n_rejected_invalid"] == sum(BAD_ROWS.values())
    reasons = " | ".join(r["reason"] for r in rejected)
    for words in (
        "coordinates outside [0, 1]",  # a pixel-valued box
        "x2 <= x1",  # an inverted box
        "cannot be decoded",  # a truncated image
        "line is not valid JSON",  # a broken JSON line
        "has an aspect ratio above 200",
        "field 'images' holds 2 entries",
        "differ in size",
    ):
        assert words in reasons


def test_images_are_stored_once_as_their_original_bytes(run):
    images = pq.read_table(run["results"] / "data" / "images.parquet")
    formats = set(images["image_format"].to_pylist())
    assert formats == {"JPEG", "PNG"}  # the palette PNGs stay PNG, the JPEGs (CMYK too) JPEG
    coco = sorted((run["data_root"] / "coco" / "val2014").iterdir())
    stored = set(images["image_bytes"].to_pylist())
    assert all(path.read_bytes() in stored for path in coco)  # POPE, COCO, VQA-HAT: one copy
    ids = images["image_id"].to_pylist()
    assert len(ids) == len(set(ids))


def test_pope_n_per_split(run):
    """decode.max_samples = 12 POPE questions: 4 per split, not 12 adversarial ones."""
    metrics = _json(run["results"] / "eval" / _model(run) / "sft" / "greedy" / "metrics.json")
    assert [metrics[f"pope/{s}/n"] for s in ("random", "popular", "adversarial")] == [4, 4, 4]
    assert metrics["n_pope"] == 12
    report = pq.read_table(run["results"] / "report" / "answers.parquet").to_pylist()
    decoded = [r for r in report if r["strategy"] is not None]  # the GRPO row: VQA only
    assert [
        (r["pope_n_random"], r["pope_n_popular"], r["pope_n_adversarial"]) for r in decoded
    ] == [(4, 4, 4)]
    summary = (run["results"] / "report" / "summary.md").read_text()
    assert "POPE n (random)" in summary


def test_chair_mentions_found_in_coco_captions(run):
    chair = pq.read_table(
        run["results"] / "eval" / _model(run) / "sft" / "greedy" / "chair.parquet"
    ).to_pylist()
    (row,) = chair
    assert row["vocabulary"] == "coco"  # followed the data; cluster.yaml used to inherit shapes
    assert row["n_captions"] == SIZES.coco_images
    assert row["n_reference_mentions"] >= 3 * SIZES.coco_images  # every caption names 3 objects
    if row["n_mentions"] == 0:  # the tiny model's captions may name nothing: flagged, not 0
        assert row["chair_i"] is None and row["note"].startswith("no object mention")
    else:
        assert 0.0 <= row["chair_i"] <= 1.0


def test_nss_computed_for_the_vqa_hat_rows(run):
    """evaluate.max_samples = 8 of the test VQA rows: 4 of them VQA-HAT's, with human maps."""
    folder = run["results"] / "eval" / _model(run) / "sft" / "saliency"
    rows = pq.read_table(folder / "saliency.parquet").to_pylist()
    hat = [r for r in rows if r["sample_id"].startswith("vqa-hat-")]
    assert len({r["sample_id"] for r in hat}) == 4
    assert len({r["sample_id"] for r in rows} - {r["sample_id"] for r in hat}) == 4
    scored = [r["nss"] for r in hat if r["has_map"] and r["nss"] is not None]
    assert scored and all(math.isfinite(v) for v in scored)
    metrics = _json(folder / "metrics.json")
    assert math.isfinite(metrics["logit_decomposition/nss"])


def test_grpo_prompts_all_have_boxes(run):
    samples = {s["sample_id"]: s for s in _samples(run)}
    prompts = pq.read_table(
        run["results"] / "grpo" / _model(run) / "acc+fmt+sal" / "samples.parquet",
        columns=["sample_id"],
    )["sample_id"].to_pylist()
    assert prompts
    for sample_id in set(prompts):
        sample = samples[sample_id]
        assert sample["boxes"] and "rl" in sample["roles"] and sample["split"] == "train"
        assert sample["source"] == "saliency-r1-8k"


def test_sft_trains_on_the_cold_start_and_has_val_rows(run):
    samples = _samples(run)
    cold = [s for s in samples if s["source"].startswith("vision-r1-") and s["split"] == "train"]
    model = _model(run)
    record = _json(run["results"] / "sft" / model / "run.json")
    client = MlflowClient(record["tracking_uri"])
    params = client.get_run(record["run_id"]).data.params
    assert int(params["n_train_samples"]) == len(cold)  # no saliency-r1-8k row without <think>
    metrics = _json(run["results"] / "sft" / model / "metrics.json")
    assert metrics["n_val"] == 3 and math.isfinite(metrics["val_vqa_accuracy"])
    val = {s["source"] for s in samples if s["split"] == "val"}
    assert val == {"saliency-r1-8k", "vision-r1-llava-cot", "vision-r1-mulberry"}


def test_holdout_ids_equal_the_reference_rule(run, tmp_path):
    import datasets

    files = sorted((run["data_root"] / "saliency-r1-8k" / "data").glob("*.parquet"))
    reference = datasets.load_dataset(
        "parquet", data_files=[str(f) for f in files], split="train", cache_dir=str(tmp_path)
    )
    holdout = CPU_ENTRY_SIZES["saliency_r1"]["holdout"]
    test_rows = set(reference.add_column("row", list(range(len(reference))))
                    .train_test_split(test_size=holdout, seed=42)["test"]["row"])  # fmt: skip
    rejected = {
        r["source_row"]
        for r in pq.read_table(run["results"] / "data" / "rejected.parquet").to_pylist()
        if r["source"] == "saliency-r1-8k"
    }
    held_out = {
        int(s["sample_id"].split("-")[-2])
        for s in _samples(run)
        if s["source"] == "saliency-r1-8k" and s["split"] == "test"
    }
    assert held_out == test_rows - rejected
    assert held_out


def test_rejected_rows_findable_after_a_forced_failure(run):
    """Too many rejected rows: the job fails, Snakemake deletes its outputs (rejected.parquet
    with them); the rows stay in the logs folder and in the FAILED MLflow run."""
    workdir = run["workdir"]
    config = copy.deepcopy(run["config"])
    config["data"]["max_rejected_fraction"] = 0.01
    config["results_dir"], config["logs_dir"] = "results-fail", "logs-fail"
    args = _write_config(workdir, "conformance-fail.yaml", config)
    result = snakemake(workdir, "results-fail/data/samples.parquet", *args)  # target first
    assert result.returncode != 0
    assert not (workdir / "results-fail" / "data" / "rejected.parquet").exists()  # deleted
    kept = workdir / "logs-fail" / "prepare_data.rejected.parquet"
    rows = pq.read_table(kept).to_pylist()
    assert len(rows) == len(pq.read_table(run["results"] / "data" / "rejected.parquet"))
    log = (workdir / "logs-fail" / "prepare_data.log").read_text()
    assert str(kept.resolve()) in log or "logs-fail/prepare_data.rejected.parquet" in log
    client = MlflowClient(f"sqlite:///{(workdir / 'results-fail' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name(config["tracking"]["experiment"])
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(failed.info.run_id)] == ["rejected.parquet"]
    assert f"MLflow run {failed.info.run_id}" in log
