"""Gradient-based maps: LVLMs-Saliency, GLIMPSE, TMME and Grad-CAM.

All share one differentiable forward and per-token gradients computed in batched backward
calls (:mod:`gradient_pass`). Notation: for a completion token t at position i, ``q(t) = i-1``
is the row that predicts it; ``A[l]`` is ``(B, H, S, S)``; ``g[l] = dZ_t/dA[l]``.

Relevance propagation ``R = I; R <- R + M_l R`` (l = 1..L) only ever needs the row ``q(t)`` of
the final R: ``e_q^T (I + M_L) ... (I + M_1)``, computed as ``r <- r + r M_l`` from the top layer
down, O(L S^2) per token instead of O(L S^3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from lookright.saliency.attention_math import work_dtype
from lookright.saliency.base import (
    GradientMethod,
    GradientReducer,
    GradientTargets,
    register,
    weighted_sum,
)
from lookright.saliency.batch import SaliencyBatch
from lookright.saliency.gradient_pass import GradientForward
from lookright.saliency.plan import grid_maps, visual_values
from lookright.saliency.types import SaliencyResult, finish_map, no_map

TINY = 1e-12


def predicting_rows(tensor: torch.Tensor, rows: torch.Tensor, per_token: bool) -> torch.Tensor:
    """Pick, for token j of the chunk, its predicting row.

    ``tensor``: ``(c, B, H, S, S)`` if ``per_token`` (gradients) else ``(B, H, S, S)``;
    ``rows``: ``(B, c)``. Returns ``(c, B, H, S)``.
    """
    count, batch = rows.shape[1], rows.shape[0]
    chunk_index = torch.arange(count, device=rows.device)[:, None].expand(count, batch)
    batch_index = torch.arange(batch, device=rows.device)[None, :].expand(count, batch)
    row_index = rows.T
    if per_token:
        return tensor[chunk_index, batch_index, :, row_index, :]
    return tensor[batch_index, :, row_index, :]


def propagate_rows(
    start_rows: torch.Tensor, matrices: list[torch.Tensor], weights: torch.Tensor | None
) -> torch.Tensor:
    """Row ``q`` of ``prod_{l=L..1} (I + w_l M_l)``: ``r <- r + w_l r M_l`` from the top layer down.

    ``start_rows (c, B)`` rows q; ``matrices[l]`` ``(c, B, S, S)``; ``weights (L, c, B)`` or None
    (all 1). Returns ``(c, B, S)``.
    """
    length = matrices[0].shape[-1]
    state = torch.nn.functional.one_hot(start_rows, length).to(matrices[0].dtype)
    for layer in reversed(range(len(matrices))):
        step = torch.einsum("cbs,cbst->cbt", state, matrices[layer])
        state = state + (step if weights is None else weights[layer][..., None] * step)
    return state


def _layer_indices(layers: list[int] | None, count: int) -> list[int]:
    if layers is None:
        return list(range(count))
    if not all(-count <= layer < count for layer in layers):
        raise ValueError(f"layers {layers} out of range for a model with {count} decoder layers")
    return sorted({layer % count for layer in layers})


class _TokenCollector(GradientReducer):
    """Collects one ``(B, S)`` vector per token (and optionally a scalar) over the chunks."""

    def __init__(self, method: GradientMethod, batch: SaliencyBatch, targets: GradientTargets):
        self.method, self.batch, self.targets = method, batch, targets
        count = targets.positions.shape[1]
        self.vectors: torch.Tensor | None = None
        self.count = count

    def _store(self, tokens: slice, vectors: torch.Tensor) -> None:
        """``vectors (c, B, S)`` for the chunk's tokens."""
        if self.vectors is None:
            shape = (self.count, *vectors.shape[1:])
            self.vectors = torch.zeros(shape, dtype=vectors.dtype, device=vectors.device)
        self.vectors[tokens] = vectors.detach()

    def _per_token_visual(self, b: int) -> np.ndarray:
        n_tokens = len(self.batch.samples[b].targets)
        if self.vectors is None or n_tokens == 0:
            return np.zeros((0, len(self.batch.samples[b].visual)), dtype=np.float32)
        return visual_values(self.vectors[:n_tokens, b], self.batch, b)

    def _mean_result(self, b: int, **kwargs) -> SaliencyResult:
        sample = self.batch.samples[b]
        per_token = self._per_token_visual(b)
        if per_token.shape[0] == 0:
            return no_map(self.method.name, sample.grid, "empty completion")
        return finish_map(
            self.method.name,
            sample.grid,
            per_token.mean(axis=0),
            token_maps=grid_maps(per_token, sample.grid),
            token_ids=self.batch.token_ids(b, sample.targets),
            token_positions=list(sample.targets),
            **kwargs,
        )


