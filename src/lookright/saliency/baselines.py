"""Attention baselines of the faithfulness table (docs/methods.md#raw_attention, #rollout) and the random map.

* ``raw_attention``: attention of the rows predicting the completion tokens to the visual
  tokens, mean over layers and heads; per-token maps averaged (GLIMPSE Table 1, "Raw
  Attention").
* ``rollout``: attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in
  Transformers", eq. for rollout with residual): ``Ahat_l = 0.5 I + 0.5 mean_h A_l``,
  ``rollout = Ahat_L ... Ahat_1``; the row predicting a token, restricted to the visual
  tokens, is its map; per-token maps averaged. Only rows of the product are needed:
  ``r <- r Ahat_l`` from the top layer down (O(L S^2) per token instead of O(L S^3)).
* ``random``: a uniform random map per sample (seeded), the floor every method must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from lookright.saliency.base import DirectMethod, RowMethod, RowNeeds, RowPlan, register
from lookright.saliency.batch import SaliencyBatch
from lookright.saliency.plan import grid_maps, visual_values
from lookright.saliency.row_pass import RowPassResult
from lookright.saliency.types import SaliencyResult, finish_map, no_map


def _mean_token_result(
    name: str, batch: SaliencyBatch, b: int, per_token: np.ndarray
) -> SaliencyResult:
    sample = batch.samples[b]
    if per_token.shape[0] == 0:
        return no_map(name, sample.grid, "empty completion")
    return finish_map(
        name,
        sample.grid,
        per_token.mean(axis=0),
        token_maps=grid_maps(per_token, sample.grid),
        token_ids=batch.token_ids(b, sample.targets),
        token_positions=list(sample.targets),
    )


@register
@dataclass
class RawAttention(RowMethod):
    """Raw attention: mean over layers and heads of the predicting rows' visual attention."""

    name: ClassVar[str] = "raw_attention"

    def needs(self) -> RowNeeds:
        return RowNeeds(mean_attention=True)

    def from_rows(
        self, batch: SaliencyBatch, plan: RowPlan, rows: RowPassResult
    ) -> list[SaliencyResult]:
        results = []
        for b, sample in enumerate(batch.samples):
            n_tokens, n_visual = plan.target_counts[b], len(sample.visual)
            per_token = rows.mean_attention[b, :n_tokens, :n_visual].float().cpu().numpy()
            results.append(_mean_token_result(self.name, batch, b, per_token))
        return results


def rollout_rows(
    head_means: list[torch.Tensor], rows: torch.Tensor, residual: float = 0.5
) -> torch.Tensor:
    """Rows ``rows (B, K)`` of ``Ahat_L ... Ahat_1`` with ``Ahat = residual I + (1-residual) A``.

    ``head_means[l]``: ``(B, S, S)`` head-averaged attention of layer l. Returns ``(B, K, S)``.
    """
    length = head_means[0].shape[-1]
    state = torch.nn.functional.one_hot(rows, length).to(head_means[0].dtype)
    for attention in reversed(head_means):
        state = residual * state + (1.0 - residual) * state @ attention
    return state


@register
@dataclass
class Rollout(RowMethod):
    """Attention rollout (Abnar & Zuidema 2020) with residual ``0.5 I + 0.5 A``; ``residual`` option."""

    name: ClassVar[str] = "rollout"
    residual: float = 0.5

    def needs(self) -> RowNeeds:
        return RowNeeds(full_attention=True)

    def from_rows(
        self, batch: SaliencyBatch, plan: RowPlan, rows: RowPassResult
    ) -> list[SaliencyResult]:
        request = plan.request
        propagated = rollout_rows(rows.head_mean_attention, request.rows, self.residual)
        results = []
        for b in range(len(batch)):
            per_token = visual_values(propagated[b, : plan.target_counts[b]], batch, b)
            results.append(_mean_token_result(self.name, batch, b, per_token))
        return results


@register
@dataclass
class RandomMap(DirectMethod):
    """Uniform random map in [0, 1) per sample, from ``numpy.random.default_rng(seed + b)``.

    An empty completion gets no map, as with every other method (nothing was answered).
    """

    name: ClassVar[str] = "random"
    seed: int = 0

    def explain(self, batch: SaliencyBatch) -> list[SaliencyResult]:
        results = []
        for b, sample in enumerate(batch.samples):
            values = np.random.default_rng(self.seed + b).random(len(sample.visual))
            if not sample.targets:
                results.append(no_map(self.name, sample.grid, "empty completion"))
                continue
            results.append(finish_map(self.name, sample.grid, values))
        return results
