"""Tests of lookright.metrics.pope."""

from __future__ import annotations

import math

import pytest

from lookright.metrics.pope import parse_yes_no, pope_by_split, pope_metrics


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No, there is not.", "no"),
        ("There isn't one", "no"),
        ("Yes.", "yes"),
        ("I don't see any", "no"),
        ("NO", "no"),
        ("yes, a red circle.", "yes"),
        ("Yes. There is no dog in the image.", "yes"),  # only the first sentence counts
        ("Not really", "no"),
        ("No.", "no"),
        ("There is\nno cat", "no"),  # any whitespace separates words
        ("There isn\u2019t a cat", "no"),  # typographic apostrophe
        ("Yes, no doubt", "no"),  # the reference rule's known quirk
        ("No!", "yes"),  # only commas are stripped, as in the reference
        ("", "no"),
        ("   ", "no"),
        ("...", "no"),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_parse_empty_as_yes():
    assert parse_yes_no("", empty_as="yes") == "yes"


def test_pope_metrics_hand_computed():
    preds = ["yes", "yes", "no", "no", "yes"]
    labels = ["yes", "no", "no", "yes", "yes"]  # tp 2, fp 1, tn 1, fn 1
    m = pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 1, 1, 1, 5)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(0.6)


def test_pope_metrics_zero_division_is_zero():
    m = pope_metrics(["no", "no"], ["yes", "no"])  # never says yes: precision 0/0
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == 0.5 and m["yes_ratio"] == 0.0
    m = pope_metrics(["no"], ["no"])  # no positives at all: recall 0/0
    assert m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 1.0


def test_pope_metrics_empty_is_nan():
    m = pope_metrics([], [])
    assert m["n"] == 0
    assert all(math.isnan(m[k]) for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"))


def test_pope_metrics_validates():
    with pytest.raises(ValueError):
        pope_metrics(["yes"], ["yes", "no"])
    with pytest.raises(ValueError):
        pope_metrics(["Yes"], ["yes"])


def test_pope_by_split_and_average():
    rows = [
        {"pope_split": "adversarial", "prediction": "yes", "label": "no"},
        {"pope_split": "adversarial", "prediction": "yes", "label": "yes"},
        {"pope_split": "random", "prediction": "yes", "label": "yes"},
        {"pope_split": "random", "prediction": "no", "label": "no"},
        {"pope_split": "popular", "prediction": "no", "label": "yes"},
        {"pope_split": "popular", "prediction": "no", "label": "no"},
    ]
    out = pope_by_split(rows)
    assert list(out) == ["random", "popular", "adversarial", "average"]
    assert out["random"]["accuracy"] == 1.0
    assert out["popular"]["accuracy"] == 0.5 and out["popular"]["f1"] == 0.0
    assert out["adversarial"]["precision"] == 0.5 and out["adversarial"]["yes_ratio"] == 1.0
    assert out["average"]["accuracy"] == pytest.approx((1.0 + 0.5 + 0.5) / 3)
    assert out["average"]["f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)
    assert out["average"]["yes_ratio"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert out["average"]["n"] == 6 and out["average"]["n_splits"] == 3


def test_pope_by_split_parses_raw_text():
    rows = [
        {"pope_split": "random", "prediction": "Yes, there is.", "label": "yes"},
        {"pope_split": "random", "prediction": "There isn't.", "label": "yes"},
    ]
    out = pope_by_split(rows, parse=True)
    assert out["random"]["accuracy"] == 0.5 and out["random"]["yes_ratio"] == 0.5
    with pytest.raises(ValueError):
        pope_by_split(rows)  # raw text without parse=True is rejected
