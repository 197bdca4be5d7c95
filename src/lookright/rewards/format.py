"""Format reward (Saliency-R1, METHODS.md section 3): a well-formed ``<think>`` completion."""

from __future__ import annotations

from typing import Any, ClassVar

from lookright.rewards.base import RewardFunction, completion_text


def has_think_format(text: str) -> bool:
    """Exactly one ``<think>`` and one ``</think>``, in that order, both parts non-empty.

    Nothing but whitespace may precede ``<think>``.
    """
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    before, _, rest = text.partition("<think>")
    thought, _, answer = rest.partition("</think>")
    return not before.strip() and bool(thought.strip()) and bool(answer.strip())


class FormatReward(RewardFunction):
    """1.0 for ``<think>thought</think>answer`` (see :func:`has_think_format`), else 0.0."""

    name: ClassVar[str] = "format"

    def score(self, prompts, completions, completion_ids=None, **kwargs: Any):
        return [1.0 if has_think_format(completion_text(c)) else 0.0 for c in completions]
