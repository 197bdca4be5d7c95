"""Which part of the ORIGINAL image a sample's visual-token grid covers.

A processor resizes, crops and pads the image before the vision encoder cuts it into patches,
so the token grid is not always laid over the whole image:

* Qwen2-VL / Qwen2.5-VL ("smart resize"): the whole image is resized to multiples of 28 px;
  the grid covers exactly the image (aspect ratio changes slightly, nothing is cut).
* LLaVA-1.5 (CLIP image processing): the shortest edge is resized to 336 px, then the centre
  336 x 336 is cropped; on a 448 x 308 image the grid covers only x in [0.156, 0.844].
  With ``do_pad`` (pad to a square first) the grid extends BEYOND the image.

:class:`ImageView` records that region in normalised image coordinates; every place that maps
visual tokens to pixels (alignment, the SAYO focus region, NSS/Spearman, deletion/insertion,
overlays) goes through it. :func:`clip_view` derives it from a CLIP-style processor's own
config (``do_pad``, ``do_resize``/``size``, ``do_center_crop``/``crop_size``), per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ImageView:
    """The rectangle ``[x0, x1] x [y0, y1]`` of the image (normalised: x by width, y by height)
    that the visual-token grid covers, cells uniformly.

    Inside ``[0, 1]`` where the processor cropped, beyond it where it padded; the default is
    the whole image. Cell ``(i, j)`` of an ``(h, w)`` grid covers
    ``x in [x0 + j (x1 - x0) / w, x0 + (j + 1) (x1 - x0) / w]`` (y likewise).
    """

    x0: float = 0.0
    y0: float = 0.0
    x1: float = 1.0
    y1: float = 1.0

    def __post_init__(self) -> None:
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"ImageView needs x0 < x1 and y0 < y1, got {self.as_list()}")

    @property
    def is_full(self) -> bool:
        return self.as_list() == [0.0, 0.0, 1.0, 1.0]

    def as_list(self) -> list[float]:
        return [float(self.x0), float(self.y0), float(self.x1), float(self.y1)]

    @classmethod
    def from_list(cls, values: Sequence[float] | None) -> ImageView:
        """From ``[x0, y0, x1, y1]``; None (e.g. a stored row without one) is the whole image."""
        return cls() if values is None else cls(*(float(v) for v in values))

    def to_grid(self, boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        """Normalised image boxes ``[x1, y1, x2, y2]`` in the grid's own normalised coordinates
        (0..1 across the grid); parts outside the grid fall outside [0, 1]."""
        arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        width, height = self.x1 - self.x0, self.y1 - self.y0
        return np.stack(
            [
                (arr[:, 0] - self.x0) / width,
                (arr[:, 1] - self.y0) / height,
                (arr[:, 2] - self.x0) / width,
                (arr[:, 3] - self.y0) / height,
            ],
            axis=1,
        )


FULL_VIEW = ImageView()


def _get(config: Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def _size_dict(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: int(v) for k, v in value.items() if v is not None}
    return {k: int(v) for k, v in vars(value).items() if v is not None and not k.startswith("_")}


def _resized(height: int, width: int, size: dict[str, int], where: str) -> tuple[int, int]:
    """``(height, width)`` after transformers' resize with ``size`` (shortest edge: the long edge
    is ``int(size * long / short)``; height/width: exactly that)."""
    if set(size) == {"shortest_edge"}:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    if {"height", "width"} <= set(size):
        return size["height"], size["width"]
    raise ValueError(
        f"{where}: resize size {size} is not supported for mapping visual tokens to pixels "
        "(supported: {'shortest_edge': n} or {'height': h, 'width': w})"
    )


def clip_view(image_processor: Any, image_size: tuple[int, int]) -> ImageView:
    """The view of a CLIP-style image processor (LLaVA's) on an image of ``(width, height)``.

    Follows the processor's steps in order, tracking the region they keep in the original
    image's pixel coordinates: ``do_pad`` pads to a square (offset ``(max - side) // 2``),
    ``do_resize`` scales the canvas to ``size``, ``do_center_crop`` keeps ``crop_size``
    starting at ``(resized - crop) // 2`` (negative: transformers pads the resized image
    symmetrically, ``ceil`` on the leading side, which is the same offset).
    """
    where = type(image_processor).__name__
    width, height = int(image_size[0]), int(image_size[1])
    left, top, canvas_w, canvas_h = 0.0, 0.0, float(width), float(height)
    if _get(image_processor, "do_pad", False):
        side = max(width, height)
        left, top = -float((side - width) // 2), -float((side - height) // 2)
        canvas_w = canvas_h = float(side)
    resized_h, resized_w = canvas_h, canvas_w
    if _get(image_processor, "do_resize", True):
        size = _size_dict(_get(image_processor, "size"))
        resized_h, resized_w = _resized(int(canvas_h), int(canvas_w), size, where)
    scale_x, scale_y = canvas_w / resized_w, canvas_h / resized_h
    x0, y0, x1, y1 = 0.0, 0.0, float(resized_w), float(resized_h)
    if _get(image_processor, "do_center_crop", False):
        crop = _size_dict(_get(image_processor, "crop_size"))
        if not {"height", "width"} <= set(crop):
            raise ValueError(f"{where}: crop_size {crop} needs 'height' and 'width'")
        x0 = _crop_start(int(resized_w), crop["width"])
        y0 = _crop_start(int(resized_h), crop["height"])
        x1, y1 = x0 + crop["width"], y0 + crop["height"]
    return ImageView(
        (left + x0 * scale_x) / width,
        (top + y0 * scale_y) / height,
        (left + x1 * scale_x) / width,
        (top + y1 * scale_y) / height,
    )


def _crop_start(length: int, crop: int) -> float:
    if length >= crop:
        return float((length - crop) // 2)
    return -float(math.ceil((crop - length) / 2))
