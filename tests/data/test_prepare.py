"""Stage ``prepare_data``: the shapes source, real readers, the rejection guard, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from lookright.cli import main
from lookright.config import ConfigError, load_stage_config
from lookright.data.prepare import READERS, prepare
from lookright.data.schema import IMAGES, REJECTED, SAMPLES
from lookright.data.shapes import generate
from lookright.data.validate import TooManyRejected
from lookright.io import atomic_write_table, read_table, rows_to_table
from lookright.stages.prepare_data import PrepareDataConfig

REAL = Path(__file__).parents[1] / "fixtures" / "real"
IMG = REAL / "images"
POPE = {
    "reader": "pope",
    "files": [
        str(REAL / "pope" / f"coco_pope_{s}.json") for s in ("random", "popular", "adversarial")
    ],
    "image_root": str(IMG),
}
COCO = {
    "reader": "coco",
    "captions_json": str(REAL / "coco" / "annotations" / "captions_val2014.json"),
    "instances_json": str(REAL / "coco" / "annotations" / "instances_val2014.json"),
    "image_root": str(IMG),
}
SHAPES = {"seed": 1, "n_train": 4, "n_val": 2, "n_test": 2}


def _section(**data):
    return load_stage_config(PrepareDataConfig, {"data": data}).data


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


def test_shapes_source_writes_all_tables(tmp_path):
    out = tmp_path / "data"
    summary = prepare(_section(shapes=SHAPES), out)
    assert sorted(p.name for p in out.iterdir()) == [
        "images.parquet",
        "rejected.parquet",
        "samples.parquet",
        "summary.json",
    ]
    images = read_table(out / "images.parquet", IMAGES)
    samples = read_table(out / "samples.parquet", SAMPLES)
    rejected = read_table(out / "rejected.parquet", REJECTED)
    assert images.schema.equals(IMAGES) and samples.schema.equals(SAMPLES)
    assert rejected.num_rows == 0 and rejected.schema.equals(REJECTED)

    expected_images, expected_samples = generate(_section(shapes=SHAPES).shapes)
    assert images.column("image_id").to_pylist() == [r["image_id"] for r in expected_images]
    assert images.column("image_bytes").to_pylist() == [r["image_bytes"] for r in expected_images]
    assert samples.column("sample_id").to_pylist() == [s["sample_id"] for s in expected_samples]

    n_objects = sum(s["task"] == "vqa" for s in expected_samples)  # one question per object
    per_split = {"train": 4, "val": 2, "test": 2}
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 8
    assert summary["image_bytes"] == sum(len(r["image_bytes"]) for r in expected_images)
    assert all(r == ["sft", "rl", "eval"] for r in samples.column("roles").to_pylist())
    assert summary["n_samples"] == n_objects + 8 * 7  # per image: 6 POPE + 1 caption
    assert summary["n_rejected"] == summary["n_rejected_invalid"] == 0
    assert summary["rejected_by_reason"] == {}
    by_task = summary["samples_by_split_task"]
    for split, n in per_split.items():
        assert by_task[f"{split}/pope"] == 6 * n and by_task[f"{split}/caption"] == n
    assert sum(by_task.values()) == summary["n_samples"]
    assert _leftovers(out) == []


def test_image_size_not_multiple_of_28_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="image_size=100: must be a multiple of 28"):
        prepare(_section(shapes={**SHAPES, "image_size": 100}), tmp_path / "data")
    assert not (tmp_path / "data" / "images.parquet").exists()


def test_real_sources_within_the_limit(tmp_path):
    out = tmp_path / "data"
    summary = prepare(_section(source="real", max_rejected_fraction=0.7, real=[POPE, COCO]), out)
    # fixtures: POPE 5 kept / 4 rejected, COCO 3 kept / 11 rejected (see test_readers.py);
    # both read the same three image files: stored once
    assert (summary["n_samples"], summary["n_rejected"], summary["n_images"]) == (8, 15, 3)
    assert summary["n_rejected_invalid"] == 15 and summary["n_rejected_filtered"] == 0
    assert summary["samples_by_split_task"] == {"test/caption": 3, "test/pope": 5}
    samples = read_table(out / "samples.parquet", SAMPLES)
    assert sorted(set(samples.column("task").to_pylist())) == ["caption", "pope"]
    rejected = read_table(out / "rejected.parquet", REJECTED).to_pylist()
    assert len(rejected) == 15
    assert {Path(r["source_file"]).name for r in rejected} >= {
        "coco_pope_random.json",
        "captions_val2014.json",
    }
    assert "label 'maybe' is not yes/no" in {r["reason"] for r in rejected}
    assert sum(summary["rejected_by_reason"].values()) == 15
    assert _leftovers(out) == []


def test_too_many_rejected_fails_but_keeps_the_rejected_rows(tmp_path):
    out, kept = tmp_path / "data", tmp_path / "logs" / "prepare_data.rejected.parquet"
    section = _section(source="real", max_rejected_fraction=0.05, real=[POPE])
    with pytest.raises(TooManyRejected) as caught:
        prepare(section, out, keep_rejected=kept)
    message = str(caught.value)
    assert "rejected 4 of 9 input rows (44.4%; kept 5)" in message
    assert "max_rejected_fraction = 0.05" in message
    assert str(out / "rejected.parquet") in message
    assert f"{kept} (kept when the job fails)" in message
    # nothing lost: every rejected row and its reason was written before failing, also at a
    # path that is not an output of the rule (Snakemake deletes a failed job's outputs)
    for path in (out / "rejected.parquet", kept):
        rejected = read_table(path, REJECTED).to_pylist()
        assert len(rejected) == 4
        reasons = {(Path(r["source_file"]).name, r["source_row"]): r["reason"] for r in rejected}
        assert reasons[("coco_pope_random.json", 2)] == "label 'maybe' is not yes/no"
        assert reasons[("coco_pope_adversarial.json", 1)] == "missing field 'label'"
        assert all(json.loads(r["record"]) is not None for r in rejected)
    # ... and no partial dataset that a downstream stage could pick up
    assert sorted(p.name for p in out.iterdir()) == ["rejected.parquet"]
    # a later successful run removes the stale copy
    prepare(
        _section(source="real", max_rejected_fraction=0.5, real=[POPE]), out, keep_rejected=kept
    )
    assert not kept.exists()


def test_too_many_rejected_is_an_artifact_of_the_failed_mlflow_run(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    out, kept = tmp_path / "data", tmp_path / "logs" / "rejected.parquet"
    cfg = {"data": {"source": "real", "max_rejected_fraction": 0.05, "real": [POPE]}}
    argv = ["prepare-data", "--out", str(out), "--results-dir", str(tmp_path)]
    argv += ["--config-json", json.dumps(cfg), "--keep-rejected", str(kept)]
    assert main(argv) == 1
    error = capsys.readouterr().err
    client = MlflowClient(f"sqlite:///{tmp_path.resolve()}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("lookright").experiment_id])
    assert run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["rejected.parquet"]
    artifact = client.download_artifacts(run.info.run_id, "rejected.parquet", str(tmp_path))
    assert read_table(artifact, REJECTED).num_rows == 4
    assert f"MLflow run {run.info.run_id}" in error and str(kept) in error


def test_images_are_stored_once_with_their_original_bytes(tmp_path):
    hat = {
        "reader": "vqa_hat",
        "maps_dir": str(REAL / "vqa_hat" / "maps"),
        "questions": str(REAL / "vqa_hat" / "questions.json"),
        "image_root": str(IMG),
    }
    out = tmp_path / "data"
    prepare(_section(source="real", max_rejected_fraction=0.9, real=[POPE, COCO, hat]), out)
    images = read_table(out / "images.parquet", IMAGES).to_pylist()
    files = {p.name: p.read_bytes() for p in IMG.iterdir() if p.name.startswith("COCO_val")}
    assert len(images) == len(files) == 3  # used by POPE, COCO and VQA-HAT: stored once
    assert {r["image_bytes"] for r in images} == set(files.values())  # JPEG stays JPEG
    assert {r["image_format"] for r in images} == {"JPEG", "PNG"}
    samples = read_table(out / "samples.parquet", SAMPLES)
    assert set(samples.column("image_id").to_pylist()) == {r["image_id"] for r in images}


def test_streaming_in_small_batches_gives_the_same_tables(tmp_path):
    from lookright.data.readers import read_coco, read_pope
    from lookright.data.store import ParquetSink

    sink = ParquetSink(tmp_path / "data", batch_rows=2)
    read_pope(POPE["files"], IMG, sink=sink)
    read_coco(COCO["captions_json"], COCO["instances_json"], IMG, sink=sink)
    sink.finish()
    memory = read_pope(POPE["files"], IMG).extend(
        read_coco(COCO["captions_json"], COCO["instances_json"], IMG)
    )
    for name, schema, rows in (
        ("images", IMAGES, memory.images),
        ("samples", SAMPLES, memory.samples),
        ("rejected", REJECTED, memory.rejected),
    ):
        path = tmp_path / "data" / f"{name}.parquet"
        assert read_table(path, schema).to_pylist() == rows_to_table(rows, schema).to_pylist()
        assert pq.ParquetFile(path).num_row_groups == -(-len(rows) // 2)  # bounded batches
    assert _leftovers(tmp_path / "data") == []


SALIENCY = {
    "reader": "saliency_r1",
    "source": str(REAL / "saliency_r1" / "train.parquet"),
    "holdout": 0,
}
LLAVA = {
    "reader": "llava_conversations",
    "json_path": str(REAL / "llava" / "sft.json"),
    "image_root": str(IMG),
}


def _samples(out: Path) -> list[dict]:
    return read_table(out / "samples.parquet", SAMPLES).to_pylist()


def test_roles_come_from_the_reader_entry(tmp_path):
    real = [SALIENCY, LLAVA, POPE, {**COCO, "roles": ["eval", "sft"]}]
    summary = prepare(_section(source="real", max_rejected_fraction=0.9, real=real), tmp_path / "d")
    roles = {s["source"]: s["roles"] for s in _samples(tmp_path / "d")}
    assert roles == {
        "saliency-r1-8k": ["rl", "eval"],  # reader defaults
        "sft-cold-start": ["sft"],
        "pope": ["eval"],
        "coco": ["eval", "sft"],  # set in the entry
    }
    assert summary["samples_by_role_split"]["rl/train"] == 6
    with pytest.raises(ConfigError, match=r"data.real\[0\] \(pope\): .*roles \['judge'\]"):
        prepare(_section(source="real", real=[{**POPE, "roles": ["judge"]}]), tmp_path / "e")


def test_val_split_carved_from_an_entry(tmp_path):
    real = [{**SALIENCY, "val": 2, "val_seed": 3}, {**LLAVA, "val": 0.5}]
    section = _section(source="real", max_rejected_fraction=0.9, real=real)
    summary = prepare(section, tmp_path / "a")
    splits = {s["sample_id"]: s["split"] for s in _samples(tmp_path / "a")}
    sal = [k for k, v in splits.items() if k.startswith("saliency") and v == "val"]
    assert len(sal) == 2 and summary["samples_by_source_split"]["saliency-r1-8k/val"] == 2
    # 3 cold-start samples on 2 images: a1 and a3 share one, and move together
    llava = {k: v for k, v in splits.items() if k.startswith("sft-cold-start")}
    assert llava["sft-cold-start-a1"] == llava["sft-cold-start-a3"]
    assert sorted(llava.values()).count("val") in (1, 2)
    prepare(section, tmp_path / "b")  # deterministic by seed ...
    assert {s["sample_id"]: s["split"] for s in _samples(tmp_path / "b")} == splits
    chosen = set()
    for seed in range(6):  # ... and the seed chooses
        other = [{**SALIENCY, "val": 2, "val_seed": seed}]
        prepare(
            _section(source="real", max_rejected_fraction=0.9, real=other), tmp_path / f"s{seed}"
        )
        chosen.add(
            tuple(s["sample_id"] for s in _samples(tmp_path / f"s{seed}") if s["split"] == "val")
        )
    assert len(chosen) > 1
    with pytest.raises(ConfigError, match=r"val=50: the entry has only 6 train samples"):
        prepare(_section(source="real", real=[{**SALIENCY, "val": 50}]), tmp_path / "c")
    with pytest.raises(ConfigError, match=r"val=1.5: a fraction must lie in \(0, 1\)"):
        prepare(_section(source="real", real=[{**SALIENCY, "val": 1.5}]), tmp_path / "d")
    assert not (tmp_path / "c" / "samples.parquet").exists()


def test_two_entries_with_one_source_name_need_distinct_ids(tmp_path):
    with pytest.raises(ConfigError, match="duplicate sample id 'pope-random-1'.*source_name"):
        prepare(_section(source="real", real=[POPE, POPE]), tmp_path / "a")


def test_unknown_reader_lists_valid_names(tmp_path):
    section = _section(source="real", real=[POPE, {"reader": "imagenet", "root": "/x"}])
    with pytest.raises(ConfigError) as caught:
        prepare(section, tmp_path / "data")
    assert "data.real[1].reader='imagenet'" in str(caught.value)
    assert str(sorted(READERS)) in str(caught.value)
    assert sorted(READERS) == ["coco", "llava_conversations", "pope", "saliency_r1", "vqa_hat"]


def test_bad_reader_arguments_and_sources_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"data.real\[0\] \(pope\): .*'imgs'"):
        prepare(_section(source="real", real=[{**POPE, "imgs": "x"}]), tmp_path / "a")
    with pytest.raises(ConfigError, match="data.real lists no reader entries"):
        prepare(_section(source="real"), tmp_path / "b")
    with pytest.raises(ConfigError, match="data.source='web': valid values are 'shapes', 'real'"):
        prepare(_section(source="web"), tmp_path / "c")


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path):
    table = pa.table({"x": [1, 2]})
    target = tmp_path / "t.parquet"
    atomic_write_table(table, target)
    atomic_write_table(pa.table({"x": [3]}), target)  # replaces
    assert read_table(target).column("x").to_pylist() == [3]
    blocked = tmp_path / "blocked.parquet"
    (blocked / "inside").mkdir(parents=True)  # a directory in the way: the rename fails
    with pytest.raises(OSError):
        atomic_write_table(table, blocked)
    assert blocked.is_dir() and (blocked / "inside").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked.parquet", "t.parquet"]


def test_vqa_hat_entry_reads_the_train_split_by_image_template(tmp_path):
    """The image name of the VQA v1 files was hard-coded to COCO_val2014_%012d.jpg."""
    train2014 = tmp_path / "train2014"
    train2014.mkdir()
    image = (IMG / "COCO_val2014_000000000001.jpg").read_bytes()
    (train2014 / "COCO_train2014_000000000001.jpg").write_bytes(image)
    questions = {"questions": [{"question_id": 1001, "image_id": 1, "question": "Colour?"}]}
    answers = {"annotations": [{"question_id": 1001, "multiple_choice_answer": "red"}]}
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(answers))
    entry = {
        "reader": "vqa_hat",
        "maps_dir": str(REAL / "vqa_hat" / "maps"),
        "vqa_questions": str(tmp_path / "q.json"),
        "vqa_annotations": str(tmp_path / "a.json"),
        "image_template": "COCO_train2014_{image_id:012d}.jpg",
        "image_root": str(train2014),
        "split": "train",
    }
    summary = prepare(_section(source="real", real=[entry]), tmp_path / "data")
    assert summary["samples_by_split_task"] == {"train/vqa": 1} and summary["n_rejected"] == 0
    with pytest.raises(ConfigError, match="only a vqa_hat entry reading vqa_questions"):
        prepare(_section(source="real", real=[{**POPE, "image_template": "x"}]), tmp_path / "b")
