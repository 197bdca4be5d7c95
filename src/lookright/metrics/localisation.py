"""Localisation of a saliency map: Saliency-R1's alignment score, and map resizing.

Saliency-R1 (arXiv 2604.04500; docs/methods.md#alignment_score) scores how much of a visual saliency map lies inside the
evidence box(es)::

    score = (mass of the map inside the union of the boxes) / (total mass of the map)

lookright computes the inside mass by EXACT area overlap on the map's grid: cell ``(i, j)`` of
an ``(h, w)`` map covers ``[j*W/w, (j+1)*W/w] x [i*H/h, (i+1)*H/h]`` in pixels, its mass is
spread uniformly over that rectangle, and a normalised box ``[x1, y1, x2, y2]`` covers
``[x1*W, x2*W] x [y1*H, y2*H]`` (x by WIDTH, y by HEIGHT; the reference code scales ``y2`` by
the width, which is wrong on non-square images). Overlapping boxes are merged into their union
exactly (coordinate compression), so no area is counted twice.

The grid covers the part of the image the processor kept (:class:`ImageView`, e.g. LLaVA's
centre crop): every function takes the sample's ``view`` and maps boxes / pixels through it,
so a box is compared with the tokens that actually saw it. ``view=None`` is the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookright.models.geometry import ImageView

__all__ = ["alignment_score", "box_coverage", "map_on_image", "resize_map", "upsample_map"]


def resize_map(saliency_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a 2-D map to ``shape = (height, width)``.

    Uses Pillow's ``Image.resize(..., Image.BILINEAR)`` on a 32-bit float ("F") image: pixel
    centres are aligned (half-pixel convention, like ``align_corners=False``), edges are
    clamped, and when shrinking the filter support widens with the scale factor (an
    antialiased, area-like average). Values are computed in float32 and returned as float64.
    A map already of the requested shape is returned unchanged (as float64).
    """
    arr = np.asarray(saliency_map, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {arr.shape}")
    height, width = int(shape[0]), int(shape[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"target shape must be positive, got {shape}")
    if arr.shape == (height, width):
        return arr.copy()
    if arr.size == 0:
        raise ValueError("cannot resize an empty map")
    image = Image.fromarray(arr.astype(np.float32))
    resized = image.resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float64)


def map_on_image(
    saliency_map: np.ndarray, view: ImageView | None, shape: tuple[int, int]
) -> np.ndarray:
    """A grid map laid on the image, sampled at ``shape = (height, width)``.

    The map is resized bilinearly (:func:`resize_map`) onto the part of the image its grid
    covers (``view``); image areas the grid does not cover (cut by a crop) get 0, map cells
    beyond the image (padding) are dropped. A full view is exactly :func:`resize_map`. Other
    views are drawn on a canvas at least 512 px wide (sub-pixel placement of the view's
    edges) and then resized to ``shape``.
    """
    height, width = int(shape[0]), int(shape[1])
    if view is None or view.is_full:
        return resize_map(saliency_map, (height, width))
    scale = max(1, math.ceil(512 / max(height, width)))
    canvas_h, canvas_w = height * scale, width * scale
    left, top = round(view.x0 * canvas_w), round(view.y0 * canvas_h)
    right, bottom = round(view.x1 * canvas_w), round(view.y1 * canvas_h)
    placed = resize_map(saliency_map, (max(bottom - top, 1), max(right - left, 1)))
    canvas = np.zeros((canvas_h, canvas_w), dtype=np.float64)
    rows = slice(max(top, 0), min(bottom, canvas_h))
    cols = slice(max(left, 0), min(right, canvas_w))
    canvas[rows, cols] = placed[
        rows.start - top : rows.stop - top, cols.start - left : cols.stop - left
    ]
    return canvas if scale == 1 else resize_map(canvas, (height, width))


def upsample_map(
    saliency_map: np.ndarray, image_size: tuple[int, int], view: ImageView | None = None
) -> np.ndarray:
    """Bilinearly upsample a grid map to the image's pixels (for overlays).

    ``image_size`` is ``(width, height)`` like ``PIL.Image.size``; the result has shape
    ``(height, width)``; ``view`` places the grid on the image (:func:`map_on_image`). See
    :func:`resize_map` for the interpolation convention.
    """
    width, height = int(image_size[0]), int(image_size[1])
    return map_on_image(saliency_map, view, (height, width))


def _as_boxes(boxes: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be [x1, y1, x2, y2] rows, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("boxes contain non-finite coordinates")
    return arr


def box_coverage(
    grid_shape: tuple[int, int],
    boxes: Sequence[Sequence[float]] | np.ndarray,
    image_size: tuple[float, float] | None = None,
    view: ImageView | None = None,
) -> np.ndarray:
    """Fraction of each grid cell's area covered by the union of normalised boxes.

    Exact: the x axis is cut at every cell boundary ``j*W/w`` and every (clipped) box edge
    ``x*W``, the y axis likewise with ``H``; each resulting elementary rectangle lies in one
    cell and is either entirely inside the union of the boxes or entirely outside it, so the
    covered area of a cell is a sum of elementary areas. Boxes are clipped to the image;
    boxes with ``x2 <= x1`` or ``y2 <= y1`` cover nothing.

    Args:
        grid_shape: ``(h, w)`` of the map.
        boxes: normalised ``[x1, y1, x2, y2]`` boxes in ``[0, 1]``.
        image_size: ``(width, height)`` in pixels (default ``(1, 1)``: normalised units). The
            result does not depend on it (cells and boxes are fractions of the same image);
            it only expresses the computation in pixels.
        view: the part of the image the grid covers (default: all of it); boxes are mapped
            into the grid's coordinates first, parts outside the view cover nothing.

    Returns:
        ``(h, w)`` float array in ``[0, 1]``.
    """
    h, w = int(grid_shape[0]), int(grid_shape[1])
    width, height = (1.0, 1.0) if image_size is None else (float(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    arr = _as_boxes(boxes)
    if view is not None and len(arr):
        arr = view.to_grid(arr)
    coverage = np.zeros((h, w), dtype=np.float64)
    if h == 0 or w == 0 or len(arr) == 0:
        return coverage
    bx1 = np.clip(arr[:, 0], 0.0, 1.0) * width
    bx2 = np.clip(arr[:, 2], 0.0, 1.0) * width
    by1 = np.clip(arr[:, 1], 0.0, 1.0) * height
    by2 = np.clip(arr[:, 3], 0.0, 1.0) * height
    keep = (bx2 > bx1) & (by2 > by1)
    if not np.any(keep):
        return coverage
    bx1, bx2, by1, by2 = bx1[keep], bx2[keep], by1[keep], by2[keep]

    cell_x = np.arange(w + 1) * (width / w)
    cell_y = np.arange(h + 1) * (height / h)
    xs = np.unique(np.concatenate([cell_x, bx1, bx2]))
    ys = np.unique(np.concatenate([cell_y, by1, by2]))
    mid_x = (xs[:-1] + xs[1:]) / 2
    mid_y = (ys[:-1] + ys[1:]) / 2
    dx = np.diff(xs)
    dy = np.diff(ys)
    in_x = (mid_x[None, :] > bx1[:, None]) & (mid_x[None, :] < bx2[:, None])  # (B, nx)
    in_y = (mid_y[None, :] > by1[:, None]) & (mid_y[None, :] < by2[:, None])  # (B, ny)
    covered = np.any(in_y[:, :, None] & in_x[:, None, :], axis=0)  # (ny, nx)
    area = dy[:, None] * dx[None, :] * covered
    col = np.clip(np.searchsorted(cell_x, mid_x, side="right") - 1, 0, w - 1)
    row = np.clip(np.searchsorted(cell_y, mid_y, side="right") - 1, 0, h - 1)
    np.add.at(coverage, (row[:, None], col[None, :]), area)
    cell_area = (width / w) * (height / h)
    return np.clip(coverage / cell_area, 0.0, 1.0)


def alignment_score(
    saliency_map: np.ndarray,
    boxes: Sequence[Sequence[float]] | np.ndarray,
    image_size: tuple[float, float] | None = None,
    view: ImageView | None = None,
) -> float | None:
    """Saliency-R1 alignment score: share of the map's mass inside the union of the boxes.

    Args:
        saliency_map: ``(h, w)`` non-negative visual saliency map (post-ReLU, docs/methods.md#logit_decomposition
            section 1); negative entries are clipped to 0.
        boxes: normalised ``[x1, y1, x2, y2]`` boxes (x by width, y by height).
        image_size: ``(width, height)`` in pixels; see :func:`box_coverage` (the score does not
            depend on it).
        view: the part of the image the map's grid covers (the processor's crop/pad,
            :class:`ImageView`; default: the whole image).

    Returns:
        A float in ``[0, 1]``, or ``None`` (TRL then skips the reward, docs/methods.md#alignment_score)
        when there is no usable map or box: empty map, a NaN/inf entry, total mass 0, or no
        boxes. Degenerate boxes (zero area) give ``0.0``.
    """
    arr = np.asarray(saliency_map, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {arr.shape}")
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return None
    box_arr = _as_boxes(boxes)
    if len(box_arr) == 0:
        return None
    arr = np.maximum(arr, 0.0)
    total = float(arr.sum())
    if total <= 0.0:
        return None
    coverage = box_coverage(arr.shape, box_arr, image_size, view)
    return float(np.clip((arr * coverage).sum() / total, 0.0, 1.0))
