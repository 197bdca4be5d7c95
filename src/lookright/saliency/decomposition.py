"""Saliency-R1's maps: logit decomposition and CoT bottleneck backtracking.

Both come from the shared row pass (:mod:`row_pass`): one teacher-forced forward over
prompt + completion, attention rows recomputed only for the rows they need.

* ``logit_decomposition`` (Saliency-R1, "Logit Decomposition Saliency"; arXiv 2604.04500, docs/methods.md#logit_decomposition):
  per token y predicted at row i, ``c_p = sum_{l,h} A[l,h,i,p] e.(W_O^l[:,h] v_p^{l,h})`` with
  ``e = E_u[y] * g / rms(h_i^L)`` (final-norm scale frozen); the response map is
  ``ReLU(sum_tokens c)`` over the visual tokens (the reference's ReLU-after-sum).
* ``cot_bottleneck`` (Saliency-R1, "CoT Bottleneck Attention Backtracking"; arXiv 2604.04500,
  docs/methods.md#cot_bottleneck; section
  2): ``B[l,h,a,j] = sum_{t in T} A[l,h,q(a),t] A[l,h,t,j]`` (same layer, no renormalisation),
  ``c[a,j] = sum_{l,h} B[l,h,a,j] e_a.(W_O^l[:,h] v_j^{l,h})``, map ``ReLU(sum_a c[a,j])``.
  The second hop uses query row t (the hidden state the answer reads at key t). The
  Saliency-R1 reference uses row t-1 (the decoding step that GENERATED t, i.e. what was
  attended while choosing t); lookright follows the information flow instead: the value at
  key t that the answer reads is computed from row t's own attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lookright.saliency.base import RowMethod, RowNeeds, RowPlan, register, weighted_sum
from lookright.saliency.batch import SaliencyBatch
from lookright.saliency.plan import grid_maps
from lookright.saliency.row_pass import RowPassResult
from lookright.saliency.types import SaliencyResult, finish_map, no_map

SPANS = ("completion", "answer")


@register
@dataclass
class LogitDecomposition(RowMethod):
    """Saliency-R1 logit-decomposition saliency (direct contributions, frozen final norm).

    Options:
        span: which tokens' rows are summed into the response map: ``"completion"`` (default:
            every completion token but the end-of-turn) or ``"answer"`` (tokens after
            ``</think>``; no map when there is none).
        centered: subtract the summed map's mean over the visual tokens before the ReLU (see
            :class:`LogitDecompositionCentered`).
    Per-token maps are the signed contributions ``c`` (ReLU is applied only after the sum);
    ``token_scores`` is each token's total visual contribution ``sum_j c_j``.
    """

    name: ClassVar[str] = "logit_decomposition"
    span: str = "completion"
    centered: bool = False

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise ValueError(f"logit_decomposition span={self.span!r}; valid: {list(SPANS)}")

    def needs(self) -> RowNeeds:
        return RowNeeds(decompose=True)

    def from_rows(
        self, batch: SaliencyBatch, plan: RowPlan, rows: RowPassResult
    ) -> list[SaliencyResult]:
        return [self._sample(batch, plan, rows, b) for b in range(len(batch))]

    def _sample(self, batch, plan, rows, b) -> SaliencyResult:
        sample = batch.samples[b]
        n_tokens, n_visual = plan.target_counts[b], len(sample.visual)
        if n_tokens == 0:
            return no_map(self.name, sample.grid, "empty completion")
        per_token = rows.contributions[b, :n_tokens, :n_visual].detach().float().cpu().numpy()
        keep = self._kept_tokens(sample)
        common = {
            "token_maps": grid_maps(per_token, sample.grid),
            "token_ids": batch.token_ids(b, sample.targets),
            "token_positions": list(sample.targets),
            "token_scores": per_token.sum(axis=1),
            "extras": {"answer_positions": list(sample.answer or [])},
        }
        if keep is None:
            return no_map(self.name, sample.grid, sample.cot_reason or "no answer span", **common)
        summed = per_token[keep].sum(axis=0)
        if self.centered:
            summed = summed - summed.mean()
        return finish_map(self.name, sample.grid, np.maximum(summed, 0.0), **common)

    def weighted_map(self, result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
        """``ReLU(sum_t w_t c_t)`` (centred: minus its mean over the visual tokens first).

        The token maps are every completion token's; ``span="answer"`` keeps the answer's."""
        if self.span == "answer":
            answer = set(result.extras.get("answer_positions", []))
            weights = weights * np.asarray([p in answer for p in result.token_positions])
        summed = weighted_sum(result, weights)
        if self.centered:
            summed = summed - summed.mean()
        return np.maximum(summed, 0.0)

    def _kept_tokens(self, sample) -> list[int] | None:
        if self.span == "completion":
            return list(range(len(sample.targets)))
        if not sample.answer:
            return None
        first = sample.targets[0]
        return [a - first for a in sample.answer]


@register
@dataclass
class LogitDecompositionCentered(LogitDecomposition):
    """Logit decomposition minus what the AVERAGE visual token contributes (lookright variant).

    ``map = ReLU(S - mean_j S_j)`` with ``S = sum_tokens c`` (Saliency-R1's response map before
    its ReLU). Tokens that do not depend on the image (template words such as "It is at the")
    still receive large, nearly uniform direct contributions from the visual tokens, and summed
    over a chain of thought they bury the object: on the tiny shapes models the plain map
    scores near chance alignment while this one lands on the object (EXPERIMENTS.md). The
    subtraction is linear, so it equals centring every token's map before the sum; the
    per-token maps stay the signed, uncentred ``c``.
    """

    name: ClassVar[str] = "logit_decomposition_centered"
    centered: bool = True


@register
@dataclass
class CotBottleneck(RowMethod):
    """Saliency-R1 CoT bottleneck backtracking: vision -> thought -> answer (see module doc).

    No map ("no map", with the reason) for a completion without ``</think>`` (truncated), with
    an empty thought or an empty answer. ``token_maps`` are the per-answer-token ``c[a, :]``.
    """

    name: ClassVar[str] = "cot_bottleneck"

    def needs(self) -> RowNeeds:
        return RowNeeds(cot=True)

    def weighted_map(self, result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
        """``ReLU(sum_a w_a c[a, :])`` over the answer tokens."""
        return np.maximum(weighted_sum(result, weights), 0.0)

    def from_rows(
        self, batch: SaliencyBatch, plan: RowPlan, rows: RowPassResult
    ) -> list[SaliencyResult]:
        results = []
        for b, sample in enumerate(batch.samples):
            if sample.cot_reason is not None or rows.cot_contributions is None:
                results.append(no_map(self.name, sample.grid, sample.cot_reason or "no bottleneck"))
                continue
            n_answer, n_visual = len(sample.answer), len(sample.visual)
            per_token = (
                rows.cot_contributions[b, :n_answer, :n_visual].detach().float().cpu().numpy()
            )
            summed = np.maximum(per_token.sum(axis=0), 0.0)
            results.append(
                finish_map(
                    self.name,
                    sample.grid,
                    summed,
                    token_maps=grid_maps(per_token, sample.grid),
                    token_ids=batch.token_ids(b, sample.answer),
                    token_positions=list(sample.answer),
                    token_scores=per_token.sum(axis=1),
                )
            )
        return results


@register
@dataclass
class CotBottleneckGenerating(CotBottleneck):
    """The CoT bottleneck with the Saliency-R1 reference's second hop: row t-1 for key t.

    ``B[l,h,a,j] = sum_{t in T} A[l,h,q(a),t] * A[l,h,t-1,j]``: the image attention of the
    decoding step that GENERATED thought token t, rather than of the row at t. When the
    answer copies a word of the thought (the colour in "The square white."), the word's
    content came from the image through that generating step and the sampling of t; row t
    itself only predicts the token after it. On the tiny shapes models this variant is the
    one whose map lands on the object (EXPERIMENTS.md); ``cot_bottleneck`` keeps
    the definition in docs/methods.md#cot_bottleneck.
    """

    name: ClassVar[str] = "cot_bottleneck_generating"

    def needs(self) -> RowNeeds:
        return RowNeeds(cot=True, cot_generating=True)
