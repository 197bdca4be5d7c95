"""Typed results shared by every saliency method.

A :class:`SaliencyResult` is what one method says about one (image, prompt, completion):
per-token maps over the model's visual-token grid ``(h, w)``, the response-level map, and
(GLIMPSE only) the saliency of each prompt token. A method that cannot produce a map for a
sample (a truncated completion without ``</think>``, an empty answer, a map that sums to 0)
returns a result whose ``response_map`` is ``None`` and whose ``reason`` says why; it never
raises for such a sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookright.models.geometry import FULL_VIEW, ImageView


@dataclass
class SaliencyResult:
    """One method's explanation of one sample.

    Attributes:
        method: registry name of the method.
        grid: ``(h, w)`` of the visual-token lattice the maps live on (Qwen: after the 2x2
            merge; LLaVA: patch grid without CLS).
        response_map: ``(h, w)`` float32 response-level map, or ``None`` ("no map").
        token_maps: ``(T, h, w)`` float32 maps of the explained tokens (row ``k`` explains
            ``token_ids[k]``), or ``None`` when the method defines no per-token map.
        token_ids: ids of the explained completion tokens.
        token_positions: their sequence positions (the row predicting token ``k`` is
            ``token_positions[k] - 1``).
        token_scores: one scalar per explained token where the method defines one
            (``attention_gradient``: LVLMs-Saliency token score; ``glimpse``: visual-map weight).
        prompt_saliency: ``(P,)`` saliency of the prompt tokens (GLIMPSE's prompt map).
        prompt_token_ids: ids of those prompt tokens.
        reason: why ``response_map`` is ``None``.
        extras: method-specific diagnostics (JSON-serialisable scalars/lists).
        view: the part of the image the grid covers (the processor's crop/pad; set by
            :func:`lookright.saliency.api.run_methods` from the sample's processor geometry).
    """

    method: str
    grid: tuple[int, int]
    response_map: np.ndarray | None
    token_maps: np.ndarray | None = None
    token_ids: list[int] = field(default_factory=list)
    token_positions: list[int] = field(default_factory=list)
    token_scores: np.ndarray | None = None
    prompt_saliency: np.ndarray | None = None
    prompt_token_ids: list[int] | None = None
    reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    view: ImageView = FULL_VIEW

    @property
    def has_map(self) -> bool:
        """True when there is a usable response-level map (finite, non-empty, mass > 0)."""
        m = self.response_map
        return m is not None and m.size > 0 and bool(np.isfinite(m).all()) and float(m.sum()) > 0

    def upsampled(self, image_size: tuple[int, int]) -> np.ndarray | None:
        """The response map on the image's ``image_size = (width, height)`` pixels (bilinear,
        placed by :attr:`view`; pixels the grid does not cover are 0)."""
        from lookright.metrics.localisation import upsample_map

        if self.response_map is None:
            return None
        return upsample_map(self.response_map, image_size, self.view)


def no_map(method: str, grid: tuple[int, int], reason: str, **kwargs: Any) -> SaliencyResult:
    """A result that carries no response-level map, with the reason."""
    return SaliencyResult(method=method, grid=grid, response_map=None, reason=reason, **kwargs)


def finish_map(
    method: str, grid: tuple[int, int], values: np.ndarray, **kwargs: Any
) -> SaliencyResult:
    """A result from a flat response map; a map that is empty, non-finite or sums to 0 -> no map."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    h, w = grid
    if flat.size != h * w:
        raise ValueError(f"{method}: map of {flat.size} values does not fit grid {grid}")
    if flat.size == 0 or not np.isfinite(flat).all():
        return no_map(method, grid, "map is empty or not finite", **kwargs)
    if float(np.abs(flat).sum()) == 0.0:
        return no_map(method, grid, "map sums to 0", **kwargs)
    return SaliencyResult(method=method, grid=grid, response_map=flat.reshape(h, w), **kwargs)
