"""The synthetic shapes generator: determinism, layout, boxes, POPE, bias and table schemas."""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from lookright.data.schema import IMAGES, POPE_SPLITS, SAMPLES
from lookright.data.shapes import (
    COLORS,
    SHAPES,
    BiasConfig,
    ShapeObject,
    ShapesConfig,
    caption_for,
    cot_target,
    generate,
    generate_split,
)
from lookright.io import rows_to_table

SMALL = ShapesConfig(seed=3, n_train=6, n_val=3, n_test=3)
CELL = 28


def _views(images: list[dict], samples: list[dict]) -> list[dict]:
    """Each image row with its split, source and objects (stored on its samples)."""
    first = {}
    for s in samples:
        first.setdefault(s["image_id"], s)
    keys = ("split", "source", "objects", "object_boxes")
    return [{**r, **{k: first[r["image_id"]][k] for k in keys}} for r in images]


@pytest.fixture(scope="module")
def data() -> tuple[list[dict], list[dict]]:
    images, samples = generate(SMALL)
    return _views(images, samples), samples


def _decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "RGB"
    return np.asarray(image)


def _objects(image_row: dict) -> list[tuple[str, list[float]]]:
    return list(zip(image_row["objects"], image_row["object_boxes"], strict=True))


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_identical_output(data):
    images, samples = data
    images2, samples2 = generate(ShapesConfig(seed=3, n_train=6, n_val=3, n_test=3))
    assert [r["image_bytes"] for r in images] == [r["image_bytes"] for r in images2]
    assert images == _views(images2, samples2)
    assert samples == samples2


def test_different_seed_gives_different_images(data):
    images, _ = data
    other, _ = generate(ShapesConfig(seed=4, n_train=6, n_val=3, n_test=3))
    assert len(other) == len(images)
    assert all(a["image_bytes"] != b["image_bytes"] for a, b in zip(images, other, strict=True))
    # image ids are the SHA-256 of the PNG, so other pixels give other ids
    assert not {r["image_id"] for r in other} & {r["image_id"] for r in images}


def test_each_image_depends_only_on_seed_split_and_index(data):
    """Generating more images (or one split alone) leaves the existing ones unchanged."""
    images, samples = data
    more_images, more_samples = generate_split(
        ShapesConfig(seed=3, n_train=9, n_val=3, n_test=3), "train"
    )
    train = [r["image_id"] for r in images if r["split"] == "train"]
    assert [r["image_id"] for r in more_images[: len(train)]] == train
    assert more_samples[: sum(s["split"] == "train" for s in samples)] == [
        s for s in samples if s["split"] == "train"
    ]
    test_only, _ = generate_split(SMALL, "test")
    assert [r["image_id"] for r in test_only] == [
        r["image_id"] for r in images if r["split"] == "test"
    ]


def test_counts_and_unique_ids(data):
    images, samples = data
    assert Counter(r["split"] for r in images) == {"train": 6, "val": 3, "test": 3}
    assert len({r["image_id"] for r in images}) == 12
    assert len({s["sample_id"] for s in samples}) == len(samples)
    assert samples[0]["sample_id"].startswith("shapes-train-000000-")
    assert samples[-1]["sample_id"] == "shapes-test-000002-caption"
    assert all(r["image_id"] == hashlib.sha256(r["image_bytes"]).hexdigest() for r in images)
    assert {s["object_vocabulary"] for s in samples} == {"shapes"}
    for row in images:
        n = len(row["objects"])
        assert SMALL.min_objects <= n <= SMALL.max_objects
        assert len(set(row["objects"])) == n
        per_image = Counter(s["task"] for s in samples if s["image_id"] == row["image_id"])
        # one colour question per object, 3 POPE splits x (positive, negative), one caption
        assert per_image == {"vqa": n, "pope": 6, "caption": 1}


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("size", [100, 70, 27])
def test_image_size_must_be_multiple_of_28(size):
    with pytest.raises(ValueError, match=rf"image_size={size}: must be a multiple of 28"):
        ShapesConfig(image_size=size)


