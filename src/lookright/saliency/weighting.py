"""Token weighting: the response map as a weighted sum over the completion's tokens
(docs/methods.md#token_weighting).

Every per-token method builds its response map from its token maps with its own rule
(:meth:`lookright.saliency.base.SaliencyMethod.weighted_map`: a mean, a ReLU of a sum,
GLIMPSE's confidence x prompt-alignment weights). A weighting multiplies token t's term by
``w_t``:

* ``uniform``: ``w_t = 1``, the papers' choice: the method's own map, unchanged;
* ``answer``: ``w_t = 1`` for the tokens after ``</think>``, 0 for the thought (no map
  without an answer span);
* ``evidence`` (lookright's extension, not a paper's): ``w_t = max_j c_tj - mean_j c_tj``
  clipped at 0, from the logit decomposition's per-token direct visual contributions ``c_t``
  (Saliency-R1, arXiv 2604.04500, eq. of the logit decomposition): how much more the token's
  best visual cell adds to its logit than the average cell. A template token that reads the
  image evenly (or not at all) gets ~0; a token whose logit comes from one region gets the
  excess of that region. It needs no extra pass (it reads the ``logit_decomposition`` result
  of the same row pass);
* ``occlusion``: ``w_t = max(0, visual dependence_t)``, the occlusion drop of the token's best
  cell (:mod:`lookright.saliency.occlusion`): the oracle, for analysis (it costs one forward
  per cell).

Weights are matched to a result's tokens by sequence position, so a method that explains only
the answer tokens (``cot_bottleneck``) takes the weights of those tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from lookright.saliency.types import SaliencyResult, finish_map, no_map

if TYPE_CHECKING:  # a light module (no torch): the config section imports its names
    from lookright.saliency.batch import SampleTokens

WEIGHTINGS: tuple[str, ...] = ("uniform", "answer", "evidence", "occlusion")
# the method whose result each data-driven weighting reads
SIGNAL_METHOD = {"evidence": "logit_decomposition", "occlusion": "occlusion"}


def variant_name(method: str, weighting: str) -> str:
    """``tmme`` for the uniform weighting (the method itself), ``tmme.answer`` otherwise."""
    return method if weighting == "uniform" else f"{method}.{weighting}"


def evidence_weights(decomposition: SaliencyResult) -> dict[int, float]:
    """``{position: w_t}`` of the ``evidence`` weighting from a logit-decomposition result."""
    if decomposition.token_maps is None:
        return {}
    flat = decomposition.token_maps.reshape(len(decomposition.token_maps), -1).astype(np.float64)
    excess = np.maximum(flat.max(axis=1) - flat.mean(axis=1), 0.0)
    return dict(zip(decomposition.token_positions, excess.tolist(), strict=True))


def occlusion_weights(occlusion: SaliencyResult) -> dict[int, float]:
    """``{position: w_t}`` of the ``occlusion`` weighting: each token's best-cell drop, >= 0."""
    if occlusion.token_scores is None:
        return {}
    values = np.maximum(np.asarray(occlusion.token_scores, dtype=np.float64), 0.0)
    return dict(zip(occlusion.token_positions, values.tolist(), strict=True))


def signal_weights(weighting: str, signal: SaliencyResult | None) -> dict[int, float] | None:
    """The per-position weights of a data-driven weighting, from its signal method's result."""
    if signal is None or signal.token_maps is None:  # not run, or no map for this sample
        if weighting in SIGNAL_METHOD:
            return None
    elif weighting == "evidence":
        return evidence_weights(signal)
    elif weighting == "occlusion":
        return occlusion_weights(signal)
    raise ValueError(f"{weighting!r} has no signal; valid: {sorted(SIGNAL_METHOD)}")


def token_weights(
    weighting: str,
    result: SaliencyResult,
    sample: SampleTokens,
    signal: Mapping[int, float] | None = None,
) -> tuple[np.ndarray | None, str | None]:
    """``(w, None)`` for ``result``'s tokens, or ``(None, reason)`` when undefined."""
    positions = result.token_positions
    if weighting == "uniform":
        return np.ones(len(positions)), None
    if weighting == "answer":
        answer = set(sample.answer or [])
        if not answer:
            return None, sample.cot_reason or "no answer span"
        return np.asarray([1.0 if p in answer else 0.0 for p in positions]), None
    if weighting in SIGNAL_METHOD:
        if signal is None:
            return None, f"no {SIGNAL_METHOD[weighting]} result for the {weighting} weighting"
        return np.asarray([float(signal.get(p, 0.0)) for p in positions]), None
    raise ValueError(f"unknown token weighting {weighting!r}; valid: {list(WEIGHTINGS)}")


def reweighted(
    method,
    result: SaliencyResult,
    weighting: str,
    sample: SampleTokens,
    signal: Mapping[int, float] | None = None,
) -> SaliencyResult:
    """``result``'s response map rebuilt with ``weighting`` (named :func:`variant_name`).

    ``method`` is the instance that made ``result`` (its :meth:`weighted_map` rule). A result
    without token maps, without a map, or whose weights are all 0 gives "no map".
    """
    name = variant_name(result.method, weighting)
    if result.token_maps is None or len(result.token_maps) == 0:
        return no_map(name, result.grid, result.reason or "no token maps", view=result.view)
    weights, reason = token_weights(weighting, result, sample, signal)
    if weights is None:
        return no_map(name, result.grid, reason, view=result.view)
    if not np.any(weights > 0):
        return no_map(name, result.grid, f"every {weighting} token weight is 0", view=result.view)
    values = method.weighted_map(result, weights)
    return finish_map(name, result.grid, values, view=result.view)
