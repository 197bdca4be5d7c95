"""Tests of lookright.metrics.human_alignment (GLIMPSE NSS / Spearman)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from lookright.metrics.human_alignment import MetricUndefinedWarning, fixation_mask, nss, spearman
from lookright.metrics.localisation import resize_map


def test_fixation_mask_percentile():
    human = np.arange(10.0).reshape(2, 5)  # 90th percentile = 8.1
    expected = np.zeros((2, 5), dtype=bool)
    expected[1, 4] = True
    np.testing.assert_array_equal(fixation_mask(human, 90.0), expected)
    binary = np.zeros((4, 5))
    binary[0, :3] = 1.0  # 15 % ones: the 90th percentile is 1 -> exactly the ones
    np.testing.assert_array_equal(fixation_mask(binary), binary > 0)
    assert not fixation_mask(np.zeros((3, 3))).any()


def test_nss_hand_computed_same_shape():
    m = np.array([[0.0, 0.0], [0.0, 4.0]])  # mean 1, std sqrt(3): z(4) = 3 / sqrt(3)
    assert nss(m, m) == pytest.approx(math.sqrt(3.0), abs=1e-12)


def test_nss_hand_computed_resized():
    # [0, 1] -> bilinear (half-pixel) to width 4: [0, .25, .75, 1]; mean .5, var .15625
    human = np.array([[0.0, 0.0, 0.0, 1.0]])
    assert nss(np.array([[0.0, 1.0]]), human) == pytest.approx(math.sqrt(1.6), abs=1e-6)


def test_nss_invariant_to_affine_rescaling():
    rng = np.random.default_rng(0)
    sal, human = rng.random((6, 6)), rng.random((12, 12))
    assert nss(3.0 * sal + 7.0, human) == pytest.approx(nss(sal, human), abs=1e-5)


@pytest.mark.parametrize("sal_shape", [(20, 24), (7, 9), (40, 11)])
def test_nss_matches_pysaliency(sal_shape):
    pysaliency = pytest.importorskip("pysaliency")
    rng = np.random.default_rng(sum(sal_shape))
    sal = rng.random(sal_shape) ** 2
    human = rng.random((20, 24))
    resized = resize_map(sal, human.shape)
    ys, xs = np.nonzero(fixation_mask(human, 90.0))

    class Fixed(pysaliency.SaliencyMapModel):
        def _saliency_map(self, stimulus):
            return resized

    stimuli = pysaliency.Stimuli([np.zeros(human.shape + (3,), dtype=np.uint8)])
    fixations = pysaliency.Fixations.create_without_history(xs, ys, np.zeros(len(xs), int))
    reference = Fixed(caching=False).NSS(stimuli, fixations)
    ours = nss(sal, human, percentile=90.0)
    assert ours == pytest.approx(float(reference), rel=1e-9, abs=1e-12)
    direct = pysaliency.metrics.NSS(resized, xs, ys).mean()
    assert ours == pytest.approx(float(direct), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("sal", [np.zeros((4, 4)), np.full((3, 5), 0.7)])
def test_nss_constant_map_is_nan_with_warning(sal):
    with pytest.warns(MetricUndefinedWarning):
        assert math.isnan(nss(sal, np.random.default_rng(0).random((8, 8))))


def test_nss_undefined_cases():
    with pytest.warns(MetricUndefinedWarning):
        assert math.isnan(nss(np.eye(3), np.zeros((6, 6))))  # empty fixation set
    with pytest.warns(MetricUndefinedWarning):
        assert math.isnan(nss(np.array([[1.0, np.nan]]), np.eye(4)))


def test_spearman_hand_computed():
    s = np.array([[1.0, 2.0], [3.0, 4.0]])
    h = np.array([[1.0, 3.0], [2.0, 4.0]])  # d = [0, 1, 1, 0]: 1 - 6*2/(4*15)
    assert spearman(s, h) == pytest.approx(0.8, abs=1e-12)
    assert spearman(s, s**3) == pytest.approx(1.0)
    assert spearman(s, -s) == pytest.approx(-1.0)


def test_spearman_matches_scipy_with_resize():
    rng = np.random.default_rng(3)
    sal, human = rng.random((7, 7)), rng.random((16, 20))
    expected = stats.spearmanr(resize_map(sal, human.shape).ravel(), human.ravel()).statistic
    assert spearman(sal, human) == pytest.approx(float(expected), abs=1e-12)
    same = rng.random((5, 6))
    other = rng.random((5, 6))
    expected = stats.spearmanr(same.ravel(), other.ravel()).statistic
    assert spearman(same, other) == pytest.approx(float(expected), abs=1e-12)


def test_spearman_constant_is_nan_with_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", stats.ConstantInputWarning)
        with pytest.warns(MetricUndefinedWarning):
            assert math.isnan(spearman(np.zeros((4, 4)), np.eye(8)))
        with pytest.warns(MetricUndefinedWarning):
            assert math.isnan(spearman(np.eye(4), np.ones((8, 8))))
