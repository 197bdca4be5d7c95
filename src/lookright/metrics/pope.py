"""POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models").

Yes/no object-existence questions in three negative-sampling splits (random, popular,
adversarial). LVLMs-Saliency reports accuracy, precision, recall, F1 with "yes" as the
positive class, and the yes-ratio of the PREDICTIONS, per split and averaged
(docs/methods.md#pope).

Answer parsing follows the POPE reference evaluation, with a case fix (docs/methods.md#pope):
keep the text before the first ``.``, drop commas, split into words; the answer is "no" if
any word is ``no`` or ``not`` (any case) or ends in ``n't``, otherwise "yes". Only commas
are stripped, as in the reference, so ``"No!"`` parses as "yes".

Conventions chosen by lookright (documented, tested):

* an answer whose first sentence has no words (``""``, ``"..."``) parses as "no" by default
  (``empty_as``): a non-answer is not a claim that the object is present. The reference
  rule would say "yes".
* metrics are fractions in ``[0, 1]`` (papers print percentages).
* precision / recall / F1 with a zero denominator are 0.0 (scikit-learn's
  ``zero_division=0``), e.g. a model that never says "yes"; with no rows at all every metric
  is NaN (there is nothing to measure) and ``n`` is 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

__all__ = ["POPE_METRICS", "POPE_SPLITS", "parse_yes_no", "pope_by_split", "pope_metrics"]

POPE_SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
POPE_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")
YesNo = Literal["yes", "no"]


def parse_yes_no(text: str, empty_as: YesNo = "no") -> YesNo:
    """Map a free-form answer to "yes"/"no" with POPE's rule (see the module docstring).

    Words are separated by any whitespace (the reference splits on single spaces). Both the
    ASCII apostrophe and the typographic one (``n’t``) count for the ``n't`` rule.
    """
    first = text.split(".", 1)[0].replace(",", "")
    words = [w.lower() for w in first.split()]
    if not words:
        return empty_as
    for word in words:
        if word in ("no", "not") or word.endswith("n't") or word.endswith("n\u2019t"):
            return "no"
    return "yes"


def _check(values: Sequence[str], name: str) -> None:
    bad = sorted({v for v in values if v not in ("yes", "no")})
    if bad:
        raise ValueError(f"{name} must be 'yes'/'no', got {bad[:5]}")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1 (positive = "yes"), yes-ratio of the predictions.

    Args:
        predictions: parsed answers, each "yes" or "no" (see :func:`parse_yes_no`).
        labels: ground truth, each "yes" or "no".

    Returns:
        ``accuracy, precision, recall, f1, yes_ratio`` (fractions), ``n`` and the confusion
        counts ``tp, fp, tn, fn``. Zero denominators: see the module docstring.
    """
    predictions, labels = list(predictions), list(labels)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    _check(predictions, "predictions")
    _check(labels, "labels")
    n = len(labels)
    tp = sum(p == "yes" and t == "yes" for p, t in zip(predictions, labels, strict=True))
    fp = sum(p == "yes" and t == "no" for p, t in zip(predictions, labels, strict=True))
    tn = sum(p == "no" and t == "no" for p, t in zip(predictions, labels, strict=True))
    fn = n - tp - fp - tn
    if n == 0:
        nan = float("nan")
        out: dict[str, float | int] = dict.fromkeys(POPE_METRICS, nan)
    else:
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        out = {
            "accuracy": (tp + tn) / n,
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "yes_ratio": (tp + fp) / n,
        }
    out.update({"n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn})
    return out


def pope_by_split(
    rows: Iterable[Mapping[str, Any]],
    parse: bool = False,
    split_key: str = "pope_split",
    prediction_key: str = "prediction",
    label_key: str = "label",
) -> dict[str, dict[str, float | int]]:
    """POPE metrics per split plus their unweighted mean (``"average"``).

    Args:
        rows: dicts with a split name, a prediction and a label.
        parse: apply :func:`parse_yes_no` to the predictions (raw model text) first.
        split_key, prediction_key, label_key: the rows' keys.

    Returns:
        ``{split: pope_metrics(...)}`` for each split (random, popular, adversarial first, then
        any other split in order of appearance), and ``"average"``: the mean of each metric
        over the splits (as papers report it), ``n`` = total rows, ``n_splits``.
    """
    grouped: dict[str, tuple[list[str], list[str]]] = {}
    for row in rows:
        prediction = str(row[prediction_key])
        if parse:
            prediction = parse_yes_no(prediction)
        preds, labels = grouped.setdefault(str(row[split_key]), ([], []))
        preds.append(prediction)
        labels.append(str(row[label_key]))
    order = [s for s in POPE_SPLITS if s in grouped] + [s for s in grouped if s not in POPE_SPLITS]
    result: dict[str, dict[str, float | int]] = {s: pope_metrics(*grouped[s]) for s in order}
    average: dict[str, float | int] = {}
    for metric in POPE_METRICS:
        values = [float(result[s][metric]) for s in order]
        average[metric] = sum(values) / len(values) if values else float("nan")
    average["n"] = sum(int(result[s]["n"]) for s in order)
    average["n_splits"] = len(order)
    result["average"] = average
    return result
