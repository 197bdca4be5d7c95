"""Occlusion, the reference map: exact per-token drops, zero where occluding changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from saliency_helpers import FAMILIES, IMAGE_SIZE

from lookright.metrics.faithfulness import perturb_image
from lookright.saliency import explain_batch, get_method
from lookright.saliency.batch import prepare_batch
from lookright.saliency.occlusion import cell_groups, token_logprobs

QUESTION = ["What color is the circle?"]
COMPLETION = ["<think>It is at the top left. The circle red.</think>red"]
CELL = (2, 1)  # the only non-black cell of the 4 x 4 grid


def one_white_cell() -> Image.Image:
    pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    size = IMAGE_SIZE // 4
    row, col = CELL
    pixels[row * size : (row + 1) * size, col * size : (col + 1) * size] = 255
    return Image.fromarray(pixels)


def test_cell_groups_tile_the_grid():
    groups = cell_groups((5, 4), 2)
    assert len(groups) == 3 * 2
    assert np.array_equal(np.sum(groups, axis=0), np.ones((5, 4)))
    assert groups[-1].sum() == 2  # the bottom-right block is cut by the edge


@pytest.mark.parametrize("family", FAMILIES)
def test_occlusion_is_the_exact_drop_and_zero_where_nothing_changes(family, build_tiny):
    """Zero baseline on a black image: occluding a black cell leaves the image unchanged, so
    its drop is 0 for every token; the white cell's drop equals a direct teacher-forced
    computation on the image with that cell blacked out."""
    model, processor, adapter = build_tiny(family)
    image = one_white_cell()
    method = get_method("occlusion", baseline="zero", batch_size=5)  # several forward batches
    (result,) = explain_batch(model, processor, [image], QUESTION, COMPLETION, [method])[
        "occlusion"
    ]
    batch = prepare_batch(model, processor, adapter, [image], QUESTION, COMPLETION)
    sample = batch.samples[0]
    maps = result.token_maps
    assert maps.shape == (len(sample.targets), *sample.grid)
    white = CELL[0] * sample.grid[1] + CELL[1]
    flat = maps.reshape(len(maps), -1)
    others = np.delete(flat, white, axis=1)
    assert np.abs(others).max() < 1e-4
    pixels = np.asarray(image)
    mask = np.zeros(sample.grid, dtype=bool)
    mask[CELL] = True
    occluded = Image.fromarray(perturb_image(pixels, mask, np.zeros_like(pixels)))
    ids = batch.token_ids(0, sample.targets)
    direct = token_logprobs(model, adapter, processor, [image, occluded], QUESTION[0], ids)
    expected = (direct[0] - direct[1]).numpy()
    np.testing.assert_allclose(flat[:, white], expected, atol=1e-4, rtol=1e-4)
    assert np.abs(expected).max() > 1e-3  # the white cell does matter to a random model
    np.testing.assert_allclose(result.token_scores, flat.max(axis=1), atol=0)
    if expected.sum() > 0:
        assert result.has_map and int(np.argmax(result.response_map)) == white
    else:
        assert not result.has_map and result.reason == "map sums to 0"


def test_occlusion_blocks_share_their_drop(build_tiny):
    model, processor, _ = build_tiny("qwen2_5_vl")
    image = one_white_cell()
    (result,) = explain_batch(
        model,
        processor,
        [image],
        QUESTION,
        COMPLETION,
        [get_method("occlusion", cell_size=2, baseline="zero")],
    )["occlusion"]
    maps = result.token_maps
    block = maps[:, 2:4, 0:2]
    assert np.allclose(block, block[:, :1, :1])  # the white cell's 2 x 2 block: one value
    assert np.abs(maps[:, :2]).max() < 1e-4  # blocks of black cells: unchanged image


def test_occlusion_rejects_bad_options():
    with pytest.raises(ValueError, match="baseline"):
        get_method("occlusion", baseline="grey")
    with pytest.raises(ValueError, match="cell_size"):
        get_method("occlusion", cell_size=0)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_occlusion_follows_the_real_processors_geometry(family, real_geometry_checkpoints):
    """Real processors resize (Qwen) or resize + centre-crop (LLaVA) a non-square image: a
    block of cells changes the model's input exactly when its pixels (through the sample's
    view) hold part of the white box. Blocks on black pixels, zero baseline: drop 0; the
    tokens that see only the box (read from ``pixel_values``, an independent mapping) lie in
    blocks whose occlusion moves the log-probs."""
    import torch

    from lookright.models import load_model
    from tests.real_geometry import boxed_image, tokens_seeing_only_the_box

    loaded = load_model(real_geometry_checkpoints[family], dtype=torch.float32)
    image = boxed_image((300, 180), [0.35, 0.25, 0.65, 0.75])
    cell_size = 4 if family == "llava" else 1  # LLaVA: 24 x 24 tokens on its 336 px crop
    method = get_method("occlusion", baseline="zero", cell_size=cell_size, batch_size=16)
    (result,) = explain_batch(
        loaded.model, loaded.processor, [image], QUESTION, COMPLETION, [method], loaded.adapter
    )["occlusion"]
    grid = result.grid
    pixels = np.asarray(image)
    moved = np.abs(result.token_maps).max(axis=0) > 1e-4  # (h, w)
    for mask in cell_groups(grid, cell_size):
        changes = not np.array_equal(
            perturb_image(pixels, mask, np.zeros_like(pixels), result.view), pixels
        )
        if not changes:
            assert not moved[mask].any(), mask
    sees_box = tokens_seeing_only_the_box(loaded, image)
    assert sees_box.any()
    assert moved[sees_box].all()