# -- LVLMs-Saliency -----------------------------------------------------------------------


class _AttentionGradientReducer(_TokenCollector):
    def __init__(self, method, batch, targets, forward: GradientForward):
        super().__init__(method, batch, targets)
        self.attentions = forward.attentions
        self.layers = _layer_indices(method.layers, len(forward.attentions))

    def update(self, tokens, attention_grads, hidden_grad) -> None:
        rows = self.targets.rows[:, tokens]
        total = None
        for layer in self.layers:
            probs = predicting_rows(self.attentions[layer].detach(), rows, per_token=False)
            grads = predicting_rows(attention_grads[layer], rows, per_token=True)
            saliency = (probs * grads).abs().mean(dim=2)  # tril: keys after q(t) have A = 0
            saliency = saliency / saliency.norm(dim=-1, keepdim=True).clamp_min(TINY)
            total = saliency if total is None else total + saliency
        self._store(tokens, total / len(self.layers))

    def finish(self) -> list[SaliencyResult]:
        results = []
        for b, sample in enumerate(self.batch.samples):
            scores = self._token_scores(b, sample)
            results.append(self._mean_result(b, token_scores=scores))
        return results

    def _token_scores(self, b: int, sample) -> np.ndarray:
        """Mean over J = question tokens + completion tokens before t (LVLMs-Saliency S(c))."""
        scores = []
        first = sample.targets[0] if sample.targets else 0
        for k, position in enumerate(sample.targets):
            keys = list(sample.prompt_text) + list(range(first, position))
            row = self.vectors[k, b, keys] if self.vectors is not None else torch.zeros(1)
            scores.append(float(row.mean()) if keys else 0.0)
        return np.asarray(scores, dtype=np.float32)


@register
@dataclass
class AttentionGradient(GradientMethod):
    """LVLMs-Saliency: ``S[l,h] = tril(|A[l,h] * dL/dA[l,h]|)``, ``L = -log p(y)``.

    ("Hallucination Begins Where Saliency Drops", eq. for S and S-bar.) The gradient of each
    token's loss is taken at the row that PREDICTS it (row q(t) = i-1) and that same row is
    read: the public reference computes L at one row and reads another, which gives all-zero
    gradients. Layer map: mean over heads, each row L2-normalised over keys; token map: the
    predicting row, averaged over ``layers`` (None = all decoder layers; the reference uses
    [6, 7, 8] of LLaVA-1.5-7B's 32); response map: mean of the token maps over the visual keys.
    ``token_scores``: LVLMs-Saliency's S(t), the mean of the token map over the question
    tokens and the completion tokens generated before t.
    """

    name: ClassVar[str] = "attention_gradient"
    objective: ClassVar[str] = "nll"
    layers: list[int] | None = None
    chunk: int = 16
    batched: bool = True

    def reducer(self, batch, targets, forward) -> GradientReducer:
        return _AttentionGradientReducer(self, batch, targets, forward)


# -- GLIMPSE ----------------------------------------------------------------------------------


