"""Tests of lookright.metrics.accuracy."""

from __future__ import annotations

import math

import pytest

from lookright.metrics.accuracy import (
    accuracy,
    accuracy_by_subset,
    exact_match,
    normalise_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>The circle is red.</think> The Red!", "red"),
        ("An apple", "apple"),
        ("  Blue,  green. ", "blue green"),
        ("<think>unfinished reasoning", ""),
        ("<answer>Red</answer>", "red"),
        ("<think>a</think>b</think>c", "c"),
        ("light-blue", "light blue"),
        ("", ""),
    ],
)
def test_normalise_answer(text, expected):
    assert normalise_answer(text) == expected


def test_exact_match():
    assert exact_match("The red.", "red")
    assert exact_match("red", ["blue", "Red"])
    assert not exact_match("dark red", "red")
    assert not exact_match("<think>red", "red")


def test_accuracy():
    assert accuracy(["red", "The blue", "green"], ["red", "blue", "yellow"]) == pytest.approx(2 / 3)
    assert math.isnan(accuracy([], []))
    with pytest.raises(ValueError):
        accuracy(["a"], [])


def test_accuracy_by_subset():
    rows = [
        {"prediction": "red", "answer": "red", "subset": "bias_aligned"},
        {"prediction": "red", "answer": "blue", "subset": "bias_conflicting"},
        {"prediction": "<think>..</think>blue", "answer": "blue", "subset": "bias_conflicting"},
        {"prediction": "green", "answer": "green", "subset": None},
        {"prediction": "green", "answer": "red"},
    ]
    out = accuracy_by_subset(rows)
    assert list(out) == ["overall", "bias_aligned", "bias_conflicting"]
    assert out["overall"] == {"accuracy": pytest.approx(3 / 5), "n": 5}
    assert out["bias_aligned"] == {"accuracy": 1.0, "n": 1}
    assert out["bias_conflicting"] == {"accuracy": 0.5, "n": 2}
    empty = accuracy_by_subset([])
    assert empty["overall"]["n"] == 0 and math.isnan(empty["overall"]["accuracy"])