def test_other_invalid_configs_name_the_key():
    with pytest.raises(ValueError, match="layout='spiral'"):
        ShapesConfig(layout="spiral")
    with pytest.raises(ValueError, match="min_objects/max_objects=3/2"):
        ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match=r"unknown shape/colour \['hexagon'\]"):
        ShapesConfig(shapes=("circle", "square", "star", "hexagon"))
    with pytest.raises(ValueError, match="bias.fraction=1.5"):
        ShapesConfig(bias=BiasConfig(fraction=1.5))
    with pytest.raises(ValueError, match="bias.shape/color='triangel'/'red'"):
        ShapesConfig(bias=BiasConfig(shape="triangel", fraction=0.5))
    with pytest.raises(ValueError, match="bias.shape/color='triangle'/'pink'"):
        ShapesConfig(bias=BiasConfig(color="pink", fraction=0.5))
    ShapesConfig(bias=BiasConfig(shape="triangel", fraction=0.0))  # bias off: not checked
    ShapesConfig(image_size=56, grid=2, max_objects=4)  # valid


# --------------------------------------------------------------------------- layout and boxes


def test_images_are_rgb_of_configured_size(data):
    images, _ = data
    for row in images:
        pixels = _decode(row["image_bytes"])
        assert pixels.shape == (112, 112, 3)
        assert (row["width"], row["height"], row["source"]) == (112, 112, "shapes")