def glimpse_head_fusion(
    probs: torch.Tensor,
    grads: torch.Tensor,
    head_temperature: float,
    key_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GLIMPSE eqs. 5-8 for one layer: ``G = A * ReLU(grad)``, head weights, fused matrix.

    ``probs (B, H, S, S)``, ``grads (c, B, H, S, S)``, ``key_mask (B, S)`` (1 = real token,
    the batch's attention mask). Head weight ``w_h = softmax_h(sum G[h] / sum ReLU(grad[h]) /
    tau_h)`` (eq. 6), both sums over the keys of real tokens: at a padding key A is 0 but
    dz/dA is not, so summing it would make a sample's map depend on how much padding its
    batch-mates impose. Fused ``sum_h w_h G[h]`` (eq. 8) row-normalised (rows without mass
    stay 0). Returns (row-normalised fused ``(c, B, S, S)``, its L1 norm before normalisation
    ``(c, B)``, the layer's gradient evidence of eq. 9).
    """
    positive = grads.clamp_min(0)
    if key_mask is not None:
        positive = positive * key_mask.to(positive.dtype)[None, :, None, None, :]
    weighted = probs[None] * positive
    score = weighted.sum(dim=(-1, -2)) / positive.sum(dim=(-1, -2)).clamp_min(TINY)
    head_weights = torch.softmax(score / head_temperature, dim=-1)
    fused = (head_weights[..., None, None] * weighted).sum(dim=2)
    layer_mass = fused.abs().sum(dim=(-1, -2))
    normalised = fused / fused.sum(dim=-1, keepdim=True).clamp_min(TINY)
    return normalised, layer_mass


def glimpse_layer_weights(
    layer_mass: torch.Tensor, depth_temperature: float, use_depth: bool = True
) -> torch.Tensor:
    """GLIMPSE eqs. 9-11: gradient evidence x depth prior, renormalised over layers.

    ``layer_mass (L, c, B)`` -> weights ``(L, c, B)``. Depth prior (lookright's reading of eq.
    10, whose formula the extracted paper lost): ``d_l = softmax_l((l / L) / tau_d)``, l = 1..L,
    favouring deep layers (tau_d = 0.2 by default, as in the paper's best configuration).
    """
    count = layer_mass.shape[0]
    evidence = layer_mass / layer_mass.sum(dim=0, keepdim=True).clamp_min(TINY)
    if not use_depth:
        return evidence
    depth = torch.arange(1, count + 1, dtype=layer_mass.dtype, device=layer_mass.device) / count
    prior = torch.softmax(depth / depth_temperature, dim=0)
    combined = evidence * prior[:, None, None]
    return combined / combined.sum(dim=0, keepdim=True).clamp_min(TINY)


class _GlimpseReducer(_TokenCollector):
    def __init__(self, method, batch, targets, forward: GradientForward):
        super().__init__(method, batch, targets)
        self.attentions = forward.attentions
        probabilities = torch.softmax(forward.logits.detach(), dim=-1)
        self.confidence = torch.gather(probabilities, 2, targets.token_ids[..., None])[..., 0]

    def update(self, tokens, attention_grads, hidden_grad) -> None:
        method = self.method
        fused, masses = [], []
        key_mask = self.batch.attention_mask
        for probs, grads in zip(self.attentions, attention_grads, strict=True):
            matrix, mass = glimpse_head_fusion(
                probs.detach(), grads, method.head_temperature, key_mask
            )
            fused.append(matrix)
            masses.append(mass)
        weights = glimpse_layer_weights(
            torch.stack(masses), method.depth_temperature, method.depth_weighting
        )
        rows = self.targets.rows[:, tokens].T
        self._store(tokens, propagate_rows(rows, fused, weights))

    def finish(self) -> list[SaliencyResult]:
        return [self._sample(b) for b in range(len(self.batch))]

    def _sample(self, b: int) -> SaliencyResult:
        sample, name = self.batch.samples[b], self.method.name
        n_tokens = len(sample.targets)
        if n_tokens == 0 or self.vectors is None:
            return no_map(name, sample.grid, "empty completion")
        relevance = self.vectors[:n_tokens, b]  # (T, S)
        prompt_alignment = relevance[:, sample.prompt_text].sum(dim=1)
        visual_alignment = relevance[:, sample.visual].sum(dim=1)
        confidence = self.confidence[b, :n_tokens].to(relevance.dtype)
        ones = torch.ones_like(confidence)
        visual_weight = (confidence if self.method.confidence_weighting else ones) * (
            prompt_alignment if self.method.prompt_weighting else ones
        )
        prompt_weight = (
            confidence if self.method.confidence_weighting else ones
        ) * visual_alignment
        per_token = visual_values(relevance, self.batch, b)
        holistic = (visual_weight[:, None] * relevance[:, sample.visual]).sum(dim=0)
        prompt_map = (prompt_weight[:, None] * relevance[:, sample.prompt_text]).sum(dim=0)
        return finish_map(
            name,
            sample.grid,
            holistic.float().cpu().numpy(),
            token_maps=grid_maps(per_token, sample.grid),
            token_ids=self.batch.token_ids(b, sample.targets),
            token_positions=list(sample.targets),
            token_scores=visual_weight.float().cpu().numpy(),
            prompt_saliency=prompt_map.float().cpu().numpy(),
            prompt_token_ids=self.batch.token_ids(b, sample.prompt_text),
            extras={
                "prompt_alignment": prompt_alignment.tolist(),
                "visual_alignment": visual_alignment.tolist(),
                "confidence": confidence.tolist(),
            },
        )


@register
@dataclass
class Glimpse(GradientMethod):
    """GLIMPSE (Gradient-Layer Importance Mapping for Prompted Visual Saliency Explanation).

    Per token t (gradient of its logit z_t, eqs. 5-19): head-weighted gradient-attention per
    layer (``head_temperature`` tau_h = 0.5), layer weights = gradient evidence x depth prior
    (``depth_temperature`` 0.2), additive propagation ``R <- R + w_l Abar_l R`` from ``R = I``
    (eq. 14, Chefer 2021). ``r_t`` = row q(t) of R (the row where z_t is computed; GLIMPSE
    writes "row t"). Prompt alignment ``a_P = sum_{j in P} r_t[j]`` (P = the question's tokens),
    visual alignment ``a_V = sum_{j in V} r_t[j]``, confidence ``p_t``. Visual map (eq. 23):
    ``sum_t p_t a_P r_t[V]``; prompt map: ``sum_t p_t a_V r_t[P]``. Ablation switches:
    ``depth_weighting``, ``confidence_weighting``, ``prompt_weighting``. The optional
    function-word relevance flow (eqs. 21-22) is not part of the holistic map and is omitted.
    """

    name: ClassVar[str] = "glimpse"
    head_temperature: float = 0.5
    depth_temperature: float = 0.2
    depth_weighting: bool = True
    confidence_weighting: bool = True
    prompt_weighting: bool = True
    chunk: int = 16
    batched: bool = True

    def reducer(self, batch, targets, forward) -> GradientReducer:
        return _GlimpseReducer(self, batch, targets, forward)

    def weighted_map(self, result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
        """Eq. 23 with token t's visual weight ``p_t a_P`` (``token_scores``) times ``w_t``."""
        return weighted_sum(result, weights * np.asarray(result.token_scores, dtype=np.float64))


# -- TMME ------------------------------------------------------------------------------------


class _TmmeReducer(_TokenCollector):
    def __init__(self, method, batch, targets, forward: GradientForward):
        super().__init__(method, batch, targets)
        count = len(forward.attentions)
        first = 0 if method.last_layers is None else max(count - method.last_layers, 0)
        self.attentions = forward.attentions[first:]
        self.first = first

    def update(self, tokens, attention_grads, hidden_grad) -> None:
        matrices = [
            (grads * probs.detach()[None]).clamp_min(0).mean(dim=2)
            for probs, grads in zip(self.attentions, attention_grads[self.first :], strict=True)
        ]
        rows = self.targets.rows[:, tokens].T
        self._store(tokens, propagate_rows(rows, matrices, None))

    def finish(self) -> list[SaliencyResult]:
        return [self._mean_result(b) for b in range(len(self.batch))]


@register
@dataclass
class Tmme(GradientMethod):
    """TMME (Chefer et al. 2021, "Generic Attention-model Explainability", eqs. 5-6):
    ``R = I; R <- R + mean_h(ReLU(grad * A_l)) R`` over all layers (``last_layers=None``) or the
    last k; the row predicting a token is its map; per-token maps averaged (GLIMPSE Table 1)."""

    name: ClassVar[str] = "tmme"
    last_layers: int | None = None
    chunk: int = 16
    batched: bool = True

    def reducer(self, batch, targets, forward) -> GradientReducer:
        return _TmmeReducer(self, batch, targets, forward)


@register
@dataclass
class TmmeLastK(Tmme):
    """TMME restricted to the last ``last_layers`` decoder layers (GLIMPSE's "TMME (last 12)")."""

    name: ClassVar[str] = "tmme_last_k"
    last_layers: int | None = 12


# -- Grad-CAM ----------------------------------------------------------------------------------


class _GradCamReducer(_TokenCollector):
    def __init__(self, method, batch, targets, forward: GradientForward):
        super().__init__(method, batch, targets)
        self.hidden = forward.last_layer_input.detach()

    def update(self, tokens, attention_grads, hidden_grad) -> None:
        # float32 at least: the channel weights average thousands of visual tokens' gradients
        hidden_grad = hidden_grad.to(work_dtype(hidden_grad.dtype))
        maps = torch.zeros(
            hidden_grad.shape[:3], dtype=hidden_grad.dtype, device=hidden_grad.device
        )
        for b, sample in enumerate(self.batch.samples):
            visual = torch.as_tensor(sample.visual, device=hidden_grad.device)
            weights = hidden_grad[:, b, visual].mean(dim=1)  # (c, D)
            cam = torch.einsum("cd,vd->cv", weights, self.hidden[b, visual].to(weights.dtype))
            maps[:, b, visual] = cam.clamp_min(0)
        self._store(tokens, maps)

    def finish(self) -> list[SaliencyResult]:
        return [self._mean_result(b) for b in range(len(self.batch))]


@register
@dataclass
class GradCam(GradientMethod):
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2) on visual-token states: channel weights =
    mean over visual tokens of ``dz_t/dh``, map = ``ReLU(sum_d alpha_d h_j,d)``.

    ``h`` = hidden states ENTERING the last decoder layer: the last layer's OUTPUT at a visual
    position has no path to z_t (final norm and lm_head act per position), so its gradient is
    identically 0. Per-token maps averaged.
    """

    name: ClassVar[str] = "gradcam"
    chunk: int = 16
    batched: bool = True

    def reducer(self, batch, targets, forward) -> GradientReducer:
        return _GradCamReducer(self, batch, targets, forward)


__all__ = [
    "AttentionGradient",
    "GradCam",
    "Glimpse",
    "Tmme",
    "TmmeLastK",
    "glimpse_head_fusion",
    "glimpse_layer_weights",
    "propagate_rows",
]
