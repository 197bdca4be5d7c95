"""The completion contract: ``<think>thought</think>answer``, in one place.

Saliency-R1 (arXiv 2604.04500) trains the model to reason before it answers; every part of
lookright that reads a completion reads it through these functions (docs/methods.md#format_reward
and #cot_bottleneck):

* :func:`final_answer`: what is scored as the answer (accuracy, POPE, CHAIR, the decode
  stage's ``answer`` column, the readers' reference answers): the text after the LAST
  ``</think>``; without one, the whole text, unless it opened a ``<think>`` (a truncated
  thought has no answer);
* :func:`is_well_formed`: the format reward's rule (exactly one ``<think>`` then one
  ``</think>``, only whitespace before ``<think>``, non-empty thought and answer);
* :func:`character_spans`: where the thought and the answer are in the text, for the
  CoT-bottleneck map, which locates them on the tokens' own characters (real tokenizers merge
  the tags' pieces with their neighbours, so tag token ids cannot be searched for).
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def final_answer(text: str) -> str:
    """The answer of a completion (see the module docstring), stripped."""
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1].strip()
    if THINK_OPEN in text:
        return ""
    return text.strip()


def is_well_formed(text: str) -> bool:
    """Exactly one ``<think>`` and one ``</think>``, in that order, both parts non-empty, and
    nothing but whitespace before ``<think>``."""
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return False
    before, _, rest = text.partition(THINK_OPEN)
    thought, _, answer = rest.partition(THINK_CLOSE)
    return not before.strip() and bool(thought.strip()) and bool(answer.strip())


@dataclass(frozen=True)
class CharacterSpans:
    """``[start, end)`` character ranges of the thought and the answer, or why there are none.

    Thought = strictly between the ``<think>`` before the first ``</think>`` (or the text's
    start, when the prompt opened the thought) and that ``</think>``; answer = after it.
    """

    thought: tuple[int, int] | None
    answer: tuple[int, int] | None
    reason: str | None = None


def character_spans(text: str) -> CharacterSpans:
    """The thought and answer ranges of ``text`` (``reason`` set when there is no ``</think>``)."""
    close_at = text.find(THINK_CLOSE)
    if close_at < 0:
        return CharacterSpans(None, None, "no </think> in the completion (truncated?)")
    open_at = text.rfind(THINK_OPEN, 0, close_at)
    thought_from = open_at + len(THINK_OPEN) if open_at >= 0 else 0
    return CharacterSpans((thought_from, close_at), (close_at + len(THINK_CLOSE), len(text)))
