"""Agreement of a saliency map with the occlusion reference (docs/methods.md#occlusion_agreement).

Both maps live on the same visual-token grid (occlusion is computed per grid cell), so they
are compared cell by cell, with no resizing: Pearson's r of the values and Spearman's rho
(Pearson's r of the average ranks, ``scipy.stats.spearmanr``). Per sample; the stage averages
them over samples. Undefined (``None``) when either map is missing, not finite, of another
shape, or constant (a ReLU'd map that is zero everywhere but one cell is not constant).
"""

from __future__ import annotations

import numpy as np

__all__ = ["map_agreement", "rank_correlation"]


def map_agreement(
    saliency_map: np.ndarray | None, reference: np.ndarray | None
) -> dict[str, float | None]:
    """``{"pearson": r, "spearman": rho}`` of two same-grid maps (``None`` where undefined)."""
    undefined: dict[str, float | None] = {"pearson": None, "spearman": None}
    if saliency_map is None or reference is None:
        return undefined
    a = np.asarray(saliency_map, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        return undefined
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or np.ptp(a) == 0 or np.ptp(b) == 0:
        return undefined
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": rank_correlation(a, b)}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two non-constant 1-D arrays: Pearson's r of their average ranks.

    Equal to ``scipy.stats.spearmanr(a, b).statistic`` (tested) at a fraction of its
    per-call overhead, which dominates on maps of a few hundred cells scored thousands of
    times per evaluation. (scipy loads on the first call: a stage's start-up does not pay it.)
    """
    from scipy.stats import rankdata

    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])
