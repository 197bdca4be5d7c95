"""Visual tokens are mapped to the pixels the processor really gave them (issue 15, bug 2).

LLaVA's CLIP processor resizes the shortest edge to 336 px and centre-crops 336 x 336, so on
a 448 x 308 image its 24 x 24 grid covers only x in [0.156, 0.844]; lookright stretched the
grid over the whole image. The ground truth here comes from the processors themselves: which
tokens' pixels (in ``pixel_values``) show ONLY a white box painted on a black image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lookright.metrics.faithfulness import perturb_image
from lookright.metrics.human_alignment import nss
from lookright.metrics.localisation import alignment_score, map_on_image
from lookright.models import load_model
from lookright.models.geometry import ImageView, clip_view
from lookright.models.real_geometry import FAMILIES
from lookright.rewards.region_attention import focus_mask
from lookright.saliency.storage import map_row, result_from_row
from lookright.saliency.types import SaliencyResult
from tests.real_geometry import boxed_image, tokens_seeing_only_the_box

CASES = [  # (width, height), box: off-centre, near the edges LLaVA's crop cuts
    ((448, 308), [0.2, 0.25, 0.5, 0.8]),
    ((308, 448), [0.1, 0.2, 0.7, 0.45]),
    ((336, 224), [0.55, 0.1, 0.8, 0.9]),
]


@pytest.fixture(scope="module")
def loaded_models(real_geometry_checkpoints):
    return {f: load_model(real_geometry_checkpoints[f], dtype=torch.float32) for f in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("size", "box"), CASES)
def test_a_map_on_the_tokens_that_see_the_box_scores_near_one(loaded_models, family, size, box):
    loaded = loaded_models[family]
    image = boxed_image(size, box)
    planted = tokens_seeing_only_the_box(loaded, image).astype(np.float64)
    assert planted.sum() >= 4
    view = loaded.adapter.image_view(loaded.processor, size)
    assert alignment_score(planted, [box], size, view) >= 0.95
    # the SAYO focus region contains every token that sees the box
    assert focus_mask(planted.shape, [box], view)[planted.reshape(-1) > 0].all()


@pytest.mark.parametrize(("size", "box"), CASES)
def test_deletion_removes_the_pixels_of_the_deleted_tokens(loaded_models, size, box):
    """Deleting the planted cells must change exactly what those tokens see: the box."""
    loaded = loaded_models["llava"]
    image = boxed_image(size, box)
    planted = tokens_seeing_only_the_box(loaded, image)
    view = loaded.adapter.image_view(loaded.processor, size)
    pixels = np.asarray(image)
    baseline = np.full_like(pixels, 128)
    deleted = perturb_image(pixels, planted, baseline, view)
    changed = (deleted != pixels).any(axis=2)
    inside = (pixels == 255).all(axis=2)
    assert changed.any() and not (changed & ~inside).any()  # only box pixels are touched
    # and the processor now shows grey where those tokens were
    after = tokens_seeing_only_the_box(loaded, Image.fromarray(deleted))
    assert not (after & planted).any()


@pytest.mark.parametrize(("size", "box"), CASES)
def test_maps_land_on_the_box_in_image_space(loaded_models, size, box):
    """Overlays, NSS and Spearman see the map where its tokens looked."""
    loaded = loaded_models["llava"]
    planted = tokens_seeing_only_the_box(loaded, boxed_image(size, box)).astype(np.float64)
    view = loaded.adapter.image_view(loaded.processor, size)
    width, height = size
    on_image = map_on_image(planted, view, (height, width))
    inside = np.asarray(boxed_image(size, box))[..., 0] == 255
    assert on_image[inside].sum() / on_image.sum() >= 0.9
    human = inside.astype(np.float64)  # the human looked at the box
    assert nss(planted, human, 90.0, view) > 1.15 * nss(planted, human, 90.0)


def test_clip_view_follows_the_processor_steps():
    crop = {"do_resize": True, "size": {"shortest_edge": 336}, "do_center_crop": True}
    crop["crop_size"] = {"height": 336, "width": 336}
    view = clip_view(crop, (448, 308))  # resized to 488 x 336, crop from x = 76
    assert view.as_list() == pytest.approx([76 / 488, 0.0, 412 / 488, 1.0])
    assert clip_view(crop, (300, 300)).is_full
    padded = {**crop, "do_pad": True}  # LLaVA's "pad" aspect mode: the grid goes beyond
    assert clip_view(padded, (400, 200)).as_list() == pytest.approx([0.0, -0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="longest_edge"):
        clip_view({"size": {"shortest_edge": 336, "longest_edge": 672}}, (400, 200))


def test_the_view_is_stored_with_the_maps():
    view = ImageView(0.25, 0.0, 0.75, 1.0)
    result = SaliencyResult("m", (2, 2), np.ones((2, 2), np.float32), view=view)
    assert result_from_row(map_row(result, "s")).view == view
    assert map_row(SaliencyResult("m", (2, 2), None), "s")["view"] is None


def test_maps_written_before_the_view_existed_read_as_the_whole_image(tmp_path):
    from lookright.saliency.storage import maps_table, read_maps

    row = map_row(SaliencyResult("m", (2, 2), np.ones((2, 2), np.float32)), "s")
    old = maps_table([row]).drop_columns(["view"])
    import pyarrow.parquet as pq

    pq.write_table(old, tmp_path / "maps.parquet")
    table = read_maps(tmp_path / "maps.parquet")
    assert result_from_row(table.to_pylist()[0]).view.is_full
