"""Statistics over seeds: the mean, its spread and its bootstrap interval.

``describe`` gives mean, sample std (ddof=1), n and the 95% percentile bootstrap interval of
the mean (numpy, rng seed 0, 2000 resamples); std and the interval are null for n < 2.
Used by the multi-seed summary (:mod:`lookright.report.experiment`) and the README tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
RNG_SEED = 0


def finite(values: Iterable[Any]) -> np.ndarray:
    """The finite numbers of ``values`` (nulls and NaN dropped) as a float array."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(kept, dtype=np.float64)


def bootstrap_ci(
    values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (rng seed 0); (None, None) when n < 2."""
    data = finite(values)
    if len(data) < 2:
        return None, None
    rng = np.random.default_rng(RNG_SEED)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def describe(values: Iterable[Any]) -> dict[str, Any]:
    """mean, std (ddof=1), n, ci_lo, ci_hi of the finite ``values`` (see the module doc)."""
    data = finite(values)
    n = len(data)
    lo, hi = bootstrap_ci(data)
    return {
        "mean": float(data.mean()) if n else None,
        "std": float(data.std(ddof=1)) if n >= 2 else None,
        "n": n,
        "ci_lo": lo,
        "ci_hi": hi,
    }
