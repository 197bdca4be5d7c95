"""Thought faithfulness: does the chain of thought say what is true, and does the answer
follow it? (docs/methods.md#thought_faithfulness)

Saliency-R1 (arXiv 2604.04500) trains the thought to be the path from the image to the
answer; nothing in its reward checks that the thought is TRUE. Two measures, per sample:

* checkable claims (the synthetic shapes data, whose reference thought states the truth in a
  fixed template, :func:`lookright.data.shapes.cot_target`): whether the model's thought
  names the object's true location, shape and colour, and whether the answer equals the
  colour the thought named (``answer_follows_thought``);
* the CoT bottleneck's share (any data, where claims cannot be checked): the share of the
  answer's visual saliency that flows through the thought,
  ``B / (B + D)`` with ``B`` the mass of the ``cot_bottleneck`` map (vision -> thought ->
  answer) and ``D`` the mass of the answer tokens' direct logit-decomposition map
  (``ReLU(sum_{a in answer} c_a)``, vision -> answer), both from the same row pass.
  1 = the answer's visual evidence all passes through the thought; 0 = none does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lookright.completion import character_spans, final_answer
from lookright.data.shapes import thought_claims

__all__ = [
    "CLAIMS",
    "bottleneck_share",
    "thought_summary",
    "thought_summary_by_subset",
    "thought_verdicts",
]

CLAIMS = ("location", "shape", "color")


def _thought(text: str) -> str | None:
    spans = character_spans(text)
    if spans.thought is None:
        return None
    start, end = spans.thought
    return text[start:end]


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def thought_verdicts(reference_cot: str | None, completion: str) -> dict[str, bool | None]:
    """``thought_<claim>`` (the thought names the true location / shape / colour) and
    ``answer_follows_thought`` (the answer is the colour the thought named) of one sample.

    All ``None`` when the sample has no checkable reference thought (not the shapes
    template). A completion without a thought (no ``</think>``) claims nothing: every verdict
    is False.
    """
    verdicts: dict[str, bool | None] = {f"thought_{c}": None for c in CLAIMS}
    verdicts["answer_follows_thought"] = None
    reference_thought = _thought(reference_cot) if reference_cot else None
    if reference_thought is None:
        return verdicts
    truth = thought_claims(reference_thought)
    if truth.location is None or truth.shape is None or truth.color is None:
        return verdicts
    thought = _thought(completion)
    claims = thought_claims(thought) if thought is not None else None
    for claim in CLAIMS:
        said = getattr(claims, claim) if claims is not None else None
        verdicts[f"thought_{claim}"] = said is not None and said == getattr(truth, claim)
    verdicts["answer_follows_thought"] = (
        claims is not None
        and claims.color is not None
        and _normalised(final_answer(completion)) == claims.color
    )
    return verdicts


def bottleneck_share(
    bottleneck_map: np.ndarray | None, direct_map: np.ndarray | None
) -> float | None:
    """``B / (B + D)`` of the two (ReLU'd) maps' masses; None when either is missing or both
    are 0."""
    if bottleneck_map is None or direct_map is None:
        return None
    through = float(np.maximum(bottleneck_map, 0).sum())
    direct = float(np.maximum(direct_map, 0).sum())
    if not np.isfinite(through + direct) or through + direct <= 0:
        return None
    return through / (through + direct)


def thought_summary(
    rows: Sequence[Mapping[str, Any]], prefix: str = "thought/"
) -> dict[str, float]:
    """Means of the per-sample verdicts (``thought/location`` ... share of checked samples
    whose thought is right; ``thought/answer_follows``; ``thought/cot_share``) and
    ``thought/n_checked``; undefined means are left out."""
    metrics: dict[str, float] = {}
    checked = [r for r in rows if r.get("thought_location") is not None]
    if checked:
        metrics[f"{prefix}n_checked"] = float(len(checked))
        for claim in CLAIMS:
            metrics[f"{prefix}{claim}"] = float(
                np.mean([bool(r[f"thought_{claim}"]) for r in checked])
            )
        metrics[f"{prefix}answer_follows"] = float(
            np.mean([bool(r["answer_follows_thought"]) for r in checked])
        )
    shares = [r["cot_share"] for r in rows if r.get("cot_share") is not None]
    if shares:
        metrics[f"{prefix}cot_share"] = float(np.mean(shares))
    return metrics


def thought_summary_by_subset(
    rows: Sequence[Mapping[str, Any]], prefix: str = "thought/"
) -> dict[str, float]:
    """:func:`thought_summary` overall and per ``subset`` (``thought/color/bias_conflicting``:
    the shortcut shows in the thought of the questions that contradict it)."""
    metrics = thought_summary(rows, prefix)
    for subset in sorted({r.get("subset") for r in rows if r.get("subset")}):
        mine = [r for r in rows if r.get("subset") == subset]
        for key, value in thought_summary(mine, prefix).items():
            metrics[f"{key}/{subset}"] = value
    return metrics
