"""Tests of lookright.metrics.localisation (Saliency-R1 alignment score, map resizing)."""

from __future__ import annotations

import numpy as np
import pytest

from lookright.metrics.localisation import alignment_score, box_coverage, resize_map, upsample_map


def test_quarter_box_on_uniform_map():
    assert alignment_score(np.ones((2, 2)), [[0, 0, 0.5, 0.5]]) == pytest.approx(0.25, abs=1e-12)


def test_weighted_top_row():
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert alignment_score(m, [[0, 0, 1, 0.5]]) == pytest.approx(0.3, abs=1e-12)


def test_partial_cell_overlap_is_exact():
    # box covers a quarter of each of the 4 cells; all mass is in cell (0, 0)
    m = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert alignment_score(m, [[0.25, 0.25, 0.75, 0.75]]) == pytest.approx(0.25, abs=1e-12)
    cov = box_coverage((1, 3), [[0.0, 0.0, 0.5, 1.0]])
    np.testing.assert_allclose(cov, [[1.0, 0.5, 0.0]], atol=1e-12)


def test_union_of_overlapping_boxes_not_double_counted():
    boxes = [[0, 0, 0.5, 1], [0, 0, 1, 0.5]]  # union = 3 of 4 cells; sum of areas = 4 cells
    assert alignment_score(np.ones((2, 2)), boxes) == pytest.approx(0.75, abs=1e-12)
    same = [[0.1, 0.2, 0.6, 0.7]] * 3
    assert alignment_score(np.ones((4, 4)), same) == pytest.approx(0.25, abs=1e-12)


def test_non_square_image_y_scaled_by_height():
    # 224 wide x 112 high; box x in [112, 224] px, y in [56, 84] px -> half of cell (1, 1)
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    box = [0.5, 0.5, 1.0, 0.75]
    score = alignment_score(m, [box], image_size=(224, 112))
    assert score == pytest.approx(2.0 / 10.0, abs=1e-12)
    # the reference bug (y2 scaled by WIDTH: 0.75 * 224 = 168 px -> clipped to 112) would
    # cover the whole cell (1, 1): 4 / 10
    buggy_y2 = 0.75 * 224 / 112
    assert alignment_score(m, [[0.5, 0.5, 1.0, buggy_y2]]) == pytest.approx(0.4, abs=1e-12)
    assert score != pytest.approx(0.4)
    # uniform map, band y in [28, 56] px: half of the top row
    band = alignment_score(np.ones((2, 2)), [[0, 0.25, 1, 0.5]], image_size=(224, 112))
    assert band == pytest.approx(0.25, abs=1e-12)


def test_rectangular_grid_cell_aligned_box():
    rng = np.random.default_rng(0)
    m = rng.random((3, 4))
    score = alignment_score(m, [[0.25, 1 / 3, 0.75, 2 / 3]], image_size=(640, 480))
    assert score == pytest.approx((m[1, 1] + m[1, 2]) / m.sum(), abs=1e-12)


def test_matches_pixel_rasterisation_for_pixel_aligned_boxes():
    rng = np.random.default_rng(1)
    h, w, height, width = 5, 7, 50, 70  # 10x10-pixel cells
    m = rng.random((h, w))
    boxes_px = [[3, 4, 41, 29], [20, 17, 66, 48], [0, 0, 9, 12]]
    pixels = np.kron(m / 100.0, np.ones((10, 10)))  # mass per pixel
    inside = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes_px:
        inside[y1:y2, x1:x2] = True
    expected = pixels[inside].sum() / pixels.sum()
    boxes = [[x1 / width, y1 / height, x2 / width, y2 / height] for x1, y1, x2, y2 in boxes_px]
    assert alignment_score(m, boxes, image_size=(width, height)) == pytest.approx(
        expected, abs=1e-12
    )


def test_none_cases():
    assert alignment_score(np.zeros((2, 2)), [[0, 0, 1, 1]]) is None
    assert alignment_score(np.array([[1.0, np.nan]]), [[0, 0, 1, 1]]) is None
    assert alignment_score(np.zeros((0, 0)), [[0, 0, 1, 1]]) is None
    assert alignment_score(np.ones((2, 2)), []) is None


def test_degenerate_box_scores_zero_and_negatives_clipped():
    assert alignment_score(np.ones((2, 2)), [[0.5, 0.5, 0.5, 0.9]]) == 0.0
    m = np.array([[-5.0, 1.0], [1.0, 2.0]])  # -5 is clipped to 0
    assert alignment_score(m, [[0, 0, 0.5, 0.5]]) == 0.0
    assert alignment_score(m, [[0, 0.5, 1, 1]]) == pytest.approx(0.75, abs=1e-12)


def test_box_outside_image_is_clipped():
    assert alignment_score(np.ones((2, 2)), [[-1, -1, 0.5, 2]]) == pytest.approx(0.5, abs=1e-12)


def test_upsample_map_bilinear_half_pixel():
    out = upsample_map(np.array([[0.0, 1.0]]), image_size=(4, 1))
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]], atol=1e-6)
    big = upsample_map(np.full((3, 5), 2.5), image_size=(224, 112))
    assert big.shape == (112, 224)
    np.testing.assert_allclose(big, 2.5, atol=1e-6)


def test_resize_map_same_shape_is_copy():
    m = np.arange(6.0).reshape(2, 3)
    out = resize_map(m, (2, 3))
    np.testing.assert_array_equal(out, m)
    assert out is not m
