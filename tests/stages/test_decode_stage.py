"""The ``decode`` stage end to end on a tiny checkpoint: Parquet answers, metrics, MLflow run."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from lookright.cli import parse_args
from lookright.config import ConfigError
from lookright.data.schema import IMAGES, SAMPLES
from lookright.io import write_rows
from lookright.stages.decode import DECODED

SAMPLE_ROWS = [
    ("p1", "im0", "test", "pope", "Is there a star?", "yes", "random"),
    ("p2", "im1", "test", "pope", "Is there a circle in the image?", "no", "popular"),
    ("p3", "im0", "test", "pope", "Is there a cross?", "no", "adversarial"),
    ("c1", "im1", "test", "caption", "Describe the image.", "There is a red circle.", None),
    ("v1", "im0", "test", "vqa", "What color is the circle?", "red", None),  # not decoded
    ("t1", "im0", "train", "pope", "Is there a star?", "yes", "random"),  # not the split
]


@pytest.fixture(scope="module")
def stage_inputs(build_tiny, noise_images, tmp_path_factory):
    images = noise_images[:2]
    root = tmp_path_factory.mktemp("decode")
    model, processor, _ = build_tiny("qwen2_5_vl")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    data = root / "data"
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    image_rows = [
        {
            "image_id": f"im{k}",
            "image_bytes": png,
            "image_format": "PNG",
            "width": 112,
            "height": 112,
        }
        for k, png in enumerate(pngs)
    ]
    write_rows(image_rows, IMAGES, data / "images.parquet")
    write_rows([_sample(row) for row in SAMPLE_ROWS], SAMPLES, data / "samples.parquet")
    return root


def _sample(row: tuple) -> dict:
    names = ("sample_id", "image_id", "split", "task", "question", "answer", "pope_split")
    return {
        **dict(zip(names, row, strict=True)),
        "source": "pope" if row[3] == "pope" else "coco",
        "roles": ["eval"],
        "boxes": [],
        "objects": ["circle"],
        "object_boxes": [[0.1, 0.1, 0.4, 0.4]],
        "object_vocabulary": "shapes",
    }


def decode_main(args) -> int:
    return args.func(args)


def _args(root, strategy, out, **decode):
    section = {
        "decode": {"batch_size": 2, "max_new_tokens": {"pope": 3, "caption": 5}, **decode},
        "model": {"name": "tiny", "family": "qwen2_5_vl"},
    }
    return parse_args(
        [
            "decode", "--model-dir", str(root / "model"),
            "--data", str(root / "data"),
            "--strategy", strategy,
            "--out", str(out),
            "--results-dir", str(root / "results"),
            "--config-json", json.dumps(section),
            "--tag", "snakemake.rule=decode",
        ]
    )  # fmt: skip


def test_decode_stage_writes_answers_metrics_and_a_run(stage_inputs, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out = stage_inputs / "results" / "decode" / "tiny" / "sft" / "sgrs+locore"
    assert decode_main(_args(stage_inputs, "sgrs+locore", out)) == 0
    table = pq.read_table(out / "answers.parquet")
    assert table.schema.equals(DECODED)
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == ["p1", "p2", "p3", "c1"]  # test split, pope+caption
    assert [r["batch_index"] for r in rows] == [0, 0, 1, 2]  # batches never mix tasks
    for row in rows:
        assert row["strategy"] == "sgrs+locore" and row["model"] == "tiny"
        assert 1 <= row["n_tokens"] == len(row["token_ids"]) <= (3 if row["task"] == "pope" else 5)
        assert len(row["token_saliency"]) == len(row["sgrs_draws"]) == row["n_tokens"]
        assert all(s > 0 for s in row["token_saliency"])
        assert row["time_s"] == pytest.approx(row["batch_time_s"] / row["batch_size"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_samples"] == 4 and metrics["tokens_per_s"] > 0
    assert 0 <= metrics["pope_average_accuracy"] <= 1
    record = json.loads((out / "run.json").read_text())
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["lookright.strategy"] == "sgrs+locore"
    assert run.data.metrics["n_samples"] == 4
    assert {a.path for a in client.list_artifacts(record["run_id"])} >= {
        "answers.parquet",
        "metrics.json",
    }

    # sample-seeded random streams: another batch size, the same answers
    again = stage_inputs / "again"
    assert decode_main(_args(stage_inputs, "sgrs+locore", again, batch_size=3)) == 0
    rows_again = pq.read_table(again / "answers.parquet").to_pylist()
    assert [r["token_ids"] for r in rows_again] == [r["token_ids"] for r in rows]

    # beam search: no per-token saliency
    beam = stage_inputs / "beam"
    assert decode_main(_args(stage_inputs, "beam", beam, num_beams=2, tasks=["pope"])) == 0
    beam_rows = pq.read_table(beam / "answers.parquet").to_pylist()
    assert len(beam_rows) == 3 and all(r["token_saliency"] is None for r in beam_rows)


def test_decode_subsample_covers_every_pope_split(stage_inputs, tmp_path, monkeypatch):
    """decode.max_samples used to take the first N POPE rows by id: on real POPE data the
    "pope-adversarial-*" ids sort first, so the "average over splits" was one split."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "model_and_data"
    shutil.copytree(stage_inputs / "model", data / "model")
    (data / "data").mkdir()
    shutil.copy(stage_inputs / "data" / "images.parquet", data / "data" / "images.parquet")
    pope = [  # POPE's own ids: "pope-adversarial-*" sorts before "pope-popular-*", "pope-random-*"
        (f"pope-{split}-{k}", f"im{k % 2}", "test", "pope", "Is there a cross?", label, split)
        for split in ("random", "popular", "adversarial")
        for k, label in enumerate(("yes", "no", "yes", "no"))
    ]
    rows = [_sample(r) for r in pope]
    write_rows(rows, SAMPLES, data / "data" / "samples.parquet")
    out = tmp_path / "out"
    assert decode_main(_args(data, "greedy", out, max_samples=3, tasks=["pope"])) == 0
    decoded = pq.read_table(out / "answers.parquet").to_pylist()
    assert sorted(r["pope_split"] for r in decoded) == ["adversarial", "popular", "random"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [metrics[f"pope_{s}_n"] for s in ("random", "popular", "adversarial")] == [1, 1, 1]


def test_decode_stage_errors(stage_inputs):
    with pytest.raises(ConfigError, match=r"--strategy must be one of \['greedy'"):
        decode_main(_args(stage_inputs, "nucleus", stage_inputs / "x"))
    with pytest.raises(ConfigError, match=r"decode\.sgrs: top_k \(K\) must be an integer >= 1"):
        decode_main(_args(stage_inputs, "sgrs", stage_inputs / "y", sgrs={"top_k": 0}))
    args = _args(stage_inputs, "greedy", stage_inputs / "z")
    args.model_dir = stage_inputs / "missing"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        decode_main(args)


@pytest.mark.parametrize(("strategy", "folder"), [("sgrs", "sgrs"), ("locore", "locore")])
def test_custom_generate_folders_give_the_decode_stages_tokens(
    stage_inputs, tmp_path, monkeypatch, strategy, folder
):
    """``model.generate(custom_generate=lookright's folder)`` on each sample, alone and with
    its per-sample random stream, reproduces the stage's batched answers token for token."""
    from lookright.decoding import CUSTOM_GENERATE
    from lookright.decoding.strategies import sample_generator
    from lookright.models import load_model
    from lookright.train.datasets import decode_image

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / strategy
    assert decode_main(_args(stage_inputs, strategy, out, sgrs={"alpha": 0.9})) == 0
    answers = pq.read_table(out / "answers.parquet").to_pylist()
    loaded = load_model(stage_inputs / "model")
    model, processor, adapter = loaded.model.eval(), loaded.processor, loaded.adapter
    images = {
        r["image_id"]: r["image_bytes"]
        for r in pq.read_table(stage_inputs / "data" / "images.parquet").to_pylist()
    }
    limits = {"pope": 3, "caption": 5}
    for row in answers:
        inputs = adapter.encode(
            processor, [decode_image(images[row["image_id"]])], [row["question"]]
        )
        sequences = model.generate(
            **inputs.inputs,
            custom_generate=CUSTOM_GENERATE[folder],
            trust_remote_code=True,
            max_new_tokens=limits[row["task"]],
            alpha=0.9,
            generators=[sample_generator(0, row["sample_id"], model.device)],
            processor=processor,
            questions=[row["question"]],
        )
        new = sequences[0, inputs.inputs["input_ids"].shape[1] :].tolist()
        assert new[: len(row["token_ids"])] == row["token_ids"], row["sample_id"]
