"""From a :class:`SaliencyBatch` to the padded index tensors of the row and gradient passes."""

from __future__ import annotations

import numpy as np
import torch

from lookright.saliency.base import GradientTargets, RowNeeds, RowPlan
from lookright.saliency.batch import SaliencyBatch, pad_positions
from lookright.saliency.row_pass import CotRequest, RowRequest


def build_row_request(batch: SaliencyBatch, needs: RowNeeds) -> RowPlan:
    """Rows = the rows predicting every target token; keys = each sample's visual tokens.

    The bottleneck's second hop needs the rows AT the thought positions t: each of them is
    already the row predicting target t+1 (the token after a thought token is a thought token
    or ``</think>``, both targets), so thought slot = slot of target t+1 and no row is added.
    With ``needs.cot_generating`` it needs the rows t-1 that generated them instead: the
    slot of target t itself.
    """
    device = batch.input_ids.device
    row_lists, answer_slots, thought_slots, thoughts = [], [], [], []
    for sample in batch.samples:
        first = sample.targets[0] if sample.targets else 0
        has_cot = needs.cot and sample.cot_reason is None
        thought = list(sample.thought) if has_cot else []
        answer_slots.append([a - first for a in sample.answer] if has_cot else [])
        hop = 0 if needs.cot_generating else 1
        thought_slots.append([t + hop - first for t in thought])
        thoughts.append(thought)
        row_lists.append([p - 1 for p in sample.targets])
    rows, row_valid = pad_positions(row_lists, device)
    targets, _ = pad_positions([s.targets for s in batch.samples], device)
    keys, key_valid = pad_positions([s.visual for s in batch.samples], device)
    cot = None
    if needs.cot and any(answer_slots):
        a_slots, a_valid = pad_positions(answer_slots, device)
        t_slots, t_valid = pad_positions(thought_slots, device)
        t_positions, _ = pad_positions(thoughts, device)
        cot = CotRequest(a_slots, a_valid, t_slots, t_positions, t_valid)
    request = RowRequest(
        rows=rows,
        row_valid=row_valid,
        keys=keys,
        key_valid=key_valid,
        targets=torch.gather(batch.input_ids, 1, targets)
        if (needs.decompose or needs.cot)
        else None,
        decompose=row_valid if needs.decompose else None,
        cot=cot,
        mean_attention=needs.mean_attention,
        full_attention=needs.full_attention,
    )
    return RowPlan(request, [len(s.targets) for s in batch.samples], answer_slots)


def gradient_targets(batch: SaliencyBatch) -> GradientTargets:
    """Padded target positions/ids of every sample (all completion tokens but end-of-turn)."""
    positions, valid = pad_positions([s.targets for s in batch.samples], batch.input_ids.device)
    token_ids = torch.gather(batch.input_ids, 1, positions)
    return GradientTargets(positions, token_ids, valid)


def visual_values(values: torch.Tensor, batch: SaliencyBatch, b: int) -> np.ndarray:
    """Sample b's entries at its visual keys: ``values (..., S)`` -> ``(..., n_visual)`` float32."""
    index = torch.as_tensor(batch.samples[b].visual, device=values.device, dtype=torch.long)
    return values.index_select(-1, index).detach().float().cpu().numpy()


def grid_maps(values: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``(T, h*w) -> (T, h, w)`` float32 (raster order)."""
    return np.asarray(values, dtype=np.float32).reshape(-1, grid[0], grid[1])
