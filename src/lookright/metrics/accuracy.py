"""Answer accuracy by normalised exact match (Saliency-R1, arXiv 2604.04500;
docs/methods.md#vqa_accuracy).

Normalisation (in this order):

1. reasoning is dropped: with a ``</think>`` tag the answer is the text after the LAST one;
   a ``<think>`` without a closing tag (truncated reasoning) has no answer: ``""``;
2. any remaining tag such as ``<answer>`` / ``</answer>`` is removed;
3. lowercase; punctuation (``string.punctuation``) becomes spaces; the articles
   ``a``/``an``/``the`` are dropped; whitespace is collapsed (SQuAD-style).

Accuracy is a fraction in ``[0, 1]``; over zero rows it is NaN.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lookright.completion import final_answer

__all__ = ["accuracy", "accuracy_by_subset", "exact_match", "normalise_answer"]

_TAG = re.compile(r"<[^<>]*>")
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise_answer(text: str) -> str:
    """Normalise an answer for exact match (see the module docstring)."""
    answer = _TAG.sub(" ", final_answer(text))
    words = answer.lower().translate(_PUNCT).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def exact_match(prediction: str, reference: str | Sequence[str]) -> bool:
    """Whether the normalised prediction equals the (or any) normalised reference."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    pred = normalise_answer(prediction)
    return any(pred == normalise_answer(r) for r in refs)


def accuracy(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Share of predictions that exactly match their reference(s); NaN for no rows."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return float("nan")
    hits = sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True))
    return hits / len(predictions)


def accuracy_by_subset(
    rows: Iterable[Mapping[str, Any]],
    prediction_key: str = "prediction",
    reference_key: str = "answer",
    subset_key: str = "subset",
) -> dict[str, dict[str, float | int]]:
    """Accuracy overall and per named subset (e.g. ``bias_aligned`` / ``bias_conflicting``).

    Args:
        rows: dicts with a prediction, a reference answer and an optional subset name
            (missing or None: the row only counts towards ``"overall"``).

    Returns:
        ``{"overall": {"accuracy": ..., "n": ...}, subset: {...}, ...}``, subsets in order of
        first appearance.
    """
    groups: dict[str, list[bool]] = {"overall": []}
    for row in rows:
        hit = exact_match(str(row[prediction_key]), row[reference_key])
        groups["overall"].append(hit)
        subset = row.get(subset_key)
        if subset is not None:
            groups.setdefault(str(subset), []).append(hit)
    return {
        name: {"accuracy": (sum(hits) / len(hits)) if hits else float("nan"), "n": len(hits)}
        for name, hits in groups.items()
    }
