"""The ``evaluate_saliency`` stage on a tiny checkpoint: tables, faithfulness, MLflow run."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from lookright.cli import parse_args
from lookright.config import ConfigError, load_stage_config
from lookright.data.schema import IMAGES, SAMPLES
from lookright.data.shapes import ShapesConfig, generate_split
from lookright.io import write_rows
from lookright.models import get_adapter, load_model
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer
from lookright.saliency.storage import MAP_SCHEMA
from lookright.stages import evaluate_saliency as saliency_stage
from lookright.stages.evaluate_saliency import (
    CURVES,
    OUTPUTS,
    PREDICTIONS,
    completion_logprobs,
    curve_fractions,
    faithfulness_columns,
    run_evaluate_saliency,
)
from lookright.stages.evaluation import EvaluateConfig, FaithfulnessSection
from lookright.tracking import _safe_key
from lookright.train import common as train_common
from lookright.train.datasets import decode_image, load_samples

TEXTS = [
    "What color is the circle?",
    "<think>It is at the top left. The circle red.</think>red",
    "no yes blue green square triangle bottom right",
] * 5
SIZE = TinySize(
    text_hidden=32,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=64,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_intermediate=64,
)
METHODS = ["random", "raw_attention", "cot_bottleneck"]
SUBSETS = ["bias_aligned", "bias_conflicting", "bias_aligned", None]
CORRECT = [True, True, False, True]  # the fake model's answers (see fake_generation)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only cost (2 shared cores)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint and a data folder: 4 test VQA samples + 1 val."""
    root = tmp_path_factory.mktemp("evaluate")
    adapter = get_adapter("qwen2_5_vl")
    torch.manual_seed(0)
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 300)
    model, processor = adapter.build_tiny(tokenizer, SIZE, 112)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    shapes = ShapesConfig(n_train=0, n_val=1, n_test=2, min_objects=2, max_objects=2)
    images, samples = [], []
    for split in ("test", "val"):
        split_images, split_samples = generate_split(shapes, split)
        images += split_images
        samples += split_samples
    test_vqa = sorted(
        (s for s in samples if s["split"] == "test" and s["task"] == "vqa"),
        key=lambda s: s["sample_id"],
    )
    assert len(test_vqa) == 4
    for sample, subset in zip(test_vqa, SUBSETS, strict=True):
        sample["subset"] = subset
    test_vqa[1]["human_map"] = None  # no human map -> null NSS / Spearman
    test_vqa[1]["human_map_height"] = test_vqa[1]["human_map_width"] = None
    test_vqa[2]["boxes"] = []  # no box -> null alignment
    write_rows(images, IMAGES, root / "data" / "images.parquet")
    write_rows(samples, SAMPLES, root / "data" / "samples.parquet")
    return root


def fake_generation(model, processor, adapter, rows, *, max_new_tokens, batch_size, desc):
    """Well-formed completions: the CoT target, with a wrong final answer where not CORRECT."""
    out = []
    for row, correct in zip(rows, CORRECT, strict=True):
        thought = row["cot"].rsplit("</think>", 1)[0]
        out.append(f"{thought}</think>{row['answer'] if correct else 'purple'}")
    return out


def _config(**evaluate) -> EvaluateConfig:
    section = {
        "max_samples": 4,
        "batch_size": 3,
        "max_new_tokens": 8,
        "methods": METHODS,
        "gallery_samples": 2,
        "faithfulness": {"curve_steps": 2, "max_samples": 2},
        **evaluate,
    }
    return load_stage_config(EvaluateConfig, {"evaluate": section})


@pytest.fixture(scope="module")
def evaluated(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_common, "greedy_answers", fake_generation)
        metrics = run_evaluate_saliency(_config(), inputs / "model", inputs / "data", out)
    return out, metrics


def test_predictions_and_accuracy(evaluated, inputs):
    out, metrics = evaluated
    table = pq.read_table(out / "predictions.parquet")
    assert table.schema.names == PREDICTIONS.names
    rows = table.to_pylist()
    samples = load_samples(inputs / "data", "test", ("vqa",)).to_pylist()
    assert [r["sample_id"] for r in rows] == [s["sample_id"] for s in samples]
    assert [r["correct"] for r in rows] == CORRECT
    assert [r["answer"] == r["reference"] for r in rows] == CORRECT
    assert rows[2]["answer"] == "purple" and rows[2]["completion"].startswith("<think>")
    assert [r["subset"] for r in rows] == SUBSETS
    assert metrics["vqa_accuracy"] == pytest.approx(0.75)
    assert metrics["vqa_accuracy/bias_aligned"] == pytest.approx(0.5)  # rows 0 (yes), 2 (no)
    assert metrics["vqa_accuracy/bias_conflicting"] == pytest.approx(1.0)
    assert metrics["n_samples"] == 4 and metrics["n_correct"] == 3