def test_grid_objects_fill_one_28px_cell_each(data):
    """One object per 28-px cell = one merged Qwen visual token, drawn in its colour."""
    images, samples = data
    colour_of = {(s["image_id"], s["question"]): s["answer"] for s in samples if s["task"] == "vqa"}
    for row in images:
        pixels = _decode(row["image_bytes"])
        cells = []
        for shape, box in _objects(row):
            x1, y1, x2, y2 = (v * 112 for v in box)
            col, line = int(x1 // CELL), int(y1 // CELL)
            assert (int(x2 // CELL), int(y2 // CELL)) == (col, line)
            assert col * CELL < x1 < x2 < (col + 1) * CELL
            assert line * CELL < y1 < y2 < (line + 1) * CELL
            cells.append((line, col))
            colour = colour_of[(row["image_id"], f"What color is the {shape}?")]
            centre = pixels[line * CELL + CELL // 2, col * CELL + CELL // 2]
            assert tuple(centre) == COLORS[colour]
        assert len(set(cells)) == len(cells)


def test_boxes_are_normalised_and_ordered(data):
    images, samples = data
    boxes = [b for r in images for b in r["object_boxes"]]
    boxes += [b for s in samples for b in s["boxes"]]
    assert boxes
    for x1, y1, x2, y2 in boxes:
        assert 0.0 <= x1 < x2 <= 1.0 and 0.0 <= y1 < y2 <= 1.0


def test_free_layout_boxes_do_not_overlap():
    images, samples = generate_split(ShapesConfig(layout="free", n_train=5), "train")
    for row in _views(images, samples):
        boxes = row["object_boxes"]
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= 1 and 0 <= a[1] < a[3] <= 1
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


# --------------------------------------------------------------------------- samples


def test_vqa_samples_match_their_objects(data):
    images, samples = data
    by_id = {r["image_id"]: r for r in images}
    for s in (s for s in samples if s["task"] == "vqa"):
        shape = s["question"].removeprefix("What color is the ").removesuffix("?")
        objects = dict(_objects(by_id[s["image_id"]]))
        assert s["boxes"] == [objects[shape]]
        assert s["answer"] in COLORS and s["subset"] is None
        obj = ShapeObject(shape, s["answer"], tuple(objects[shape]))
        assert s["cot"] == cot_target(obj)
        assert s["cot"].startswith("<think>It is at the ")
        assert s["cot"].endswith(f". The {shape} {s['answer']}.</think>{s['answer']}")
        human = np.asarray(s["human_map"], dtype=np.float32).reshape(28, 28)
        assert (s["human_map_height"], s["human_map_width"]) == (28, 28)
        assert human.max() == 1.0 and human.min() >= 0.0
        peak_y, peak_x = np.unravel_index(np.argmax(human), human.shape)
        x1, y1, x2, y2 = objects[shape]
        assert x1 * 28 <= peak_x + 0.5 <= x2 * 28 and y1 * 28 <= peak_y + 0.5 <= y2 * 28


def test_cot_says_where_then_names_the_shape_before_its_colour():
    obj = ShapeObject("star", "blue", (0.6, 0.1, 0.8, 0.3))
    assert cot_target(obj) == "<think>It is at the top right. The star blue.</think>blue"
    obj = ShapeObject("cross", "red", (0.1, 0.6, 0.2, 0.9))
    assert cot_target(obj) == "<think>It is at the bottom left. The cross red.</think>red"


def test_captions_list_every_object(data):
    images, samples = data
    by_id = {r["image_id"]: r for r in images}
    for s in (s for s in samples if s["task"] == "caption"):
        objects = by_id[s["image_id"]]["objects"]
        assert s["question"] == "Describe the image." and s["boxes"] == []
        assert s["answer"].startswith("There is a ") and s["answer"].endswith(".")
        assert all(f" {shape}" in s["answer"] for shape in objects)
    two = [ShapeObject("circle", "red", (0, 0, 1, 1)), ShapeObject("star", "blue", (0, 0, 1, 1))]
    assert caption_for(two) == "There is a red circle and a blue star."
    assert caption_for(two[:1]) == "There is a red circle."


def test_pope_positives_present_negatives_absent(data):
    images, samples = data
    by_id = {r["image_id"]: r for r in images}
    for row in images:
        pope = [s for s in samples if s["image_id"] == row["image_id"] and s["task"] == "pope"]
        assert Counter((s["pope_split"], s["answer"]) for s in pope) == {
            (split, label): 1 for split in POPE_SPLITS for label in ("yes", "no")
        }
    for s in (s for s in samples if s["task"] == "pope"):
        shape = s["question"].removeprefix("Is there a ").removesuffix(" in the image?")
        assert shape in SHAPES
        objects = dict(_objects(by_id[s["image_id"]]))
        if s["answer"] == "yes":
            assert shape in objects and s["boxes"] == [objects[shape]]
        else:
            assert s["answer"] == "no"
            assert shape not in objects and s["boxes"] == []


# --------------------------------------------------------------------------- bias


def test_bias_makes_training_triangles_red_and_tags_test_questions():
    cfg = ShapesConfig(n_train=120, n_test=60, bias=BiasConfig("triangle", "red", 0.9))
    _, train = generate_split(cfg, "train")
    train_colours = [s["answer"] for s in train if s["question"] == "What color is the triangle?"]
    assert len(train_colours) > 30
    assert train_colours.count("red") / len(train_colours) >= 0.85
    assert all(s.get("subset") is None for s in train if "triangle" not in s["question"])

    _, test = generate_split(cfg, "test")
    tri = [s for s in test if s["task"] == "vqa" and s["question"] == "What color is the triangle?"]
    assert tri and all(
        s["subset"] == ("bias_aligned" if s["answer"] == "red" else "bias_conflicting") for s in tri
    )
    assert {s["subset"] for s in tri} == {"bias_aligned", "bias_conflicting"}
    # the test split is not biased: most test triangles are not red
    assert sum(s["answer"] == "red" for s in tri) / len(tri) < 0.4
    others = [s for s in test if s["task"] == "vqa" and "triangle" not in s["question"]]
    assert others and all(s["subset"] is None for s in others)


def test_no_bias_means_no_subsets(data):
    _, samples = data
    assert all(s.get("subset") is None for s in samples)


# --------------------------------------------------------------------------- tables


def test_rows_conform_to_the_parquet_schemas():
    images, samples = generate(SMALL)
    assert all(set(r) == set(IMAGES.names) for r in images)
    assert all(set(s) == set(SAMPLES.names) for s in samples)  # no column silently dropped
    image_table = rows_to_table(images, IMAGES)
    sample_table = rows_to_table(samples, SAMPLES)
    assert image_table.schema.equals(IMAGES) and image_table.num_rows == len(images)
    assert sample_table.schema.equals(SAMPLES) and sample_table.num_rows == len(samples)
    assert sample_table.column("task").to_pylist() == [s["task"] for s in samples]
    assert set(sample_table.column("pope_split").drop_null().to_pylist()) == set(POPE_SPLITS)
    first_vqa = next(k for k, s in enumerate(samples) if s["task"] == "vqa")
    box = sample_table.column("boxes")[first_vqa].as_py()
    assert box[0] == pytest.approx(samples[first_vqa]["boxes"][0])  # float32 in Parquet
