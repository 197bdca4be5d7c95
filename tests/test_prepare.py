"""Stage ``prepare_data``: the shapes source, real readers, the rejection guard, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from lookright.config import ConfigError, PrepareDataConfig, load_stage_config
from lookright.data.prepare import READERS, prepare
from lookright.data.schema import IMAGES, REJECTED, SAMPLES
from lookright.data.shapes import generate
from lookright.data.validate import TooManyRejected
from lookright.io import atomic_write_table, read_table

REAL = Path(__file__).parent / "fixtures" / "real"
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

    from lookright.data.prepare import shapes_config

    expected_images, expected_samples = generate(shapes_config(_section(shapes=SHAPES)))
    assert images.column("image_id").to_pylist() == [r["image_id"] for r in expected_images]
    assert images.column("image_png").to_pylist() == [r["image_png"] for r in expected_images]
    assert samples.column("sample_id").to_pylist() == [s["sample_id"] for s in expected_samples]

    n_objects = sum(len(r["objects"]) for r in expected_images)
    per_split = {"train": 4, "val": 2, "test": 2}
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["n_images"] == 8
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
    # fixtures: POPE 5 kept / 4 rejected, COCO 3 kept / 11 rejected (see test_readers.py)
    assert (summary["n_samples"], summary["n_rejected"], summary["n_images"]) == (8, 15, 6)
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
    out = tmp_path / "data"
    section = _section(source="real", max_rejected_fraction=0.05, real=[POPE])
    with pytest.raises(TooManyRejected) as caught:
        prepare(section, out)
    message = str(caught.value)
    assert "rejected 4 of 9 input rows (44.4%; kept 5)" in message
    assert "max_rejected_fraction = 0.05" in message
    assert str(out / "rejected.parquet") in message
    # nothing lost: every rejected row and its reason was written before failing
    rejected = read_table(out / "rejected.parquet", REJECTED).to_pylist()
    assert len(rejected) == 4
    reasons = {(Path(r["source_file"]).name, r["source_row"]): r["reason"] for r in rejected}
    assert reasons[("coco_pope_random.json", 2)] == "label 'maybe' is not yes/no"
    assert reasons[("coco_pope_adversarial.json", 1)] == "missing field 'label'"
    assert all(json.loads(r["record"]) is not None for r in rejected)
    # ... and no partial dataset that a downstream stage could pick up
    assert sorted(p.name for p in out.iterdir()) == ["rejected.parquet"]


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