def test_saliency_table_one_row_per_sample_and_method(evaluated):
    out, _ = evaluated
    rows = pq.read_table(out / "saliency.parquet").to_pylist()
    columns = ["del_5", "del_15", "del_30", "ins_30", "del_auc", "ins_auc"]
    assert faithfulness_columns(FaithfulnessSection()) == columns
    assert list(rows[0]) == [
        "sample_id",
        "method",
        "subset",
        "correct",
        "has_map",
        "reason",
        "alignment",
        "nss",
        "spearman",
        "occ_pearson",
        "occ_spearman",
        *columns,
    ]
    ids = list(dict.fromkeys(r["sample_id"] for r in rows))
    assert len(rows) == 4 * len(METHODS)
    assert [(r["sample_id"], r["method"]) for r in rows] == [(s, m) for s in ids for m in METHODS]
    for r in rows:
        k = ids.index(r["sample_id"])
        assert r["correct"] == CORRECT[k] and r["subset"] == SUBSETS[k]
        assert r["has_map"] == (r["reason"] is None)
        assert r["has_map"] or r["method"] == "cot_bottleneck"  # may sum to 0 on a random model
        assert r["occ_pearson"] is r["occ_spearman"] is None  # occlusion did not run
        if not r["has_map"]:
            assert r["alignment"] is r["nss"] is r["spearman"] is r["del_auc"] is None
            continue
        if k == 2:
            assert r["alignment"] is None  # no box
        else:
            assert 0.0 <= r["alignment"] <= 1.0
        if k == 1:
            assert r["nss"] is None and r["spearman"] is None  # no human map
        else:
            assert math.isfinite(r["nss"]) and -1.0 <= r["spearman"] <= 1.0
    # faithfulness: two of the three CORRECT samples (0, 1, 3), never the wrong one (2), of
    # different subsets (a stratified subsample, not the first two)
    scored = {r["sample_id"] for r in rows if r["del_auc"] is not None}
    assert len(scored) == 2 and scored <= {ids[0], ids[1], ids[3]}
    assert len({SUBSETS[ids.index(i)] for i in scored}) == 2
    for r in rows:
        values = [r[c] for c in columns]
        if r["sample_id"] in scored and r["has_map"]:
            assert all(v is not None and v > 0 for v in values)
        else:
            assert all(v is None for v in values)


def test_random_maps_differ_between_samples(evaluated):
    """The random map is seeded per sample, not per position in a batch (batch_size 3)."""
    out, _ = evaluated
    maps = [
        r["map"] for r in pq.read_table(out / "maps.parquet").to_pylist() if r["method"] == "random"
    ]
    assert len(maps) == 2 and maps[0] != maps[1]


def test_curves_are_consistent(evaluated):
    out, _ = evaluated
    table = pq.read_table(out / "curves.parquet")
    assert table.schema.names == CURVES.names
    rows = table.to_pylist()
    saliency = pq.read_table(out / "saliency.parquet").to_pylist()
    fractions = [0.0, 0.05, 0.15, 0.3, 0.5, 1.0]
    assert curve_fractions(_config().evaluate.faithfulness) == fractions
    assert len(rows) == len(METHODS) * 2 * len(fractions)
    point = {(r["method"], r["kind"], r["fraction"]): r for r in rows}
    for method in METHODS:
        assert [r["fraction"] for r in rows if r["method"] == method][:6] == fractions
        # 0 % deleted / 100 % inserted: the original image itself, exactly 100
        for key in ((method, "deletion", 0.0), (method, "insertion", 1.0)):
            assert point[key]["score_mean"] == 100.0 and point[key]["score_std"] == 0.0
            assert point[key]["n"] == sum(
                r["del_auc"] is not None for r in saliency if r["method"] == method
            )
        # 100 % deleted == 0 % inserted == the baseline, the same for every method
        baseline = point[(method, "deletion", 1.0)]["score_mean"]
        assert point[(method, "insertion", 0.0)]["score_mean"] == baseline
        assert baseline == point[(METHODS[0], "deletion", 1.0)]["score_mean"]
    # the blurred image changes the model's log-prob (the scoring sees the image)
    assert point[(METHODS[0], "deletion", 1.0)]["score_mean"] != 100.0


