"""Agreement of a saliency map with human attention (GLIMPSE's NSS and Spearman, VQA-HAT).

GLIMPSE evaluates maps against VQA-HAT human attention with

* NSS (normalised scanpath saliency): the mean of the z-scored model map over the human
  "fixations"; VQA-HAT maps are dense, so the fixation set here is the human map's pixels at
  or above a percentile (default 90th) of that map;
* Spearman's rank correlation between the two maps, flattened on one grid.

Both metrics work on the HUMAN map's grid: the model map (e.g. a 16x16 visual-token grid) is
resized to the human map's ``(height, width)`` with Pillow bilinear interpolation
(:func:`lookright.metrics.localisation.resize_map`; half-pixel centres, antialiased when
shrinking), laid on the part of the image its grid covers (``view``, e.g. LLaVA's centre
crop; image areas outside it get 0: the model never saw them). Undefined values (constant map, empty fixation set, NaN input) give NaN and a
:class:`MetricUndefinedWarning`, never an exception.

NSS follows pysaliency's definition (``pysaliency.metrics.NSS``): population standard deviation
(``ddof=0``) and the per-fixation values averaged, so the two agree on the same inputs.
"""

from __future__ import annotations

import warnings

import numpy as np

from lookright.metrics.agreement import rank_correlation
from lookright.metrics.localisation import map_on_image
from lookright.models.geometry import ImageView

__all__ = ["MetricUndefinedWarning", "fixation_mask", "nss", "spearman"]


class MetricUndefinedWarning(RuntimeWarning):
    """A metric is undefined for its inputs and was returned as NaN."""


def _undefined(message: str) -> float:
    warnings.warn(message, MetricUndefinedWarning, stacklevel=3)
    return float("nan")


def fixation_mask(human_map: np.ndarray, percentile: float = 90.0) -> np.ndarray:
    """Boolean "fixation" set of a dense human map: pixels at or above its ``percentile``.

    ``t = numpy.percentile(human_map, percentile)`` (linear interpolation); the set is
    ``human_map >= t`` minus the pixels equal to the map's minimum, so a binary map gives its
    positive pixels and a constant (e.g. all-zero) map gives an empty set.
    """
    human = np.asarray(human_map, dtype=np.float64)
    if human.ndim != 2:
        raise ValueError(f"expected a 2-D human map, got shape {human.shape}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    if human.size == 0 or not np.all(np.isfinite(human)):
        return np.zeros(human.shape, dtype=bool)
    threshold = np.percentile(human, percentile)
    return (human >= threshold) & (human > human.min())


def nss(
    saliency_map: np.ndarray,
    human_map: np.ndarray,
    percentile: float = 90.0,
    view: ImageView | None = None,
) -> float:
    """Normalised scanpath saliency of ``saliency_map`` against a dense human map (GLIMPSE).

    Steps: resize the saliency map to the human map's shape (bilinear), z-score it over all
    pixels (mean, population std), and average it over :func:`fixation_mask`.

    Returns NaN with a :class:`MetricUndefinedWarning` when the resized map has zero standard
    deviation (constant or all-zero map), contains NaN/inf, or the fixation set is empty.
    """
    human = np.asarray(human_map, dtype=np.float64)
    fixations = fixation_mask(human, percentile)
    if not fixations.any():
        return _undefined("NSS undefined: empty fixation set (constant or empty human map)")
    sal = np.asarray(saliency_map, dtype=np.float64)
    if sal.size == 0 or not np.all(np.isfinite(sal)):
        return _undefined("NSS undefined: saliency map is empty or not finite")
    if np.ptp(sal) == 0.0:  # checked before resizing: float32 interpolation may add 1-ulp noise
        return _undefined("NSS undefined: saliency map is constant (std 0)")
    resized = map_on_image(sal, view, human.shape)
    std = float(resized.std())
    if not std > 0.0:
        return _undefined("NSS undefined: resized saliency map is constant (std 0)")
    z = (resized - resized.mean()) / std
    return float(z[fixations].mean())


def spearman(
    saliency_map: np.ndarray, human_map: np.ndarray, view: ImageView | None = None
) -> float:
    """Spearman rank correlation between a saliency map and a human map (GLIMPSE).

    The saliency map is resized to the human map's shape (bilinear), both are flattened and
    rank-correlated (Pearson's r of the average ranks, as ``scipy.stats.spearmanr``;
    :func:`lookright.metrics.agreement.rank_correlation`). Returns NaN with a
    :class:`MetricUndefinedWarning` when either map is constant, empty, or not finite.
    """
    human = np.asarray(human_map, dtype=np.float64)
    sal = np.asarray(saliency_map, dtype=np.float64)
    if human.ndim != 2:
        raise ValueError(f"expected a 2-D human map, got shape {human.shape}")
    if human.size < 2 or sal.size == 0:
        return _undefined("Spearman undefined: empty map")
    if not (np.all(np.isfinite(sal)) and np.all(np.isfinite(human))):
        return _undefined("Spearman undefined: a map is not finite")
    if np.ptp(sal) == 0.0 or np.ptp(human) == 0.0:
        return _undefined("Spearman undefined: a map is constant")
    resized = map_on_image(sal, view, human.shape).ravel()
    flat = human.ravel()
    if np.ptp(resized) == 0.0:
        return _undefined("Spearman undefined: resized saliency map is constant")
    return rank_correlation(resized, flat)
