"""Deletion / insertion faithfulness (Saliency-R1's faithfulness table,
arXiv 2604.04500; docs/methods.md#deletion_insertion).

Protocol: rank the visual patches (cells of the saliency map's grid) by decreasing saliency;
*deletion* replaces the pixels of the top ``k`` % cells with a baseline image (default: a
Gaussian-blurred copy; options: per-channel mean colour, zeros); *insertion* starts from the
baseline and restores the top ``k`` % cells. The score of a perturbed image is::

    100 * p(original answer | perturbed) / p(original answer | original),
    p = exp(mean log-prob of the original answer tokens, teacher-forced)

Lower deletion and higher insertion scores mean a more faithful map. Saliency-R1 reports
Del 5/15/30 and Ins 30. The model scoring itself lives elsewhere: here it is a callable
``score_fn(image) -> mean log-prob``.

The perturbation of the pixels (the baselines, the cell -> pixel mapping through the
processor's view) is :mod:`lookright.metrics.perturbation`, shared with the occlusion map;
its names are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lookright.metrics.perturbation import (
    BASELINE_KINDS,
    DEFAULT_BLUR_RADIUS,
    BaselineKind,
    cell_boundaries,
    make_baseline,
    perturb_image,
)
from lookright.models.geometry import ImageView

__all__ = [
    "BASELINE_KINDS",
    "auc",
    "cell_boundaries",
    "curve",
    "deletion_image",
    "deletion_insertion_table",
    "evaluate_deletion_insertion",
    "insertion_image",
    "make_baseline",
    "n_cells_for_fraction",
    "patch_mask",
    "perturb_image",
    "rank_patches",
    "relative_score",
]


def rank_patches(saliency_map: np.ndarray) -> np.ndarray:
    """Flat (row-major) indices of the grid cells by decreasing saliency.

    Ties keep index order (stable sort); NaN entries rank last.
    """
    arr = np.asarray(saliency_map, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {arr.shape}")
    return np.argsort(-arr.ravel(), kind="stable")


def n_cells_for_fraction(n_cells: int, fraction: float) -> int:
    """Number of cells in the top ``fraction``: ``round(fraction * n_cells)``, rounding half up.

    A tolerance of 1e-9 absorbs float error (``0.15 * 10`` counts as 1.5 -> 2). Any positive
    fraction selects at least one cell; the count never exceeds ``n_cells``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if n_cells <= 0 or fraction == 0.0:
        return 0
    k = math.floor(fraction * n_cells + 0.5 + 1e-9)
    return int(min(max(k, 1), n_cells))