def test_summary_maps_and_metrics(evaluated):
    out, metrics = evaluated
    saliency = pq.read_table(out / "saliency.parquet").to_pylist()
    summary = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["method"] for r in summary] == METHODS
    for row in summary:
        mine = [r for r in saliency if r["method"] == row["method"]]
        assert row["n_maps"] == sum(r["has_map"] for r in mine)
        assert row["n_faithfulness"] == sum(r["del_auc"] is not None for r in mine)
        if row["method"] != "cot_bottleneck":
            assert row["n_maps"] == 4 and row["n_faithfulness"] == 2
        aligned = [r["alignment"] for r in mine if r["alignment"] is not None]
        assert len(aligned) == sum(r["has_map"] for r in mine[:2] + mine[3:])  # sample 2: no box
        assert row["alignment_mean"] == pytest.approx(np.mean(aligned))
        assert row["del_30"] == pytest.approx(np.mean([r["del_30"] for r in mine if r["del_30"]]))
        for name in ("alignment", "nss", "spearman", "del_5", "ins_30", "del_auc", "ins_auc"):
            summary_key = f"{name}_mean" if name in ("alignment", "nss", "spearman") else name
            assert metrics[f"{row['method']}/{name}"] == pytest.approx(row[summary_key])
    maps = pq.read_table(out / "maps.parquet")
    assert maps.schema.names == MAP_SCHEMA.names
    gallery = maps.to_pylist()
    assert len(gallery) == 2 * len(METHODS)
    assert all(r["image_width"] == 112 and r["map"] and r["completion"] for r in gallery)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == pytest.approx(metrics)
    assert all(math.isfinite(v) for v in on_disk.values())


FULL_METHODS = ["logit_decomposition", "cot_bottleneck", "tmme", "occlusion", "random"]
WEIGHTINGS = ["uniform", "answer", "evidence", "occlusion"]


@pytest.fixture(scope="module")
def evaluated_full(inputs, tmp_path_factory):
    """Occlusion, every token weighting, the CoT share's two methods; no deletion."""
    out = tmp_path_factory.mktemp("evaluated-full")
    config = _config(
        methods=FULL_METHODS,
        token_weightings=WEIGHTINGS,
        faithfulness={"enabled": False},
        occlusion={"cell_size": 2},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_common, "greedy_answers", fake_generation)
        metrics = run_evaluate_saliency(config, inputs / "model", inputs / "data", out)
    return out, metrics


def test_weighting_variants_and_occlusion_agreement(evaluated_full):
    out, metrics = evaluated_full
    rows = pq.read_table(out / "saliency.parquet").to_pylist()
    per_token = [m for m in FULL_METHODS if m != "random"]
    names = FULL_METHODS + [f"{m}.{w}" for w in WEIGHTINGS[1:] for m in per_token]
    ids = list(dict.fromkeys(r["sample_id"] for r in rows))
    assert [(r["sample_id"], r["method"]) for r in rows] == [(i, n) for i in ids for n in names]
    summary = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["method"] for r in summary] == names
    by_key = {(r["sample_id"], r["method"]): r for r in rows}
    for sample_id in ids:
        reference = by_key[(sample_id, "occlusion")]
        if reference["has_map"]:
            assert reference["occ_pearson"] == pytest.approx(1.0)
            assert reference["occ_spearman"] == pytest.approx(1.0)
        for name in names:
            r = by_key[(sample_id, name)]
            if not (r["has_map"] and reference["has_map"]):
                assert r["occ_pearson"] is None
            elif r["occ_pearson"] is not None:
                assert -1.0 <= r["occ_pearson"] <= 1.0 and -1.0 <= r["occ_spearman"] <= 1.0
    tmme = next(r for r in summary if r["method"] == "tmme")
    if tmme["occ_pearson_mean"] is not None:
        assert metrics["tmme/occ_pearson"] == pytest.approx(tmme["occ_pearson_mean"])


@pytest.mark.parametrize("variants", [True, False])
def test_faithfulness_of_the_weighting_variants_is_optional(inputs, tmp_path, variants):
    config = _config(
        methods=["raw_attention"],
        token_weightings=["uniform", "answer"],
        faithfulness={"curve_steps": 2, "max_samples": 2, "variants": variants},
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_common, "greedy_answers", fake_generation)
        run_evaluate_saliency(config, inputs / "model", inputs / "data", tmp_path)
    summary = {r["method"]: r for r in pq.read_table(tmp_path / "summary.parquet").to_pylist()}
    assert summary["raw_attention"]["n_faithfulness"] == 2
    assert summary["raw_attention.answer"]["n_faithfulness"] == (2 if variants else 0)
    assert summary["raw_attention.answer"]["n_maps"] == 4


