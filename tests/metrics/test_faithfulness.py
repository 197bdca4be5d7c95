"""Tests of lookright.metrics.faithfulness (Saliency-R1 deletion / insertion)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lookright.metrics.faithfulness import (
    auc,
    cell_boundaries,
    curve,
    deletion_image,
    deletion_insertion_table,
    evaluate_deletion_insertion,
    insertion_image,
    make_baseline,
    n_cells_for_fraction,
    patch_mask,
    perturb_image,
    rank_patches,
    relative_score,
)


def test_rank_patches_stable_ties():
    m = np.array([[0.1, 0.5], [0.5, 0.0]])
    np.testing.assert_array_equal(rank_patches(m), [1, 2, 0, 3])


@pytest.mark.parametrize(
    ("n", "fraction", "expected"),
    [
        (100, 0.05, 5),
        (100, 0.15, 15),
        (100, 0.30, 30),
        (10, 0.15, 2),  # 1.5 rounds half up
        (10, 0.05, 1),  # 0.5 -> 1
        (16, 0.05, 1),  # 0.8 -> 1
        (4, 0.05, 1),  # 0.2 -> 0, but at least one cell
        (256, 0.30, 77),  # 76.8
        (7, 0.0, 0),
        (7, 1.0, 7),
    ],
)
def test_n_cells_for_fraction(n, fraction, expected):
    assert n_cells_for_fraction(n, fraction) == expected


def test_fraction_out_of_range():
    with pytest.raises(ValueError):
        n_cells_for_fraction(10, 1.5)


def test_patch_mask():
    mask = patch_mask((2, 2), np.array([3, 0, 1, 2]), 0.5)
    np.testing.assert_array_equal(mask, [[True, False], [False, True]])


def test_cell_boundaries_round_half_up():
    np.testing.assert_array_equal(cell_boundaries(10, 3), [0, 3, 7, 10])
    np.testing.assert_array_equal(cell_boundaries(5, 2), [0, 3, 5])
    np.testing.assert_array_equal(cell_boundaries(7, 3), [0, 2, 5, 7])


def test_perturb_image_non_multiple_size():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    baseline = np.full_like(image, 255)
    mask = np.zeros((2, 3), dtype=bool)
    mask[1, 1] = True  # rows [3, 5), cols [2, 5)
    out = perturb_image(image, mask, baseline)
    expected = image.copy()
    expected[3:5, 2:5] = 255
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(image, np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))


def test_perturb_image_shape_mismatch():
    with pytest.raises(ValueError):
        perturb_image(np.zeros((4, 4, 3), np.uint8), np.ones((2, 2), bool), np.zeros((4, 4)))


def test_make_baseline_zero_and_mean():
    image = np.array([[[0, 10, 100], [2, 20, 200]]], dtype=np.uint8)
    np.testing.assert_array_equal(make_baseline(image, "zero"), np.zeros_like(image))
    mean = make_baseline(image, "mean")
    np.testing.assert_array_equal(mean, [[[1, 15, 150], [1, 15, 150]]])
    assert mean.dtype == np.uint8
    with pytest.raises(ValueError):
        make_baseline(image, "noise")  # type: ignore[arg-type]


def test_make_baseline_blur():
    flat = np.full((20, 30, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(make_baseline(flat, "blur", blur_radius=3), flat)
    step = np.zeros((20, 40, 3), dtype=np.uint8)
    step[:, 20:] = 200
    blurred = make_baseline(step, "blur", blur_radius=3)
    assert blurred.shape == step.shape and blurred.dtype == np.uint8
    assert 0 < blurred[10, 19, 0] < 200 and 0 < blurred[10, 20, 0] < 200
    assert blurred[10, 0, 0] == 0 and blurred[10, 39, 0] == 200


def test_deletion_and_insertion_images():
    image = np.full((4, 4, 3), 255, dtype=np.uint8)
    sal = np.array([[0.0, 1.0], [0.0, 0.0]])
    deleted = deletion_image(image, sal, 0.25, baseline="zero")
    expected = image.copy()
    expected[0:2, 2:4] = 0
    np.testing.assert_array_equal(deleted, expected)
    inserted = insertion_image(image, sal, 0.25, baseline="zero")
    expected = np.zeros_like(image)
    expected[0:2, 2:4] = 255
    np.testing.assert_array_equal(inserted, expected)
    # a precomputed baseline array works too
    np.testing.assert_array_equal(
        deletion_image(image, sal, 0.25, baseline=np.zeros_like(image)), deleted
    )


def test_relative_score():
    assert relative_score(-1.0, -1.0) == pytest.approx(100.0)
    assert relative_score(math.log(0.5) - 2.0, -2.0) == pytest.approx(50.0)
    # no underflow for very unlikely answers
    assert relative_score(-1000.0, -999.0) == pytest.approx(100.0 / math.e)


def test_curve_and_auc():
    x, y = curve([0.3, 0.05, 0.15], [40, 80, 60])
    np.testing.assert_array_equal(x, [0.05, 0.15, 0.3])
    np.testing.assert_array_equal(y, [80, 60, 40])
    assert auc([0, 0.5, 1], [100, 50, 0]) == pytest.approx(50.0)
    # (0.1 * 70 + 0.15 * 50) / 0.25 = 58
    assert auc([0.3, 0.05, 0.15], [40, 80, 60]) == pytest.approx(58.0)
    assert auc([0.3], [42.0]) == 42.0
    with pytest.raises(ValueError):
        curve([0.1, 0.1], [1, 2])
    with pytest.raises(ValueError):
        curve([0.1], [1, 2])


def test_deletion_insertion_table():
    records = [
        {"method": "ours", "kind": "deletion", "fraction": 0.05, "score": 70.0},
        {"method": "ours", "kind": "deletion", "fraction": 0.05, "score": 80.0},
        {"method": "ours", "kind": "insertion", "fraction": 0.30, "score": 40.0},
        {"method": "ours", "kind": "deletion", "fraction": 0.30, "score": 50.0},
        {"method": "random", "kind": "deletion", "fraction": 0.15, "score": 90.0},
        {"method": "ours", "kind": "deletion", "fraction": 0.15, "score": 60.0},
    ]
    rows = deletion_insertion_table(records)
    assert [r["method"] for r in rows] == ["ours", "random"]
    assert list(rows[0]) == ["method", "Del5", "Del15", "Del30", "Ins30", "n"]
    assert rows[0]["Del5"] == pytest.approx(75.0)
    assert rows[0]["Del15"] == 60.0 and rows[0]["Del30"] == 50.0 and rows[0]["Ins30"] == 40.0
    assert rows[0]["n"] == 2
    assert rows[1]["Del15"] == 90.0 and math.isnan(rows[1]["Del5"]) and rows[1]["n"] == 1
    with pytest.raises(ValueError):
        deletion_insertion_table([{"method": "m", "kind": "other", "fraction": 0.1, "score": 1}])


def test_evaluate_deletion_insertion_calls_and_scores():
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    sal = np.array([[4.0, 3.0], [2.0, 1.0]])
    calls: list[np.ndarray] = []

    def score_fn(img: np.ndarray) -> float:
        calls.append(img)
        return float(img.mean()) / 255.0

    records = evaluate_deletion_insertion(
        image, sal, score_fn, fractions=(0.25, 0.5), insertion_fractions=(0.25,),
        baseline="zero", method="ours",
    )  # fmt: skip
    assert len(calls) == 4
    np.testing.assert_array_equal(calls[0], image)
    assert [(r["kind"], r["fraction"]) for r in records] == [
        ("deletion", 0.25),
        ("deletion", 0.5),
        ("insertion", 0.25),
    ]
    # deleting 1 of 4 cells: mean 150; 2 cells: mean 100; inserting 1 cell: mean 50
    for rec, mean in zip(records, (150, 100, 50), strict=True):
        assert rec["score"] == pytest.approx(100 * math.exp((mean - 200) / 255))
        assert rec["logp_original"] == pytest.approx(200 / 255)
        assert rec["method"] == "ours"
    # the first deletion removed the top-left cell (highest saliency)
    assert calls[1][0, 0, 0] == 0 and calls[1][0, 2, 0] == 200
