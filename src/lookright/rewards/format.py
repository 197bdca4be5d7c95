"""Format reward (Saliency-R1, arXiv 2604.04500; docs/methods.md#format_reward): a well-formed
``<think>thought</think>answer`` completion (:func:`lookright.completion.is_well_formed`)."""

from __future__ import annotations

from typing import Any, ClassVar

from lookright.completion import is_well_formed
from lookright.rewards.base import RewardFunction, completion_text


class FormatReward(RewardFunction):
    """1.0 for ``<think>thought</think>answer`` (see :func:`is_well_formed`), else 0.0."""

    name: ClassVar[str] = "format"

    def score(self, prompts, completions, completion_ids=None, **kwargs: Any):
        return [1.0 if is_well_formed(completion_text(c)) else 0.0 for c in completions]