def test_tokens_table_has_every_token_visual_dependence(evaluated_full):
    out, _ = evaluated_full
    tokens = pq.read_table(out / "tokens.parquet")
    assert tokens.schema == saliency_stage.TOKENS
    rows = tokens.to_pylist()
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    # occlusion scores the completions that are right, like deletion
    assert {r["sample_id"] for r in rows} == {p["sample_id"] for p in predictions if p["correct"]}
    for sample_id in {r["sample_id"] for r in rows}:
        mine = [r for r in rows if r["sample_id"] == sample_id]
        assert [r["index"] for r in mine] == list(range(len(mine)))
        # "other": the tags' tokens, in neither the thought nor the answer
        assert (
            {"thought", "answer"} <= {r["segment"] for r in mine} <= {"thought", "answer", "other"}
        )
        assert mine[-1]["segment"] == "answer"  # the completion ends with its answer
        assert all(0 <= r["best_cell"] < 16 for r in mine)  # the 4 x 4 grid of 112 px
        assert any(r["visual_dependence"] != 0.0 for r in mine)


def test_thought_faithfulness_in_predictions_and_metrics(evaluated_full):
    """The fake model's thought is the reference's (every claim true); its answer is the
    thought's colour where CORRECT, "purple" (another colour) where not."""
    out, metrics = evaluated_full
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    for p, correct in zip(predictions, CORRECT, strict=True):
        assert p["thought_location"] and p["thought_shape"] and p["thought_color"]
        assert p["answer_follows_thought"] == correct
        assert p["cot_share"] is None or 0.0 <= p["cot_share"] <= 1.0
    assert metrics["thought/location"] == metrics["thought/color"] == 1.0
    assert metrics["thought/answer_follows"] == pytest.approx(np.mean(CORRECT))
    assert metrics["thought/n_checked"] == 4
    # per subset: sample 1 (bias_conflicting) is right; of the two bias_aligned, one is not
    assert metrics["thought/answer_follows/bias_conflicting"] == 1.0
    assert metrics["thought/answer_follows/bias_aligned"] == 0.5
    shares = [p["cot_share"] for p in predictions if p["cot_share"] is not None]
    assert shares and metrics["thought/cot_share"] == pytest.approx(np.mean(shares))


