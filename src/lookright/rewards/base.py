"""What every reward function shares: TRL's reward signature, completion text, finiteness.

TRL's ``GRPOTrainer`` (1.16) calls each reward function as::

    reward_func(prompts=..., completions=..., completion_ids=..., trainer_state=...,
                log_extra=..., log_metric=..., **dataset_columns)

with one entry per completion in every list (dataset columns repeated ``num_generations``
times), and expects one float per completion back; ``None`` means "not applicable" (TRL turns
it into NaN and leaves it out of the means and of the advantage baseline). A lookright reward
never answers 0 for "could not be computed": it answers ``None``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from lookright.config import StageFailure

ALIGNMENT_METHODS = (
    "cot_bottleneck",
    "cot_bottleneck_generating",
    "logit_decomposition",
    "logit_decomposition_centered",
)
"""Saliency methods the saliency-alignment reward can score (Saliency-R1's response-level
maps: the CoT bottleneck and the logit decomposition, with lookright's variants)."""


class NonFiniteRewardError(StageFailure):
    """A reward function produced NaN/inf (a bug, not a skipped sample)."""


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's conversational ``[{"role", "content"}]``."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [p.get("text") or "" for p in content if isinstance(p, dict)]
    return "".join(parts)


def prompt_question(prompt: Any) -> str:
    """The user's text of a prompt (string or conversational messages)."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
    return completion_text(users[-1:]).strip()


def first_image(images: Any) -> Any:
    """The sample's image from an ``images`` cell (a list of images) or an ``image`` cell."""
    if images is None:
        return None
    if isinstance(images, list | tuple):
        return images[0] if images else None
    return images


def check_rewards(name: str, values: Sequence[float | None], expected: int) -> list[float | None]:
    """One reward per completion, each ``None`` or finite; anything else is a clear error."""
    values = list(values)
    if len(values) != expected:
        raise ValueError(
            f"reward {name!r} returned {len(values)} values for {expected} completions"
        )
    for index, value in enumerate(values):
        if value is not None and not math.isfinite(float(value)):
            raise NonFiniteRewardError(
                f"reward {name!r} is {value} for completion {index} of the batch; stopping "
                "(the last good checkpoint is kept)"
            )
    return [None if v is None else float(v) for v in values]


class RewardFunction(ABC):
    """A reward in TRL's signature; subclasses implement :meth:`score`.

    ``__name__`` is the registry name, which TRL uses for its ``rewards/<name>/mean|std``
    metrics.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.__name__ = self.name

    def __call__(
        self, prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any
    ) -> list[float | None]:
        values = self.score(prompts, completions, completion_ids, **kwargs)
        return check_rewards(self.name, values, len(completions))

    @abstractmethod
    def score(
        self, prompts: list, completions: list, completion_ids: list | None, **kwargs: Any
    ) -> list[float | None]:
        """One value per completion (None = no reward for it; TRL skips None)."""

    @staticmethod
    def column(kwargs: dict, name: str, n: int, default: Any = None) -> list:
        """A dataset column from the reward kwargs (``default`` per row when absent)."""
        values = kwargs.get(name)
        return [default] * n if values is None else list(values)
