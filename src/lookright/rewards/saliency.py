"""Saliency-alignment reward (Saliency-R1, arXiv 2604.04500; docs/methods.md#saliency_alignment).

For each completion: the CoT-bottleneck logit-decomposition map of the current policy
(vision -> thought -> answer, :class:`lookright.saliency.decomposition.CotBottleneck`), from
one teacher-forced forward over prompt + the rollout's completion ids, and its alignment score
with the sample's evidence box(es): the share of the map's mass inside the boxes
(:func:`lookright.metrics.localisation.alignment_score`, exact area overlap on the grid, the boxes
mapped through the processor's crop/pad of that image).

``None`` (TRL skips it) when the sample has no box or no image, or when there is no map: a
completion without ``</think>`` (truncated), with an empty thought or answer, an image without
visual tokens, a completion that contains an image placeholder token (it cannot be re-encoded
next to the prompt's image), or a map with no positive mass. Never a silent 0.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from lookright.metrics.localisation import alignment_score
from lookright.rewards.base import (
    ALIGNMENT_METHODS,
    RewardFunction,
    completion_text,
    first_image,
    prompt_question,
)
from lookright.rewards.policy import Policy
from lookright.saliency.api import get_method, run_methods


def _has_boxes(boxes: Any) -> bool:
    return boxes is not None and len(boxes) > 0


class ModelReward(RewardFunction):
    """A reward computed from a teacher-forced forward of the policy, in chunks of samples."""

    def __init__(self, policy: Policy, batch_size: int = 16) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.policy = policy
        self.batch_size = batch_size

    def inputs(self, prompts, completions, completion_ids, kwargs) -> tuple[list, list, list, list]:
        """Per completion: image, question, boxes, and the completion as ids (or text)."""
        n = len(completions)
        images = self.column(kwargs, "images", n)
        if all(i is None for i in images):
            images = self.column(kwargs, "image", n)
        questions = [
            q if q is not None else prompt_question(p)
            for q, p in zip(self.column(kwargs, "question", n), prompts, strict=True)
        ]
        boxes = self.column(kwargs, "boxes", n)
        if completion_ids is None:
            tokens = [completion_text(c) for c in completions]
        else:
            tokens = [list(c) for c in completion_ids]
        return [first_image(i) for i in images], questions, boxes, tokens

    def scorable(self, images, boxes, tokens) -> list[int]:
        """Completions that get a value: a box, an image, a non-empty completion whose ids hold
        no image/vision placeholder token (a policy that emits one cannot be re-encoded)."""
        reserved = self.reserved_ids()
        return [
            i
            for i in range(len(tokens))
            if _has_boxes(boxes[i])
            and images[i] is not None
            and len(tokens[i]) > 0
            and (isinstance(tokens[i], str) or not reserved.intersection(tokens[i]))
        ]

    def reserved_ids(self) -> set[int]:
        config = self.policy.model.config
        names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        ids = {getattr(config, n, None) for n in names}
        ids.add(self.policy.adapter.image_token_id(self.policy.model))
        return {int(i) for i in ids if i is not None}

    def chunks(self, indices: list[int]) -> list[list[int]]:
        return [indices[k : k + self.batch_size] for k in range(0, len(indices), self.batch_size)]

    def prepare(self, chunk, images, questions, tokens):
        """The teacher-forced batch of ``chunk`` and the indices it holds.

        Samples whose image has no visual tokens are left out (their reward stays None).
        """
        as_ids = not isinstance(tokens[chunk[0]], str)

        def encode(indices):
            return self.policy.prepare(
                [images[i] for i in indices],
                [questions[i] for i in indices],
                completion_ids=[tokens[i] for i in indices] if as_ids else None,
                completions=None if as_ids else [tokens[i] for i in indices],
                share_images=True,
            )

        batch = encode(chunk)
        kept = [i for i, sample in zip(chunk, batch.samples, strict=True) if sample.visual]
        if len(kept) == len(chunk):
            return batch, chunk
        return (encode(kept), kept) if kept else (None, [])

    @staticmethod
    def log(kwargs: dict, metrics: dict[str, float]) -> None:
        log_metric = kwargs.get("log_metric")
        if log_metric is not None:
            for name, value in metrics.items():
                if np.isfinite(value):
                    log_metric(name, float(value))


class SaliencyAlignmentReward(ModelReward):
    """Saliency-R1's saliency reward: alignment of the policy's map with the box(es).

    Options:
        method: ``cot_bottleneck`` (default, the paper's reward map) or ``logit_decomposition``
            (direct contributions of the whole completion; an ablation).
        batch_size: completions per teacher-forced forward.

    Logs ``alignment_score`` (mean score of the batch), ``saliency_no_map_fraction`` and
    ``time_saliency_alignment_s`` (time spent in this reward) through TRL's ``log_metric``.
    """

    name: ClassVar[str] = "saliency_alignment"

    def __init__(self, policy: Policy, method: str = "cot_bottleneck", batch_size: int = 16):
        super().__init__(policy, batch_size)
        if method not in ALIGNMENT_METHODS:
            raise ValueError(
                f"saliency_alignment method={method!r}; valid: {list(ALIGNMENT_METHODS)}"
            )
        self.method = method

    def score(self, prompts, completions, completion_ids=None, **kwargs: Any):
        started = time.perf_counter()
        images, questions, boxes, tokens = self.inputs(prompts, completions, completion_ids, kwargs)
        scores: list[float | None] = [None] * len(completions)
        todo = self.scorable(images, boxes, tokens)
        method = get_method(self.method)
        with self.policy.forward_context() as model:
            for chunk in self.chunks(todo):
                batch, chunk = self.prepare(chunk, images, questions, tokens)
                if batch is None:
                    continue
                results = run_methods(model, self.policy.adapter, batch, [method])[self.method]
                for i, result in zip(chunk, results, strict=True):
                    if not result.has_map:
                        continue
                    scores[i] = alignment_score(
                        result.response_map, boxes[i], images[i].size, result.view
                    )
        valid = [s for s in scores if s is not None]
        self.log(
            kwargs,
            {
                "alignment_score": float(np.mean(valid)) if valid else float("nan"),
                "saliency_no_map_fraction": 1.0 - len(valid) / max(1, len(todo)),
                "time_saliency_alignment_s": time.perf_counter() - started,
            },
        )
        return scores