def test_completion_logprobs_batched_equals_one_by_one(inputs):
    loaded = load_model(inputs / "model")
    row = load_samples(inputs / "data", "test", ("vqa",)).to_pylist()[0]
    image = np.asarray(decode_image(row["image_bytes"]))
    images = [Image.fromarray(image), Image.fromarray(255 - image), Image.fromarray(image // 2)]
    args = (loaded.model, loaded.processor, loaded.adapter)
    batched = completion_logprobs(*args, images, row["question"], row["cot"])
    single = [completion_logprobs(*args, [im], row["question"], row["cot"])[0] for im in images]
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    assert all(v < 0 for v in batched) and len(set(batched)) == 3  # the image matters
    # reference: the full model's logits at every position, completion tokens picked by hand
    encoded = loaded.adapter.encode(
        loaded.processor, images[:1], [row["question"]], [row["cot"]], add_eos=False
    )
    start, end = encoded.completion_span(0)
    with torch.no_grad():
        logits = loaded.model(**encoded.inputs).logits[0].float()
    ids = encoded.inputs["input_ids"][0]
    expected = torch.log_softmax(logits[start - 1 : end - 1], -1)[
        torch.arange(end - start), ids[start:end]
    ]
    assert end - start == len(
        loaded.processor.tokenizer(row["cot"], add_special_tokens=False)["input_ids"]
    )
    assert batched[0] == pytest.approx(float(expected.mean()), abs=1e-5)


def _run(args) -> int:
    return args.func(args)


def _args(inputs, out, *extra, **evaluate):
    section = {
        "evaluate": {
            "max_samples": 2,
            "batch_size": 2,
            "max_new_tokens": 6,
            "methods": ["random", "raw_attention"],
            "gallery_samples": 1,
            "faithfulness": {"curve_steps": 2},
            **evaluate,
        },
        "model": {"name": "tiny", "family": "qwen2_5_vl"},
    }
    return parse_args(
        [
            "evaluate-saliency", "--model-dir", str(inputs / "model"),
            "--data", str(inputs / "data"),
            "--out", str(out),
            "--results-dir", str(inputs / "results"),
            "--config-json", json.dumps(section),
            "--tag", "snakemake.rule=evaluate_saliency",
            "--param", "checkpoint=sft",
            *extra,
        ]
    )  # fmt: skip


def test_stage_logs_a_finished_run(inputs, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = inputs / "results" / "evaluate" / "tiny" / "sft"
    assert _run(_args(inputs, out)) == 0  # real greedy generation
    assert "evaluate_saliency: 2 samples" in capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).is_file()
    record = json.loads((out / "run.json").read_text())
    assert (
        record["tracking_uri"].startswith("sqlite:///") and record["stage"] == "evaluate_saliency"
    )
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["snakemake.rule"] == "evaluate_saliency"
    assert run.data.params["checkpoint"] == "sft" and run.data.tags["lookright.checkpoint"] == "sft"
    assert run.data.params["evaluate.max_samples"] == "2"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 2 and 0.0 <= metrics["vqa_accuracy"] <= 1.0
    assert "random/alignment" in metrics
    # thought faithfulness reaches MLflow (a random model's completion has no thought: 0)
    assert metrics["thought/n_checked"] == 2 and metrics["thought/location"] == 0.0
    for key, value in metrics.items():  # MLflow keys: '/' becomes '_' (tracking._safe_key)
        assert run.data.metrics[_safe_key(key)] == pytest.approx(value)
    assert {a.path for a in client.list_artifacts(record["run_id"])} >= set(OUTPUTS)
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(predictions) == 2 and all(isinstance(p["completion"], str) for p in predictions)


def test_injected_failure_leaves_a_failed_run(inputs, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = inputs / "results" / "evaluate" / "failing"
    with pytest.raises(RuntimeError, match="failing on purpose"):
        _run(_args(inputs, out, "--fail-for-test"))
    assert not (out / "run.json").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{inputs / 'results' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("lookright").experiment_id],
        filter_string="tags.`lookright.stages.base` = 'evaluate_saliency'",
    )
    assert "FAILED" in {r.info.status for r in runs}


@pytest.mark.parametrize(
    ("evaluate", "message"),
    [
        ({"methods": ["random", "saliency_r2"]}, r"evaluate\.methods: unknown"),
        ({"faithfulness": {"baseline": "noise"}}, r"evaluate\.faithfulness\.baseline"),
        ({"faithfulness": {"curve_steps": 1}}, r"evaluate\.faithfulness\.curve_steps"),
        ({"faithfulness": {"deletion_fractions": [0.0]}}, r"deletion_fractions"),
        ({"split": "train"}, r"evaluate\.split='train': no VQA samples"),
        ({"token_weightings": ["uniform", "entropy"]}, r"evaluate\.token_weightings: unknown"),
        ({"token_weightings": ["evidence"]}, r"'evidence' reads the 'logit_decomposition'"),
        ({"token_weightings": ["occlusion"]}, r"add 'occlusion' to evaluate\.methods"),
        ({"occlusion": {"cell_size": 0}}, r"evaluate\.occlusion\.cell_size"),
    ],
)
def test_config_errors_name_the_key(inputs, tmp_path, evaluate, message):
    with pytest.raises(ConfigError, match=message):
        _run(_args(inputs, tmp_path / "out", **evaluate))


def test_missing_inputs_are_named(inputs, tmp_path):
    args = _args(inputs, tmp_path / "out")
    args.model_dir = tmp_path / "no-model"
    with pytest.raises(FileNotFoundError, match=r"no-model: no config\.json"):
        args.func(args)
    with pytest.raises(FileNotFoundError, match=r"no samples\.parquet"):
        run_evaluate_saliency(_config(), inputs / "model", tmp_path / "empty", tmp_path / "out")


def test_without_faithfulness_no_del_ins_columns_and_empty_curves(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(train_common, "greedy_answers", fake_generation)
    cfg = _config(methods=["random"], gallery_samples=0, faithfulness={"enabled": False})
    metrics = run_evaluate_saliency(cfg, inputs / "model", inputs / "data", tmp_path)
    saliency = pq.read_table(tmp_path / "saliency.parquet")
    assert saliency.num_rows == 4 and "del_5" not in saliency.schema.names
    assert pq.read_table(tmp_path / "curves.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "maps.parquet").num_rows == 0
    summary = pq.read_table(tmp_path / "summary.parquet").to_pylist()
    assert summary[0]["n_faithfulness"] == 0 and "del_auc" not in summary[0]
    assert metrics["n_faithfulness_samples"] == 0 and "random/del_auc" not in metrics
    assert "random/alignment" in metrics
