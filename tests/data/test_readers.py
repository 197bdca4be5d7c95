"""Readers of real dataset formats on the tiny fixtures in tests/fixtures/real/.

The fixtures are made by tests/fixtures/make_real_fixtures.py (each bad row there is
annotated with the rejection reason it must produce).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookright.data.readers import (
    ReadResult,
    hashed_split,
    read_coco,
    read_llava_conversations,
    read_pope,
    read_saliency_r1,
    read_vqa_hat,
    reference_holdout,
    split_think,
    vqa_hat_question_ids,
    vqa_v1_questions,
)
from lookright.data.schema import IMAGES, REJECTED, SAMPLES
from lookright.data.validate import DataFileError, InvalidRecord, check_rejection_rate
from lookright.io import read_table, rows_to_table, write_rows

FIX = Path(__file__).parents[1] / "fixtures"
REAL = FIX / "real"
IMG = REAL / "images"
NOT_JSON = REAL / "bad" / "not_json.json"
POPE_FILES = [REAL / "pope" / f"coco_pope_{s}.json" for s in ("random", "popular", "adversarial")]
CAPTIONS = REAL / "coco" / "annotations" / "captions_val2014.json"
IMG1_NAME = "COCO_val2014_000000000001.jpg"
INSTANCES = REAL / "coco" / "annotations" / "instances_val2014.json"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def saliency(hf_cache):
    return read_saliency_r1(REAL / "saliency_r1" / "train.parquet", holdout=2, cache_dir=hf_cache)


@pytest.fixture(scope="module")
def llava():
    return read_llava_conversations(REAL / "llava" / "sft.json", IMG)


@pytest.fixture(scope="module")
def pope():
    return read_pope(POPE_FILES, IMG)


@pytest.fixture(scope="module")
def coco():
    return read_coco(CAPTIONS, INSTANCES, IMG)


@pytest.fixture(scope="module")
def hat():
    return read_vqa_hat(REAL / "vqa_hat" / "maps", REAL / "vqa_hat" / "questions.json", IMG)


def _by(rows, key):
    return {r[key]: r for r in rows}


def _reasons(result: ReadResult) -> dict[int, str]:
    return {r["source_row"]: r["reason"] for r in result.rejected}


def _check_schema(result: ReadResult) -> None:
    """Exact columns, round-trip through Arrow, ids unique, samples point at images, images
    are stored as their original files under the SHA-256 of their bytes."""
    for rows, schema in ((result.images, IMAGES), (result.samples, SAMPLES)):
        for row in rows:
            assert set(row) == set(schema.names)
    for row in result.rejected:
        assert set(row) == set(REJECTED.names)
        json.loads(row["record"])
    images, samples, rejected = result.to_tables()
    assert images.num_rows == len(result.images) and images.schema.equals(IMAGES)
    assert samples.num_rows == len(result.samples) and samples.schema.equals(SAMPLES)
    assert rejected.num_rows == len(result.rejected) and rejected.schema.equals(REJECTED)
    assert rows_to_table(result.samples, SAMPLES).num_rows == len(result.samples)
    image_ids = [r["image_id"] for r in result.images]
    assert len(set(image_ids)) == len(image_ids)
    sample_ids = [r["sample_id"] for r in result.samples]
    assert len(set(sample_ids)) == len(sample_ids)
    assert {s["image_id"] for s in result.samples} <= set(image_ids)
    originals = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in IMG.iterdir()}
    for r in result.images:
        img = Image.open(io.BytesIO(r["image_bytes"]))
        assert img.format == r["image_format"] and img.size == (r["width"], r["height"])
        assert r["image_id"] == hashlib.sha256(r["image_bytes"]).hexdigest()
        if r["image_id"] in originals:  # a file on disk: its bytes, not a re-encoding
            assert r["image_bytes"] == originals[r["image_id"]].read_bytes()
    for s in result.samples:
        assert len(s["objects"]) == len(s["object_boxes"])
        assert s["split"] in ("train", "val", "test") and s["roles"]


@pytest.mark.parametrize("name", ["saliency", "llava", "pope", "coco", "hat"])
def test_schema_conformance(name, request):
    _check_schema(request.getfixturevalue(name))


def test_parquet_round_trip(tmp_path, coco, hat):
    for result in (coco, hat):
        for rows, schema, fname in (
            (result.images, IMAGES, "images"),
            (result.samples, SAMPLES, "samples"),
            (result.rejected, REJECTED, "rejected"),
        ):
            path = write_rows(rows, schema, tmp_path / f"{fname}.parquet")
            assert read_table(path, schema).num_rows == len(rows)


# --------------------------------------------------------------------------- think parsing


def test_split_think():
    assert split_think("<think>a</think> red ") == ("red", "<think>a</think> red")
    assert split_think("  red\n") == ("red", None)
    assert split_think("<think>a</think><answer>left</answer>")[0] == "left"
    with pytest.raises(InvalidRecord, match="'<think>' without '</think>'"):
        split_think("<think>abc")
    with pytest.raises(InvalidRecord, match="empty answer"):
        split_think("<think>abc</think>  ")


# --------------------------------------------------------------------------- saliency-r1


def test_saliency_rows_and_values(saliency):
    assert len(saliency.samples) == 6
    assert len(saliency.rejected) == 8
    s = _by(saliency.samples, "sample_id")
    first = s["saliency-r1-8k-00000-vqa"]
    assert first["task"] == "vqa" and first["question"] == "What color is the square?"
    assert first["answer"] == "red"
    assert first["cot"] == "<think>The square is on the left. It is red.</think>red"
    assert first["boxes"] == [[0.125, 0.125, 0.375, 0.75]]
    assert s["saliency-r1-8k-00001-vqa"]["answer"] == "circle"
    assert s["saliency-r1-8k-00001-vqa"]["cot"] is None
    assert s["saliency-r1-8k-00001-vqa"]["boxes"] == [[0.0, 0.0, 1.0, 1.0]]  # clamped
    assert s["saliency-r1-8k-00002-vqa"]["answer"] == "yes"
    assert s["saliency-r1-8k-00003-vqa"]["answer"] == "left"  # <answer> tags stripped
    assert s["saliency-r1-8k-00003-vqa"]["boxes"] == [pytest.approx([0.1, 0.1, 0.4, 0.9])]
    sizes = {r["image_id"]: (r["width"], r["height"]) for r in saliency.images}
    assert sizes[first["image_id"]] == (64, 48)
    assert sizes[s["saliency-r1-8k-00002-vqa"]["image_id"]] == (40, 80)
    assert first["image_id"] == s["saliency-r1-8k-00003-vqa"]["image_id"]  # same file, stored once
    assert len(saliency.images) == 3
    assert all(r["source"] == "saliency-r1-8k" for r in saliency.samples)
    assert all(r["roles"] == ["rl", "eval"] for r in saliency.samples)


def test_saliency_rejection_reasons(saliency):
    reasons = _reasons(saliency)
    assert reasons[6] == "bbox [0.2, 0.5, 0.1, 0.9]: x2 <= x1"
    assert reasons[7] == "missing field 'solution'"
    assert reasons[8].startswith("image 'corrupt.jpg': cannot be decoded (PIL: ")
    assert reasons[9].startswith("filtered: image 'big_600x520.png' is 600x520")
    assert "max_image_side=512" in reasons[9]
    assert reasons[10] == "bbox [0.1, 0.1, 1.5, 0.9]: coordinates outside [0, 1]"
    assert reasons[11].startswith("bbox '[0.1, 0.2, 0.3]': cannot parse")
    assert reasons[12] == "solution: '<think>' without '</think>'"
    assert reasons[13] == "bbox [nan, 0.1, 0.2, 0.3]: contains NaN or infinity"
    assert saliency.n_filtered == 1 and saliency.n_invalid == 7
    rec = json.loads(next(r for r in saliency.rejected if r["source_row"] == 8)["record"])
    assert rec["image"]["bytes"].endswith("bytes omitted>") and rec["problem"] == "corrupt"
    assert all(r["source_file"].endswith("train.parquet") for r in saliency.rejected)


def _rows(n_rows: int) -> list[dict]:
    """``n_rows`` valid saliency-r1 records (each its own image)."""
    return [
        {
            "image": Image.new("RGB", (20 + k, 10)),
            "problem": f"q{k}",
            "solution": "a",
            "bbox": "[0, 0, 0.5, 0.5]",
        }
        for k in range(n_rows)
    ]


def _held_out(result: ReadResult) -> set[int]:
    return {int(r["sample_id"].split("-")[-2]) for r in result.samples if r["split"] == "test"}


def test_saliency_holdout_is_the_reference_split_of_all_rows():
    """The reference (Saliency-R1's code) holds out train_test_split(test_size=100, seed=42)
    of the WHOLE dataset; lookright holds out the same rows, before validating them."""
    import datasets

    rows = _rows(40)
    rows[7]["bbox"] = "[0.9, 0, 0.1, 1]"  # invalid (x2 <= x1) in both runs below
    result = read_saliency_r1(rows, holdout=10, seed=42)
    reference = datasets.Dataset.from_dict({"row": list(range(40))})
    test_rows = set(reference.train_test_split(test_size=10, seed=42)["test"]["row"])
    assert _held_out(result) == test_rows - {7}
    assert reference_holdout(40, 10, 42) == test_rows
    # one more rejected row (not held out) changes nothing about which rows are held out
    train_row = min(set(range(40)) - test_rows - {7})
    rows[train_row]["solution"] = None
    again = read_saliency_r1(rows, holdout=10, seed=42)
    assert _held_out(again) == _held_out(result)
    assert {r["split"] for r in result.samples} == {"train", "test"}


def test_saliency_holdout_on_the_fixture(saliency):
    test_rows = reference_holdout(14, 2, 42)  # over all 14 rows, 8 of them rejected
    kept = {int(r["sample_id"].split("-")[-2]) for r in saliency.samples}
    assert _held_out(saliency) == test_rows & kept


def test_saliency_options(hf_cache):
    src = REAL / "saliency_r1" / "train.parquet"
    fixed = read_saliency_r1(src, split="val", max_image_side=None, cache_dir=hf_cache)
    assert {r["split"] for r in fixed.samples} == {"val"}
    assert len(fixed.samples) == 7 and fixed.n_filtered == 0  # big image kept
    by_fn = read_saliency_r1(src, split=hashed_split(test_fraction=0.5), cache_dir=hf_cache)
    assert {r["split"] for r in by_fn.samples} <= {"train", "test"}
    with pytest.raises(ValueError, match="holdout=100 but the dataset has only 14 rows"):
        read_saliency_r1(src, cache_dir=hf_cache)
    with pytest.raises(ValueError, match="not in"):
        read_saliency_r1(src, split=lambda _: "dev", cache_dir=hf_cache)


def test_saliency_other_sources(tmp_path, hf_cache):
    import datasets

    src = REAL / "saliency_r1" / "train.parquet"
    ds = datasets.load_dataset("parquet", data_files=str(src), split="train", cache_dir=hf_cache)
    ds.save_to_disk(str(tmp_path / "saved"))
    from_disk = read_saliency_r1(tmp_path / "saved", holdout=2)
    assert len(from_disk.samples) == 6 and len(from_disk.rejected) == 8
    from_ds = read_saliency_r1(ds, holdout=2)  # decoded Image feature: made lazy again
    assert [r["split"] for r in from_ds.samples] == [r["split"] for r in from_disk.samples]
    records = [
        {
            "image": Image.new("RGB", (30, 20)),
            "problem": "q",
            "solution": "a",
            "bbox": "[0, 0, 0.5, 0.5]",
        },
        {"image": Image.new("RGB", (30, 20)), "problem": "q", "bbox": "[0, 0, 0.5, 0.5]"},
    ]
    from_list = read_saliency_r1(records, holdout=0)
    assert from_list.images[0]["width"] == 30 and from_list.samples[0]["split"] == "train"
    assert _reasons(from_list) == {1: "missing field 'solution'"}
    assert "PIL image RGB 30x20" in from_list.rejected[0]["record"]


def test_saliency_jsonl_with_image_paths(hf_cache):
    res = read_saliency_r1(
        REAL / "saliency_r1" / "train.jsonl", holdout=1, image_root=IMG, cache_dir=hf_cache
    )
    assert len(res.samples) == 3 and len(res.rejected) == 1
    assert res.rejected[0]["source_row"] == 3
    assert res.rejected[0]["reason"].startswith(
        "image 'COCO_val2014_000000000004.jpg': file not found"
    )
    assert res.samples[0]["cot"] == "<think>red</think>red"
    _check_schema(res)


# --------------------------------------------------------------------------- LLaVA


def test_llava_rows_and_values(llava):
    assert len(llava.samples) == 3 and len(llava.images) == 2  # a1 and a3 share one image
    s = _by(llava.samples, "sample_id")
    a1 = s["sft-cold-start-a1"]
    assert a1["question"] == "What is shown?"
    assert a1["cot"] == "<think>I see a square.</think>A red square."
    assert a1["answer"] == "A red square."
    assert a1["image_id"] == s["sft-cold-start-a3"]["image_id"]
    no_id = s["sft-cold-start-sft-000001"]  # first pair only of a multi-turn record
    assert no_id["question"] == "What colour?" and no_id["answer"] == "Just an answer."
    assert no_id["cot"] is None and no_id["boxes"] == []
    assert {r["split"] for r in llava.samples} == {"train"}
    assert all(r["roles"] == ["sft"] for r in llava.samples)


def test_llava_rejection_reasons(llava):
    reasons = _reasons(llava)
    assert reasons[3].startswith("image 'COCO_val2014_000000000004.jpg': file not found (")
    assert reasons[4] == "no human turn followed by a gpt turn in 'conversations'"
    assert reasons[5].startswith("image 'corrupt.jpg': cannot be decoded (PIL: ")
    assert reasons[6] == "missing field 'conversations'"
    assert reasons[7] == "duplicate sample id 'sft-cold-start-a1'"
    assert reasons[8] == "record is a str, expected a JSON object"
    assert reasons[9].startswith("image 'truncated.png': cannot be decoded")
    assert len(reasons) == 7 and llava.n_invalid == 7


def test_mulberry_file_of_the_cold_start_is_read():
    """Vision-R1's Mulberry file ({images: [...], user/assistant turns}, ~198k of its 261k
    rows) used to be rejected whole with "missing field 'image'"."""
    res = read_llava_conversations(REAL / "llava" / "mulberry.json", IMG)
    s = _by(res.samples, "sample_id")
    assert sorted(s) == ["sft-cold-start-mulberry-000000", "sft-cold-start-mulberry-000005"]
    first = s["sft-cold-start-mulberry-000000"]
    assert first["question"] == "What is tall?" and first["answer"] == "it"
    assert first["cot"] == "<think>80 px.</think>it"
    assert s["sft-cold-start-mulberry-000005"]["question"] == "Colour?"
    reasons = _reasons(res)
    assert reasons == {
        1: "field 'images' holds 2 entries; exactly 1 is supported",
        2: "field 'images' holds 0 entries; exactly 1 is supported",
        3: "no human turn followed by a gpt turn in 'conversations'",
        4: "missing field 'image' (LLaVA-CoT) or 'images' (Mulberry)",
    }
    _check_schema(res)
    both = ReadResult().extend(read_llava_conversations(REAL / "llava" / "sft.json", IMG))
    both.extend(res)  # the two files of the cold start under one source name: distinct ids
    assert len(both.samples) == 5


# --------------------------------------------------------------------------- POPE


def test_pope_rows_and_values(pope):
    assert len(pope.samples) == 5 and len(pope.images) == 3  # one row per distinct image
    s = _by(pope.samples, "sample_id")
    assert s["pope-random-1"]["answer"] == "yes" and s["pope-random-2"]["answer"] == "no"
    assert s["pope-random-1"]["question"] == "Is there a dog in the image?"
    assert s["pope-random-1"]["image_id"] == s["pope-random-2"]["image_id"]
    assert s["pope-popular-2"]["image_id"] == s["pope-adversarial-1"]["image_id"]
    splits = {sid: r["pope_split"] for sid, r in s.items()}
    assert splits == {
        "pope-random-1": "random",
        "pope-random-2": "random",
        "pope-popular-1": "popular",
        "pope-popular-2": "popular",
        "pope-adversarial-1": "adversarial",
    }
    assert all(r["task"] == "pope" and r["split"] == "test" for r in pope.samples)


def test_pope_rejection_reasons(pope):
    by_file = {(Path(r["source_file"]).name, r["source_row"]): r["reason"] for r in pope.rejected}
    assert by_file[("coco_pope_random.json", 2)] == "label 'maybe' is not yes/no"
    assert by_file[("coco_pope_random.json", 3)].startswith("line is not valid JSON (")
    assert by_file[("coco_pope_random.json", 5)].startswith(
        "image 'COCO_val2014_000000000004.jpg': file not found"
    )
    assert by_file[("coco_pope_adversarial.json", 1)] == "missing field 'label'"
    assert len(by_file) == 4
    bad_line = next(r for r in pope.rejected if r["source_row"] == 3)
    assert json.loads(bad_line["record"]) == "{not json"


def test_pope_dict_keys_and_names(tmp_path):
    target = tmp_path / "anything.jsonl"
    target.write_text(POPE_FILES[1].read_text())
    res = read_pope({"adversarial": target}, IMG, split="val")
    assert {r["pope_split"] for r in res.samples} == {"adversarial"}
    assert {r["split"] for r in res.samples} == {"val"}
    with pytest.raises(ValueError, match="cannot tell the POPE split"):
        read_pope([target], IMG)
    with pytest.raises(ValueError, match="not one of"):
        read_pope({"easy": target}, IMG)


# --------------------------------------------------------------------------- COCO


def test_coco_rows_and_boxes_on_non_square_image(coco):
    assert len(coco.images) == 3 and len(coco.samples) == 3
    caps = _by(coco.samples, "sample_id")
    sizes = {r["image_id"]: (r["width"], r["height"]) for r in coco.images}
    one = caps["coco-1-caption"]  # on the 64 wide x 48 tall image
    assert sizes[one["image_id"]] == (64, 48)
    assert one["objects"] == ["dog", "person"]  # unique, sorted
    assert one["object_vocabulary"] == "coco"
    # dog [x=8, y=6, w=16, h=30] px: x / 64, y / 48
    assert one["object_boxes"][0] == [0.125, 0.125, 0.375, 0.75]
    # two persons -> one enclosing box
    assert one["object_boxes"][1] == [0.0, 0.0, 1.0, 1.0]
    three = caps["coco-3-caption"]  # 40 wide x 80 tall
    assert three["objects"] == ["cat"] and three["object_boxes"] == [[0.25, 0.25, 0.75, 0.75]]
    assert caps["coco-2-caption"]["objects"] == []
    assert one["task"] == "caption" and one["question"] == "Describe this image."
    assert one["answer"] == "A red square on a grey background."  # the first caption
    assert one["split"] == "test" and one["boxes"] == []


def test_coco_rejection_reasons(coco):
    reasons = {(Path(r["source_file"]).name, r["source_row"]): r["reason"] for r in coco.rejected}
    cap, inst = "captions_val2014.json", "instances_val2014.json"
    assert reasons[(cap, 3)].startswith("image 'COCO_val2014_000000000004.jpg': file not found")
    assert reasons[(cap, 4)].startswith("image 'corrupt.jpg': cannot be decoded")
    assert reasons[(cap, 5)] == (
        "image 'COCO_val2014_000000000002.png': decoded size 32x32 differs from the annotated 33x32"
    )
    assert reasons[(cap, 6)] == "no caption for image id 7"
    assert reasons[(cap, 7)] in (
        "image entry: field 'id' is 'x', expected an integer",
        "caption annotation: image_id 99 not in 'images'",
    )
    assert reasons[(cap, 8)] == "caption annotation: missing field 'caption'"
    assert reasons[(inst, 3)] == "instance annotation: category_id 99 not in 'categories'"
    assert "extends outside the 64x48 image" in reasons[(inst, 4)]
    assert "width or height <= 0" in reasons[(inst, 6)]
    assert reasons[(inst, 7)] == "instance annotation: image_id 99 not in 'images'"
    assert len(coco.rejected) == 11


def test_coco_options():
    first2 = read_coco(CAPTIONS, INSTANCES, IMG, max_images=2)
    assert [r["sample_id"] for r in first2.samples] == ["coco-1-caption", "coco-2-caption"]
    # not-selected images are not rejected; malformed/unknown-id rows still are
    assert not any("no caption" in r["reason"] for r in first2.rejected)
    sampled = read_coco(CAPTIONS, INSTANCES, IMG, max_images=2, seed=0)
    again = read_coco(CAPTIONS, INSTANCES, IMG, max_images=2, seed=0)
    assert len(sampled.samples) <= 2 and sampled.samples == again.samples
    inst = read_coco(CAPTIONS, INSTANCES, IMG, object_instances=True, split="val")
    one = _by(inst.samples, "sample_id")["coco-1-caption"]
    assert one["objects"] == ["dog", "person", "person"]
    assert one["object_boxes"][1:] == [[0.0, 0.0, 0.5, 0.25], [0.625, 0.5, 1.0, 1.0]]
    assert one["split"] == "val"
    no_inst = read_coco(CAPTIONS, None, IMG)
    assert all(r["objects"] == [] for r in no_inst.samples) and len(no_inst.samples) == 3
    assert {r["object_vocabulary"] for r in no_inst.samples} == {None}  # no ground truth


# --------------------------------------------------------------------------- VQA-HAT


def test_vqa_hat_average_of_annotators(hat):
    assert len(hat.samples) == 2 and len(hat.images) == 1  # both questions on one image
    s = _by(hat.samples, "sample_id")["vqa-hat-1001"]
    maps = REAL / "vqa_hat" / "maps"
    a = np.asarray(Image.open(maps / "1001_1.png"), dtype=np.float64) / 255.0
    b = np.asarray(Image.open(maps / "1001_2.png"), dtype=np.float64) / 255.0
    expected = ((a + b) / 2).astype(np.float32)
    assert (s["human_map_height"], s["human_map_width"]) == (6, 8)
    got = np.asarray(s["human_map"], dtype=np.float32).reshape(6, 8)
    assert np.array_equal(got, expected)
    raw = np.asarray(Image.open(maps / "1001_1.png")), np.asarray(Image.open(maps / "1001_2.png"))
    assert got[2, 5] == pytest.approx((int(raw[0][2, 5]) + int(raw[1][2, 5])) / 510, abs=1e-7)
    single = _by(hat.samples, "sample_id")["vqa-hat-1002"]
    assert len(single["human_map"]) == 16 and single["human_map_width"] == 4
    assert s["question"] == "What color is it?" and s["answer"] == "red" and s["task"] == "vqa"


def test_vqa_hat_rejection_reasons(hat):
    reasons = _reasons(hat)
    assert reasons[2].startswith("no attention maps '1003_<k>.png' in ")
    assert reasons[3] == "attention maps of question 1004 differ in size: [(4, 4), (6, 8)]"
    assert reasons[4].startswith("attention map '1005_1.png': cannot be decoded")
    assert reasons[5] == "missing field 'answer'"
    assert len(reasons) == 4


def test_vqa_hat_questions_as_list():
    questions = json.loads((REAL / "vqa_hat" / "questions.json").read_text())
    res = read_vqa_hat(REAL / "vqa_hat" / "maps", questions, IMG, split="train")
    assert len(res.samples) == 2 and res.samples[0]["split"] == "train"
    assert all(r["source_file"].endswith("maps") for r in res.rejected)


def test_vqa_v1_questions_feed_vqa_hat(tmp_path):
    maps = REAL / "vqa_hat" / "maps"
    assert vqa_hat_question_ids(maps) == {"1001", "1002", "1004", "1005"}
    (tmp_path / "q.json").write_text(
        json.dumps(
            {
                "questions": [
                    {"question_id": 1001, "image_id": 1, "question": "What color is it?"},
                    {"question_id": 1002, "image_id": 1, "question": "Is it big?"},
                    {"question_id": 7, "image_id": 1, "question": "Not in VQA-HAT?"},
                ]
            }
        )
    )
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "annotations": [
                    {"question_id": 1001, "image_id": 1, "multiple_choice_answer": "red"},
                    {"question_id": 7, "image_id": 1, "multiple_choice_answer": "x"},
                ]
            }
        )
    )
    qs = vqa_v1_questions(
        tmp_path / "q.json",
        tmp_path / "a.json",
        question_ids=vqa_hat_question_ids(maps),
        image_template="COCO_val2014_{image_id:012d}.jpg",
    )
    assert [q["question_id"] for q in qs] == [1001, 1002]
    assert qs[0] == {
        "question_id": 1001,
        "question": "What color is it?",
        "image": "COCO_val2014_000000000001.jpg",
        "answer": "red",
    }
    res = read_vqa_hat(maps, qs, IMG)
    assert [r["sample_id"] for r in res.samples] == ["vqa-hat-1001"]
    assert _reasons(res) == {1: "missing field 'answer'"}


def test_vqa_hat_train_split_images_by_template(tmp_path):
    """VQA-HAT train questions are on COCO train2014 images: the image name is a template."""
    images = tmp_path / "train2014"
    images.mkdir()
    (images / "COCO_train2014_000000000001.jpg").write_bytes((IMG / IMG1_NAME).read_bytes())
    (tmp_path / "q.json").write_text(
        json.dumps({"questions": [{"question_id": 1001, "image_id": 1, "question": "Colour?"}]})
    )
    (tmp_path / "a.json").write_text(
        json.dumps({"annotations": [{"question_id": 1001, "multiple_choice_answer": "red"}]})
    )
    maps = REAL / "vqa_hat" / "maps"
    questions = vqa_v1_questions(
        tmp_path / "q.json",
        tmp_path / "a.json",
        question_ids=vqa_hat_question_ids(maps),
        image_template="COCO_train2014_{image_id:012d}.jpg",
    )
    assert questions[0]["image"] == "COCO_train2014_000000000001.jpg"
    res = read_vqa_hat(maps, questions, images, split="train")
    assert [r["sample_id"] for r in res.samples] == ["vqa-hat-1001"] and not res.rejected
    with pytest.raises(ValueError, match="image_template 'COCO_{id}.jpg': must format"):
        vqa_v1_questions(tmp_path / "q.json", tmp_path / "a.json", image_template="COCO_{id}.jpg")


# --------------------------------------------------------------------------- whole files


def test_unreadable_files_raise_naming_file_and_line(tmp_path, hf_cache):
    with pytest.raises(DataFileError, match=r"not_json\.json: line 1, column 1"):
        read_llava_conversations(NOT_JSON, IMG)
    with pytest.raises(DataFileError, match=r"not_json\.json: line 1: not valid JSON"):
        read_pope({"random": NOT_JSON}, IMG)
    with pytest.raises(DataFileError, match=r"not_json\.json: line 1"):
        read_coco(NOT_JSON, None, IMG)
    with pytest.raises(DataFileError, match=r"not_json\.json: line 1"):
        read_vqa_hat(REAL / "vqa_hat" / "maps", NOT_JSON, IMG)
    with pytest.raises(DataFileError, match=r"not_json\.json: line 1"):
        read_saliency_r1(NOT_JSON, cache_dir=hf_cache)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(DataFileError, match=r"garbage\.parquet: cannot load the dataset"):
        read_saliency_r1(garbage, cache_dir=hf_cache)
    wrong = tmp_path / "dict.json"
    wrong.write_text('{"a": 1}')
    with pytest.raises(DataFileError, match="expected a JSON list"):
        read_llava_conversations(wrong, IMG)
    with pytest.raises(DataFileError, match="no 'images' list in the top-level object"):
        read_coco(wrong, None, IMG)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_llava_conversations(tmp_path / "nope.json", IMG)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_vqa_hat(tmp_path / "nope", [], IMG)


# --------------------------------------------------------------------------- misc


def test_rejection_rate_on_reader_results(saliency, pope):
    # saliency: 6 kept, 7 invalid (+1 filtered, not counted)
    with pytest.raises(Exception, match=r"data\.max_rejected_fraction"):
        check_rejection_rate(saliency.n_kept, saliency.n_invalid, 0.5, "saliency-r1-8k")
    assert check_rejection_rate(pope.n_kept, pope.n_invalid, 0.5, "pope") == pytest.approx(4 / 9)


def test_extend_and_hashed_split(pope, coco):
    merged = ReadResult().extend(pope).extend(coco)
    assert len(merged.samples) == 8
    assert len(merged.images) == 3  # POPE and COCO use the same three files: stored once
    with pytest.raises(ValueError, match="duplicate sample ids"):
        ReadResult().extend(pope).extend(pope)
    fn = hashed_split(val_fraction=0.2, test_fraction=0.3, seed=1)
    ids = [f"img-{i}" for i in range(2000)]
    splits = [fn(i) for i in ids]
    assert splits == [fn(i) for i in ids]
    assert abs(splits.count("test") / 2000 - 0.3) < 0.05
    assert abs(splits.count("val") / 2000 - 0.2) < 0.05
    with pytest.raises(ValueError):
        hashed_split(0.6, 0.6)


def test_fixture_script_is_deterministic(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_real", FIX / "make_real_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    mod.main()
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(REAL) for p in REAL.rglob("*") if p.is_file())
    assert made == committed
    for rel in made:
        assert (tmp_path / rel).read_bytes() == (REAL / rel).read_bytes(), rel
