"""Occlusion agreement and thought faithfulness: pure metrics on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from lookright.data.shapes import ShapeObject, cot_target, thought_claims
from lookright.metrics.agreement import map_agreement
from lookright.metrics.thought_faithfulness import (
    bottleneck_share,
    thought_summary,
    thought_summary_by_subset,
    thought_verdicts,
)


def test_agreement_is_pearson_and_spearman_cell_by_cell():
    reference = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert map_agreement(reference * 3 + 1, reference) == pytest.approx(
        {"pearson": 1.0, "spearman": 1.0}
    )
    squared = reference**2  # monotone, not linear
    values = map_agreement(squared, reference)
    assert values["spearman"] == pytest.approx(1.0)
    assert values["pearson"] == pytest.approx(np.corrcoef(squared.ravel(), reference.ravel())[0, 1])
    assert map_agreement(-reference, reference)["spearman"] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("saliency", "reference"),
    [
        (None, np.ones((2, 2))),
        (np.arange(4.0).reshape(2, 2), None),
        (np.ones((2, 2)), np.arange(4.0).reshape(2, 2)),  # constant map
        (np.arange(6.0).reshape(2, 3), np.arange(4.0).reshape(2, 2)),  # other grid
        (np.array([[np.nan, 1.0], [2.0, 3.0]]), np.arange(4.0).reshape(2, 2)),
    ],
)
def test_agreement_is_undefined_not_zero(saliency, reference):
    assert map_agreement(saliency, reference) == {"pearson": None, "spearman": None}


def test_thought_claims_read_the_cot_template():
    obj = ShapeObject("triangle", "red", (0.6, 0.1, 0.8, 0.3))
    target = cot_target(obj)
    thought = target.split("<think>")[1].split("</think>")[0]
    claims = thought_claims(thought)
    assert (claims.location, claims.shape, claims.color) == ("top right", "triangle", "red")
    assert thought_claims("It is somewhere.") == type(claims)(None, None, None)


def test_thought_verdicts_check_each_claim_and_the_answer():
    truth = "<think>It is at the bottom left. The star blue.</think>blue"
    wrong_place = "<think>It is at the top left. The star blue.</think>blue"
    assert thought_verdicts(truth, wrong_place) == {
        "thought_location": False,
        "thought_shape": True,
        "thought_color": True,
        "answer_follows_thought": True,
    }
    # the thought says green, the answer says blue: a right answer that does not follow
    unfaithful = "<think>It is at the bottom left. The star green.</think>Blue."
    verdicts = thought_verdicts(truth, unfaithful)
    assert verdicts["thought_color"] is False and verdicts["answer_follows_thought"] is False
    truncated = "<think>It is at the bottom left. The star"
    assert set(thought_verdicts(truth, truncated).values()) == {False}
    assert set(thought_verdicts(None, wrong_place).values()) == {None}  # nothing to check
    assert set(thought_verdicts("A photo of a dog.", wrong_place).values()) == {None}


def test_bottleneck_share_and_summary():
    assert bottleneck_share(np.array([1.0, 0.0]), np.array([2.0, 1.0])) == pytest.approx(0.25)
    assert bottleneck_share(np.array([1.0, -5.0]), np.array([-1.0, 0.0])) == pytest.approx(1.0)
    assert bottleneck_share(np.zeros(2), np.zeros(2)) is None
    assert bottleneck_share(None, np.ones(2)) is None
    rows = [
        {**thought_verdicts(None, ""), "cot_share": 0.2},  # real data: share only
        {
            "thought_location": True,
            "thought_shape": True,
            "thought_color": False,
            "answer_follows_thought": True,
            "cot_share": None,
        },
        {
            "thought_location": False,
            "thought_shape": True,
            "thought_color": True,
            "answer_follows_thought": False,
            "cot_share": 0.6,
        },
    ]
    assert thought_summary(rows) == pytest.approx(
        {
            "thought/n_checked": 2.0,
            "thought/location": 0.5,
            "thought/shape": 1.0,
            "thought/color": 0.5,
            "thought/answer_follows": 0.5,
            "thought/cot_share": 0.4,
        }
    )
    assert thought_summary([]) == {}


def test_rank_correlation_equals_scipy_spearmanr_with_ties():
    from scipy import stats

    from lookright.metrics.agreement import rank_correlation

    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 5, 50).astype(float)  # many ties
        b = a + rng.normal(0, 2, 50)
        assert rank_correlation(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_thought_summary_per_subset():
    right = {"thought_location": True, "thought_shape": True, "thought_color": True}
    wrong = {"thought_location": True, "thought_shape": True, "thought_color": False}
    rows = [
        {**right, "answer_follows_thought": True, "subset": "bias_aligned"},
        {**wrong, "answer_follows_thought": True, "subset": "bias_conflicting"},
        {**right, "answer_follows_thought": True, "subset": None},
    ]
    metrics = thought_summary_by_subset(rows)
    assert metrics["thought/color"] == pytest.approx(2 / 3)
    assert metrics["thought/color/bias_conflicting"] == 0.0
    assert metrics["thought/color/bias_aligned"] == 1.0
    assert metrics["thought/n_checked/bias_conflicting"] == 1.0
