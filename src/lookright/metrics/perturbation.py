"""Pixels of grid cells replaced by a baseline: what deletion / insertion
(:mod:`lookright.metrics.faithfulness`) and the occlusion reference map
(:mod:`lookright.saliency.occlusion`) do to an image (docs/methods.md#deletion_insertion,
#occlusion).

A module of its own so that the occlusion method (in the saliency registry, which GRPO's
saliency rewards and the decoders load) depends on this and not on the deletion metric's
scoring: editing the metric reruns the evaluations only.

Cell -> pixel mapping: an ``(h, w)`` grid on an ``H x W`` image has integer row boundaries
``r_i = round(i * H / h)`` and column boundaries ``c_j = round(j * W / w)`` (round half up, in
exact integer arithmetic), so the cells tile the image exactly even when ``H``/``W`` are not
multiples of ``h``/``w``. When the processor cropped or padded (``view``,
:class:`lookright.models.geometry.ImageView`), the grid covers ``[x0, x1] x [y0, y1]`` of the
image instead: ``c_j = round((x0 + j (x1 - x0) / w) W)`` clipped to the image, pixels the grid
does not cover belong to no cell (never perturbed: the model does not see them), cells beyond
the image cover no pixel.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageFilter

from lookright.models.geometry import ImageView

__all__ = [
    "BASELINE_KINDS",
    "DEFAULT_BLUR_RADIUS",
    "BaselineKind",
    "cell_boundaries",
    "make_baseline",
    "perturb_image",
]

BaselineKind = Literal["blur", "mean", "zero"]
BASELINE_KINDS: tuple[str, ...] = ("blur", "mean", "zero")
DEFAULT_BLUR_RADIUS = 10.0


def cell_boundaries(n_pixels: int, n_cells: int) -> np.ndarray:
    """Integer boundaries ``round(i * n_pixels / n_cells)`` for ``i = 0..n_cells`` (half up)."""
    i = np.arange(n_cells + 1, dtype=np.int64)
    return (2 * i * n_pixels + n_cells) // (2 * n_cells)


def _cells_of_pixels(n_pixels: int, n_cells: int, lo: float, hi: float) -> np.ndarray:
    """Cell index of each pixel along one axis (-1: not covered by the grid)."""
    edges = np.floor((lo + np.arange(n_cells + 1) * (hi - lo) / n_cells) * n_pixels + 0.5)
    edges = np.clip(edges, 0, n_pixels).astype(np.int64)
    cells = np.searchsorted(edges, np.arange(n_pixels), side="right") - 1
    cells[(np.arange(n_pixels) < edges[0]) | (np.arange(n_pixels) >= edges[-1])] = -1
    return cells


def _pixel_mask(
    cell_mask: np.ndarray, height: int, width: int, view: ImageView | None = None
) -> np.ndarray:
    cell_mask = np.asarray(cell_mask, dtype=bool)
    if cell_mask.ndim != 2 or cell_mask.size == 0:
        raise ValueError(f"cell mask must be a non-empty 2-D array, got {cell_mask.shape}")
    h, w = cell_mask.shape
    if view is None or view.is_full:
        rows = np.repeat(np.arange(h), np.diff(cell_boundaries(height, h)))
        cols = np.repeat(np.arange(w), np.diff(cell_boundaries(width, w)))
        return cell_mask[rows[:, None], cols[None, :]]
    rows = _cells_of_pixels(height, h, view.y0, view.y1)
    cols = _cells_of_pixels(width, w, view.x0, view.x1)
    mask = cell_mask[np.maximum(rows, 0)[:, None], np.maximum(cols, 0)[None, :]]
    return mask & (rows >= 0)[:, None] & (cols >= 0)[None, :]


def perturb_image(
    image: np.ndarray,
    cell_mask: np.ndarray,
    baseline: np.ndarray,
    view: ImageView | None = None,
) -> np.ndarray:
    """Copy of ``image`` whose pixels in the masked grid cells come from ``baseline``.

    Args:
        image: ``H x W x C`` (or ``H x W``) array, typically uint8 RGB.
        cell_mask: boolean ``(h, w)`` grid mask; cell ``(i, j)`` covers rows
            ``[r_i, r_{i+1})`` and columns ``[c_j, c_{j+1})`` (:func:`cell_boundaries`).
        baseline: array of the image's shape (cast to the image's dtype).
        view: the part of the image the grid covers (module docstring); default all of it.
    """
    image = np.asarray(image)
    baseline = np.asarray(baseline)
    if baseline.shape != image.shape:
        raise ValueError(f"baseline shape {baseline.shape} != image shape {image.shape}")
    pixels = _pixel_mask(cell_mask, image.shape[0], image.shape[1], view)
    out = image.copy()
    out[pixels] = baseline[pixels].astype(image.dtype, copy=False)
    return out


def make_baseline(
    image: np.ndarray, kind: BaselineKind = "blur", blur_radius: float = DEFAULT_BLUR_RADIUS
) -> np.ndarray:
    """The "removed information" image used by deletion and insertion.

    Args:
        image: ``H x W x 3`` (or ``H x W``) uint8 image.
        kind: ``"blur"`` (default): Pillow ``ImageFilter.GaussianBlur(blur_radius)`` (radius is
            the Gaussian's standard deviation in pixels); ``"mean"``: every pixel set to the
            image's per-channel mean colour (rounded); ``"zero"``: black.
        blur_radius: see ``kind``.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if kind == "zero":
        return np.zeros_like(image)
    if kind == "mean":
        axes = (0, 1)
        mean = np.rint(image.reshape(image.shape[0], image.shape[1], -1).mean(axis=axes))
        return np.broadcast_to(
            mean.astype(np.uint8).reshape((1, 1) + image.shape[2:]), image.shape
        ).copy()
    if kind == "blur":
        pil = Image.fromarray(image)
        return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=blur_radius))).copy()
    raise ValueError(f"unknown baseline kind {kind!r} (expected 'blur', 'mean' or 'zero')")