def patch_mask(grid_shape: tuple[int, int], ranked: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean ``(h, w)`` mask of the top ``fraction`` cells of a ranking.

    Args:
        grid_shape: ``(h, w)``.
        ranked: flat cell indices, most salient first (:func:`rank_patches`).
        fraction: share of cells to select; count as in :func:`n_cells_for_fraction`.
    """
    h, w = int(grid_shape[0]), int(grid_shape[1])
    ranked = np.asarray(ranked, dtype=np.int64).ravel()
    if len(ranked) != h * w:
        raise ValueError(f"ranking has {len(ranked)} entries for a {h}x{w} grid")
    k = n_cells_for_fraction(h * w, fraction)
    mask = np.zeros(h * w, dtype=bool)
    mask[ranked[:k]] = True
    return mask.reshape(h, w)


def _baseline_array(
    image: np.ndarray, baseline: np.ndarray | BaselineKind, blur_radius: float
) -> np.ndarray:
    if isinstance(baseline, str):
        return make_baseline(image, baseline, blur_radius)
    return np.asarray(baseline)


def deletion_image(
    image: np.ndarray,
    saliency_map: np.ndarray,
    fraction: float,
    baseline: np.ndarray | BaselineKind = "blur",
    blur_radius: float = DEFAULT_BLUR_RADIUS,
    view: ImageView | None = None,
) -> np.ndarray:
    """``image`` with its top-``fraction`` salient cells replaced by the baseline."""
    mask = patch_mask(np.shape(saliency_map), rank_patches(saliency_map), fraction)
    return perturb_image(image, mask, _baseline_array(image, baseline, blur_radius), view)


def insertion_image(
    image: np.ndarray,
    saliency_map: np.ndarray,
    fraction: float,
    baseline: np.ndarray | BaselineKind = "blur",
    blur_radius: float = DEFAULT_BLUR_RADIUS,
    view: ImageView | None = None,
) -> np.ndarray:
    """The baseline with the top-``fraction`` salient cells restored from ``image`` (pixels the
    grid does not cover keep the baseline)."""
    image = np.asarray(image)
    base = _baseline_array(image, baseline, blur_radius).astype(image.dtype, copy=False)
    mask = patch_mask(np.shape(saliency_map), rank_patches(saliency_map), fraction)
    return perturb_image(base, mask, image, view)


def relative_score(logp_perturbed_mean: float, logp_original_mean: float) -> float:
    """``100 * exp(mean logp | perturbed) / exp(mean logp | original)`` (Saliency-R1).

    Computed as ``100 * exp(difference)`` so very negative log-probs do not underflow.
    """
    diff = float(logp_perturbed_mean) - float(logp_original_mean)
    with np.errstate(over="ignore"):
        return float(100.0 * np.exp(diff))


def curve(fractions: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A deletion/insertion curve: ``(fractions, scores)`` sorted by fraction.

    Raises ``ValueError`` on length mismatch, an empty curve or repeated fractions.
    """
    x = np.asarray(fractions, dtype=np.float64).ravel()
    y = np.asarray(scores, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{len(x)} fractions but {len(y)} scores")
    if x.size == 0:
        raise ValueError("empty curve")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise ValueError("repeated fractions in curve")
    return x, y


def auc(fractions: Sequence[float], scores: Sequence[float]) -> float:
    """Area under the curve by the trapezoid rule, divided by the fraction span.

    The result is the curve's mean height (same units as the scores, e.g. 0..100); a single
    point returns its score.
    """
    x, y = curve(fractions, scores)
    if x.size == 1:
        return float(y[0])
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def _column_name(kind: str, fraction: float) -> str:
    prefix = {"deletion": "Del", "insertion": "Ins"}.get(kind)
    if prefix is None:
        raise ValueError(f"unknown kind {kind!r} (expected 'deletion' or 'insertion')")
    return f"{prefix}{float(fraction) * 100:.4g}"


def deletion_insertion_table(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate per-image records into Saliency-R1's table: one row per method.

    Args:
        records: dicts with ``method``, ``kind`` ("deletion"/"insertion"), ``fraction`` and
            ``score`` (e.g. from :func:`evaluate_deletion_insertion` plus a ``method`` key).

    Returns:
        Rows ``{"method": m, "Del5": mean, "Del15": ..., "Ins30": ..., "n": count}`` in order
        of the methods' first appearance. Columns are every (kind, fraction) seen in any
        record, deletions then insertions, by increasing fraction, named ``Del``/``Ins`` +
        percentage (``0.05`` -> ``Del5``); a method lacking a column gets NaN. ``n`` is the
        largest number of records behind one of the method's cells. Means are plain means, so
        a NaN score makes its cell NaN.
    """
    sums: dict[str, dict[tuple[str, float], list[float]]] = {}
    columns: set[tuple[str, float]] = set()
    for rec in records:
        key = (str(rec["kind"]), round(float(rec["fraction"]), 9))
        _column_name(*key)
        columns.add(key)
        sums.setdefault(str(rec["method"]), {}).setdefault(key, []).append(float(rec["score"]))
    order = sorted(columns, key=lambda k: (k[0] != "deletion", k[1]))
    rows: list[dict[str, Any]] = []
    for method, cells in sums.items():
        row: dict[str, Any] = {"method": method}
        for key in order:
            values = cells.get(key)
            row[_column_name(*key)] = float(np.mean(values)) if values else float("nan")
        row["n"] = max(len(v) for v in cells.values())
        rows.append(row)
    return rows


def evaluate_deletion_insertion(
    image: np.ndarray,
    saliency_map: np.ndarray,
    score_fn: Callable[[np.ndarray], float],
    fractions: Sequence[float] = (0.05, 0.15, 0.30),
    insertion_fractions: Sequence[float] = (0.30,),
    baseline: np.ndarray | BaselineKind = "blur",
    blur_radius: float = DEFAULT_BLUR_RADIUS,
    method: str | None = None,
    view: ImageView | None = None,
) -> list[dict[str, Any]]:
    """Deletion and insertion scores of one image / map pair.

    Args:
        image: ``H x W x 3`` uint8 image.
        saliency_map: ``(h, w)`` map over the visual grid.
        score_fn: maps an image to the mean teacher-forced log-prob of the ORIGINAL answer.
            Called once on the original image and once per perturbed image.
        fractions: deletion fractions (Saliency-R1: 5/15/30 %).
        insertion_fractions: insertion fractions (Saliency-R1: 30 %).
        baseline: baseline kind or a precomputed baseline image.
        blur_radius: Gaussian radius for ``baseline="blur"``.
        method: optional method name copied into every record.
        view: the part of the image the map's grid covers (processor crop/pad).

    Returns:
        One record per perturbation: ``kind``, ``fraction``, ``score``
        (:func:`relative_score`), ``logp`` and ``logp_original`` (+ ``method`` if given).
    """
    image = np.asarray(image)
    base = _baseline_array(image, baseline, blur_radius)
    logp_original = float(score_fn(image))
    ranked = rank_patches(saliency_map)
    grid = np.shape(saliency_map)
    records: list[dict[str, Any]] = []
    jobs = [("deletion", f) for f in fractions] + [("insertion", f) for f in insertion_fractions]
    for kind, fraction in jobs:
        mask = patch_mask(grid, ranked, fraction)
        if kind == "deletion":
            perturbed = perturb_image(image, mask, base, view)
        else:
            perturbed = perturb_image(base.astype(image.dtype, copy=False), mask, image, view)
        logp = float(score_fn(perturbed))
        record: dict[str, Any] = {
            "kind": kind,
            "fraction": float(fraction),
            "score": relative_score(logp, logp_original),
            "logp": logp,
            "logp_original": logp_original,
        }
        if method is not None:
            record["method"] = method
        records.append(record)
    return records
