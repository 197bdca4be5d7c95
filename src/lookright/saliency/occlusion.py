"""Occlusion: the reference map every other method is compared with (docs/methods.md#occlusion).

For each cell of the visual-token grid (or each ``cell_size x cell_size`` block of cells),
the image's pixels under that cell are replaced by the baseline that deletion / insertion use
(:func:`lookright.metrics.perturbation.make_baseline`: blur, mean colour or zeros; the same
cell -> pixel mapping, :func:`~lookright.metrics.perturbation.perturb_image`, through the
sample's :class:`~lookright.models.geometry.ImageView`), the completion is teacher-forced
again, and the drop of each completion token's log-prob is that token's map::

    M[t, cell] = log p(y_t | image, y_<t) - log p(y_t | image with the cell occluded, y_<t)

Response map: ``ReLU(sum_t M[t])``, the drop of the whole completion's log-prob (cells whose
occlusion RAISES it carry no evidence for the completion and get 0). ``token_scores[t]`` is
the token's visual dependence, ``max_cell M[t, cell]``: the occlusion drop of its best cell
(how much that token uses the image at all).

This is the classical occlusion-sensitivity map (Zeiler & Fergus 2014, "Visualizing and
Understanding Convolutional Networks", section 4.2) applied to each completion token of a
VLM; it measures what the deletion metric measures, one cell at a time, so it is the
ground truth a faithful map should agree with. It needs one forward per cell group: the
perturbed images are scored in batches of ``batch_size`` (the original image rides in the
first batch), re-encoded by the processor like the deletion metric's, with the completion's
OWN token ids appended (:func:`~lookright.saliency.batch.encode_with_completion_ids`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from lookright.metrics.perturbation import BASELINE_KINDS, make_baseline, perturb_image
from lookright.saliency.base import PerturbationMethod, register, weighted_sum
from lookright.saliency.batch import SaliencyBatch, encode_with_completion_ids
from lookright.saliency.types import SaliencyResult, finish_map, no_map

NOT_SAMPLED = "not in the occlusion subsample"


def cell_groups(grid: tuple[int, int], cell_size: int) -> list[np.ndarray]:
    """Boolean ``(h, w)`` masks of the occluded units: ``cell_size x cell_size`` blocks of
    cells in raster order (blocks at the right / bottom edge may be smaller)."""
    h, w = grid
    groups = []
    for top in range(0, h, cell_size):
        for left in range(0, w, cell_size):
            mask = np.zeros((h, w), dtype=bool)
            mask[top : top + cell_size, left : left + cell_size] = True
            groups.append(mask)
    return groups


@torch.no_grad()
def token_logprobs(
    model: torch.nn.Module,
    adapter,
    processor,
    images: list[Image.Image],
    question: str,
    completion_ids: list[int],
) -> torch.Tensor:
    """``(len(images), T)`` teacher-forced log-prob of each of ``completion_ids`` after each
    image (one forward; logits only at the rows that predict the completion)."""
    n = len(images)
    encoded = encode_with_completion_ids(
        adapter, processor, images, [question] * n, [completion_ids] * n
    )
    device = next(model.parameters()).device
    inputs = encoded.inputs.to(device)
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    head = adapter.lm_head(model)
    start, end = encoded.completion_span(0)  # same prompt and completion: same span everywhere
    logits = head(hidden[:, start - 1 : end - 1]).float()
    targets = inputs["input_ids"][:, start:end]
    return torch.log_softmax(logits, dim=-1).gather(2, targets[..., None])[..., 0].cpu()


@register
@dataclass
class Occlusion(PerturbationMethod):
    """Per-cell occlusion drop of each completion token's log-prob (see the module docstring).

    Options:
        baseline: what replaces an occluded cell: ``blur`` (default, as deletion), ``mean``,
            ``zero``.
        blur_radius: the blur baseline's Gaussian radius in pixels.
        cell_size: occlude ``cell_size x cell_size`` blocks of grid cells at once (1 = every
            cell alone; larger blocks cut the forwards by ``cell_size**2`` on big grids; every
            cell of a block gets the block's drop).
        batch_size: perturbed images per forward.
    """

    name: ClassVar[str] = "occlusion"
    baseline: str = "blur"
    blur_radius: float = 10.0
    cell_size: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.baseline not in BASELINE_KINDS:
            raise ValueError(f"occlusion baseline={self.baseline!r}; valid: {list(BASELINE_KINDS)}")
        if self.cell_size < 1 or self.batch_size < 1:
            raise ValueError(
                f"occlusion cell_size and batch_size must be >= 1, got "
                f"{self.cell_size}, {self.batch_size}"
            )

    def weighted_map(self, result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
        """``ReLU(sum_t w_t M[t])``."""
        return np.maximum(weighted_sum(result, weights), 0.0)

    def explain(
        self, model, adapter, batch: SaliencyBatch, only: Collection[int] | None = None
    ) -> list[SaliencyResult]:
        """Results of every sample of the batch; with ``only``, samples outside it get "no
        map" ("not in the occlusion subsample") and cost nothing."""
        if batch.images is None or batch.processor is None:
            raise ValueError("occlusion needs the batch's images and processor (prepare_batch)")
        return [
            self._sample(model, adapter, batch, b)
            if only is None or b in only
            else no_map(self.name, batch.samples[b].grid, NOT_SAMPLED)
            for b in range(len(batch))
        ]

    def _sample(self, model, adapter, batch: SaliencyBatch, b: int) -> SaliencyResult:
        sample = batch.samples[b]
        if not sample.targets:
            return no_map(self.name, sample.grid, "empty completion")
        image = batch.images[b]
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        base = make_baseline(pixels, self.baseline, self.blur_radius)
        groups = cell_groups(sample.grid, self.cell_size)
        perturbed = [
            Image.fromarray(perturb_image(pixels, mask, base, batch.views[b])) for mask in groups
        ]
        ids = batch.token_ids(b, sample.targets)
        scored = [image, *perturbed]
        logp = torch.cat(
            [
                token_logprobs(
                    model,
                    adapter,
                    batch.processor,
                    scored[k : k + self.batch_size],
                    batch.questions[b],
                    ids,
                )
                for k in range(0, len(scored), self.batch_size)
            ]
        ).numpy()
        drops = logp[0][None, :] - logp[1:]  # (groups, T)
        per_token = np.zeros((len(ids), *sample.grid), dtype=np.float32)
        for mask, drop in zip(groups, drops, strict=True):
            per_token[:, mask] = drop[:, None]
        flat = per_token.reshape(len(ids), -1)
        return finish_map(
            self.name,
            sample.grid,
            np.maximum(flat.sum(axis=0), 0.0),
            token_maps=per_token,
            token_ids=ids,
            token_positions=list(sample.targets),
            token_scores=flat.max(axis=1),
            extras={"best_cell": [int(i) for i in flat.argmax(axis=1)]},
        )
