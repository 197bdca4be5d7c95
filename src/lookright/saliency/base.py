"""The one interface behind every saliency method, and the registry by name.

Three kinds of method, by what they need from the model:

* :class:`RowMethod`: attention rows / logit decomposition from ONE teacher-forced forward
  with the model's own attention implementation (:mod:`row_pass`); all row methods of a call
  share that forward.
* :class:`GradientMethod`: attention probabilities with autograd and per-token gradients
  (:mod:`gradient_pass`); all gradient methods of a call share one differentiable forward and
  one batched backward sweep per objective.
* :class:`PerturbationMethod`: re-encodes perturbed copies of the images and runs its own
  teacher-forced forwards (occlusion, the reference map).
* :class:`DirectMethod`: needs no model computation (the random baseline).

Methods are dataclasses: their fields are the options (documented defaults), so
``get_method("glimpse", depth_temperature=0.5)`` configures one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from lookright.saliency.batch import SaliencyBatch
from lookright.saliency.gradient_pass import GradientForward
from lookright.saliency.row_pass import RowPassResult
from lookright.saliency.types import SaliencyResult


@dataclass(frozen=True)
class RowNeeds:
    """What a row method needs from the shared row pass."""

    decompose: bool = False
    cot: bool = False
    mean_attention: bool = False
    full_attention: bool = False
    # The bottleneck's second hop from the rows that GENERATED the thought tokens (t-1).
    # Methods that differ in it cannot share a row pass (api runs one pass per value).
    cot_generating: bool = False

    def __or__(self, other: RowNeeds) -> RowNeeds:
        return RowNeeds(*(a or b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[bool, ...]:
        return (
            self.decompose,
            self.cot,
            self.mean_attention,
            self.full_attention,
            self.cot_generating,
        )


@dataclass
class RowPlan:
    """How the row pass's rows map back to each sample's tokens.

    Row slot ``k`` of sample b is the row predicting its target token ``k``.
    """

    request: object
    target_counts: list[int]
    answer_slots: list[list[int]]


@dataclass
class GradientTargets:
    """The tokens explained by gradient methods: padded ``(B, K)`` positions, ids, validity."""

    positions: torch.Tensor
    token_ids: torch.Tensor
    valid: torch.Tensor

    @property
    def rows(self) -> torch.Tensor:
        """The query rows predicting the tokens (position - 1)."""
        return (self.positions - 1).clamp_min(0)


class SaliencyMethod(ABC):
    """A saliency method: registry ``name`` plus its options (dataclass fields)."""

    name: ClassVar[str]

    def weighted_map(self, result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
        """The response map with token t's term weighted by ``weights[t]`` (flat, ``(h*w,)``).

        Default: the weighted mean of the token maps (with ``weights = 1``: the mean of the
        token maps, the response map of the mean-over-tokens methods). Methods that combine
        their tokens otherwise override it so that ``weights = 1`` gives back their own
        response map (:mod:`lookright.saliency.weighting`).
        """
        return weighted_sum(result, weights) / float(np.sum(weights))


class RowMethod(SaliencyMethod):
    @abstractmethod
    def needs(self) -> RowNeeds: ...

    @abstractmethod
    def from_rows(
        self, batch: SaliencyBatch, plan: RowPlan, rows: RowPassResult
    ) -> list[SaliencyResult]: ...


class GradientReducer(ABC):
    """Consumes per-token gradient chunks of one gradient method and builds its results."""

    @abstractmethod
    def update(
        self, tokens: slice, attention_grads: list[torch.Tensor], hidden_grad: torch.Tensor
    ) -> None:
        """``attention_grads[l]``: ``(k, B, H, S, S)``; ``hidden_grad``: ``(k, B, S, D)``."""

    @abstractmethod
    def finish(self) -> list[SaliencyResult]: ...


class GradientMethod(SaliencyMethod):
    objective: ClassVar[str] = "logit"
    chunk: int = 16
    batched: bool = True

    @abstractmethod
    def reducer(
        self, batch: SaliencyBatch, targets: GradientTargets, forward: GradientForward
    ) -> GradientReducer: ...


class DirectMethod(SaliencyMethod):
    @abstractmethod
    def explain(self, batch: SaliencyBatch) -> list[SaliencyResult]: ...


class PerturbationMethod(SaliencyMethod):
    """Scores perturbed copies of the batch's images with its own forwards (occlusion)."""

    @abstractmethod
    def explain(self, model, adapter, batch: SaliencyBatch) -> list[SaliencyResult]: ...


def weighted_sum(result: SaliencyResult, weights: np.ndarray) -> np.ndarray:
    """``sum_t weights[t] * token_maps[t]``, flat ``(h*w,)``."""
    maps = np.asarray(result.token_maps, dtype=np.float64).reshape(len(result.token_maps), -1)
    return np.asarray(weights, dtype=np.float64) @ maps


METHODS: dict[str, type[SaliencyMethod]] = {}


def register(cls: type[SaliencyMethod]) -> type[SaliencyMethod]:
    """Class decorator: make a method available under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls
