"""Region-attention reward (SAYO, docs/methods.md#region_attention).

1. Entropy of the policy's next-token distribution at every completion token (the row that
   PREDICTS token y at position i is i-1; its entropy is that of the decision producing y).
2. Keep the top ``rho`` fraction (``ceil(rho * n)``, at least 1; paper: best in 0.2-0.4) of
   the highest-entropy tokens.
3. Attention of their rows to the visual tokens, averaged over heads and the chosen layers
   (reference: last layer only): ``a_focus`` = mean attention to the visual tokens inside the
   focus region (visual tokens whose grid cell overlaps a box), ``a_img`` = mean attention to
   all visual tokens.
4. ``r = tanh(log((a_focus + eps) / (a_img + eps)))``, eps = 1e-8: 0 when the region gets the
   image's average attention, towards 1 when attention concentrates inside it, towards -1
   when it avoids it.

Entropies and attention rows come from ONE teacher-forced forward of the current policy (the
saliency engine's row pass with the model's own attention implementation, only the requested
layers' softmax rows recomputed from the captured q/k).

``None`` when the sample has no box or no image, the completion is empty or holds an image
placeholder token, the image has no visual tokens, or the box covers no visual token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from lookright.metrics.localisation import box_coverage
from lookright.models.base import VLMAdapter
from lookright.models.geometry import ImageView
from lookright.rewards.policy import Policy
from lookright.rewards.saliency import ModelReward
from lookright.saliency.batch import SaliencyBatch, pad_positions
from lookright.saliency.row_pass import RowPass, RowRequest


def focus_mask(
    grid: tuple[int, int], boxes: Sequence[Sequence[float]], view: ImageView | None = None
) -> np.ndarray:
    """``(h*w,)`` bool: visual tokens (raster order) whose grid cell overlaps a box; ``view``
    is the part of the image the grid covers (the processor's crop/pad)."""
    return box_coverage(grid, boxes, view=view).reshape(-1) > 0


def region_attention_reward(
    entropies: np.ndarray,
    attention: np.ndarray,
    focus: np.ndarray,
    rho: float = 0.3,
    eps: float = 1e-8,
) -> float | None:
    """SAYO's reward of one completion from its per-token entropies and attention rows.

    Args:
        entropies: ``(T,)`` next-token entropy of each completion token's predicting row.
        attention: ``(T, V)`` attention of those rows to the V visual tokens (averaged over
            heads and the chosen layers).
        focus: ``(V,)`` bool, the visual tokens of the focus region.

    Returns:
        ``tanh(log((a_focus + eps) / (a_img + eps)))`` over the top-``rho`` entropy tokens, or
        None when there is no token, no visual token or no focus token.
    """
    entropies = np.asarray(entropies, dtype=np.float64).reshape(-1)
    attention = np.asarray(attention, dtype=np.float64)
    focus = np.asarray(focus, dtype=bool).reshape(-1)
    if not 0 < rho <= 1:
        raise ValueError(f"region_attention rho must be in (0, 1], got {rho}")
    if entropies.size == 0 or attention.ndim != 2 or attention.shape[1] == 0 or not focus.any():
        return None
    if attention.shape != (entropies.size, focus.size):
        raise ValueError(
            f"attention {attention.shape} does not match {entropies.size} tokens x "
            f"{focus.size} visual tokens"
        )
    k = max(1, math.ceil(rho * entropies.size))
    selected = np.argsort(-entropies, kind="stable")[:k]
    rows = attention[selected]
    a_focus = float(rows[:, focus].mean())
    a_img = float(rows.mean())
    return float(np.tanh(np.log((a_focus + eps) / (a_img + eps))))


@dataclass
class RegionRows:
    """Per sample: ``entropies (T,)`` and ``attention (T, V)`` of its completion tokens."""

    entropies: list[np.ndarray]
    attention: list[np.ndarray]


class _LayerAttentionPass(RowPass):
    """The row pass with its ``mean_attention`` reduced over the chosen layers only.

    Other layers run the model's own attention and nothing else (no row recomputation). The
    only hook into the row pass is its per-layer reduction, delegated for the chosen layers;
    ``RowPassResult.mean_attention`` is then the mean over those layers and the heads.
    """

    def __init__(self, model, adapter: VLMAdapter, layers: Sequence[int]) -> None:
        super().__init__(model, adapter)
        n = len(self.layers)
        chosen = set()
        for layer in layers:
            index = layer + n if layer < 0 else layer
            if not 0 <= index < n:
                raise ValueError(f"region_attention layer {layer} out of range for {n} layers")
            chosen.add(index)
        if not chosen:
            raise ValueError("region_attention needs at least one layer")
        self.chosen = chosen

    def _reduce_layer(self, index: int, attention, taps) -> None:
        if index in self.chosen:
            super()._reduce_layer(index, attention, taps)


def region_rows(
    model, adapter: VLMAdapter, batch: SaliencyBatch, layers: Sequence[int] = (-1,)
) -> RegionRows:
    """Entropies and visual attention of every completion token of a teacher-forced batch.

    One forward (no grad) with the row pass's hooks: attention rows of the chosen layers,
    then ``logits = lm_head(norm(h^L))`` at the same rows for the entropies.
    """
    device = batch.input_ids.device
    rows, row_valid = pad_positions([[p - 1 for p in s.targets] for s in batch.samples], device)
    keys, key_valid = pad_positions([s.visual for s in batch.samples], device)
    request = RowRequest(
        rows=rows, row_valid=row_valid, keys=keys, key_valid=key_valid, mean_attention=True
    )
    row_pass = _LayerAttentionPass(model, adapter, layers)
    result = row_pass.run(batch.inputs, request)
    entropies = _entropies(row_pass, result.final_hidden)
    out = RegionRows([], [])
    for b, sample in enumerate(batch.samples):
        n_tokens, n_visual = len(sample.targets), len(sample.visual)
        out.entropies.append(entropies[b, :n_tokens].cpu().numpy())
        attention = result.mean_attention
        out.attention.append(
            attention[b, :n_tokens, :n_visual].float().cpu().numpy()
            if attention is not None
            else np.zeros((n_tokens, 0), dtype=np.float32)
        )
    return out


@torch.no_grad()
def _entropies(row_pass: RowPass, final_hidden: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``(B, R)`` entropy of softmax(lm_head(norm(h))) at the rows, in row chunks (big vocab)."""
    parts = []
    for start in range(0, final_hidden.shape[1], chunk):
        hidden = final_hidden[:, start : start + chunk]
        logits = row_pass.lm_head(row_pass.norm(hidden.to(row_pass.lm_head.weight.dtype)))
        logp = torch.log_softmax(logits.float(), dim=-1)
        parts.append(-(logp.exp() * logp).sum(dim=-1))
    if not parts:
        return torch.zeros(final_hidden.shape[:2])
    return torch.cat(parts, dim=1)


class RegionAttentionReward(ModelReward):
    """SAYO's region-level visual attention reward (see the module docstring).

    Options: ``rho`` (0.3), ``layers`` (``[-1]``: last layer, the reference; negative indices
    count from the end), ``eps`` (1e-8), ``batch_size`` (completions per forward). Logs
    ``time_region_attention_s`` (time spent in this reward).
    """

    name: ClassVar[str] = "region_attention"

    def __init__(
        self,
        policy: Policy,
        rho: float = 0.3,
        layers: Sequence[int] = (-1,),
        eps: float = 1e-8,
        batch_size: int = 16,
    ) -> None:
        super().__init__(policy, batch_size)
        if not 0 < rho <= 1:
            raise ValueError(f"region_attention rho must be in (0, 1], got {rho}")
        self.rho, self.layers, self.eps = rho, list(layers), eps

    def score(self, prompts, completions, completion_ids=None, **kwargs: Any):
        started = time.perf_counter()
        images, questions, boxes, tokens = self.inputs(prompts, completions, completion_ids, kwargs)
        scores: list[float | None] = [None] * len(completions)
        todo = self.scorable(images, boxes, tokens)
        with self.policy.forward_context() as model:
            for chunk in self.chunks(todo):
                batch, chunk = self.prepare(chunk, images, questions, tokens)
                if batch is None:
                    continue
                rows = region_rows(model, self.policy.adapter, batch, self.layers)
                for k, i in enumerate(chunk):
                    sample = batch.samples[k]
                    if not sample.visual or not sample.targets:
                        continue
                    scores[i] = region_attention_reward(
                        rows.entropies[k],
                        rows.attention[k],
                        focus_mask(sample.grid, boxes[i], batch.views[k]),
                        self.rho,
                        self.eps,
                    )
        self.log(kwargs, {"time_region_attention_s": time.perf_counter() - started})
        return scores
