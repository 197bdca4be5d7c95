"""Token weighting: ``uniform`` gives back every method's own map; the others reweight tokens."""

from __future__ import annotations

import numpy as np
import pytest
from saliency_helpers import perturb_biases_and_norms

from lookright.config import ConfigError
from lookright.saliency import available_methods, get_method, run_methods
from lookright.saliency.batch import prepare_batch
from lookright.saliency.weighting import (
    WEIGHTINGS,
    evidence_weights,
    occlusion_weights,
    reweighted,
    token_weights,
    variant_name,
)

QUESTIONS = ["What color is the circle?", "What color is the square?"]
COMPLETIONS = [
    "<think>It is at the top left. The circle red.</think>red",
    "<think>It is at the bottom right. The square blue.</think>blue",
]


@pytest.fixture(scope="module")
def explained(build_tiny, noise_images):
    model, processor, adapter = build_tiny("qwen2_5_vl")
    perturb_biases_and_norms(model)
    batch = prepare_batch(model, processor, adapter, noise_images[:2], QUESTIONS, COMPLETIONS)
    methods = [get_method(name) for name in available_methods()]
    methods.append(get_method("logit_decomposition", span="answer"))
    results = run_methods(model, adapter, batch, methods[:-1])
    answer_only = run_methods(model, adapter, batch, methods[-1:])["logit_decomposition"]
    return batch, {m.name: m for m in methods[:-1]}, results, methods[-1], answer_only


def test_uniform_weighting_is_every_method_own_map(explained):
    batch, methods, results, _, _ = explained
    for name, per_sample in results.items():
        for b, result in enumerate(per_sample):
            again = reweighted(methods[name], result, "uniform", batch.samples[b])
            assert again.method == name
            if result.token_maps is None:
                assert name == "random" and not again.has_map
                continue
            assert again.has_map == result.has_map, name
            if result.has_map:
                np.testing.assert_allclose(
                    again.response_map / again.response_map.sum(),
                    result.response_map / result.response_map.sum(),
                    rtol=1e-4,
                    atol=1e-6,
                    err_msg=name,
                )


def test_uniform_weighting_of_the_answer_span_option(explained):
    batch, _, results, answer_method, answer_only = explained
    for b, result in enumerate(answer_only):
        again = reweighted(answer_method, result, "uniform", batch.samples[b])
        np.testing.assert_allclose(again.response_map, result.response_map, rtol=1e-4, atol=1e-6)


def test_answer_weighting_averages_the_answer_tokens(explained):
    batch, methods, results, _, _ = explained
    result, sample = results["tmme"][0], batch.samples[0]
    variant = reweighted(methods["tmme"], result, "answer", sample)
    assert variant.method == "tmme.answer" == variant_name("tmme", "answer")
    keep = [k for k, p in enumerate(result.token_positions) if p in set(sample.answer)]
    assert 0 < len(keep) < len(result.token_positions)
    np.testing.assert_allclose(
        variant.response_map, result.token_maps[keep].mean(axis=0), rtol=1e-5
    )
    # answer-weighted logit decomposition = the method's own span="answer" option
    decomposition = reweighted(
        methods["logit_decomposition"], results["logit_decomposition"][0], "answer", sample
    )
    _, _, _, answer_method, answer_only = explained
    np.testing.assert_allclose(decomposition.response_map, answer_only[0].response_map, rtol=1e-4)


def test_signal_weightings_come_from_their_methods(explained):
    batch, methods, results, _, _ = explained
    decomposition, occlusion = results["logit_decomposition"][0], results["occlusion"][0]
    evidence = evidence_weights(decomposition)
    flat = decomposition.token_maps.reshape(len(decomposition.token_maps), -1)
    k = 3
    expected = max(flat[k].max() - flat[k].mean(), 0.0)
    assert evidence[decomposition.token_positions[k]] == pytest.approx(expected, rel=1e-5)
    dependence = occlusion_weights(occlusion)
    assert dependence[occlusion.token_positions[k]] == pytest.approx(
        max(float(occlusion.token_scores[k]), 0.0)
    )
    tmme = results["tmme"][0]
    weights, _ = token_weights("occlusion", tmme, batch.samples[0], dependence)
    variant = reweighted(methods["tmme"], tmme, "occlusion", batch.samples[0], dependence)
    if variant.has_map:
        expected_map = np.tensordot(weights, tmme.token_maps, axes=1) / weights.sum()
        np.testing.assert_allclose(variant.response_map, expected_map, rtol=1e-5)
    missing = reweighted(methods["tmme"], tmme, "evidence", batch.samples[0], None)
    assert not missing.has_map and "logit_decomposition" in missing.reason


def test_every_weighting_is_named_and_unknown_ones_fail(explained):
    batch, _, results, _, _ = explained
    assert WEIGHTINGS == ("uniform", "answer", "evidence", "occlusion")
    with pytest.raises((ValueError, ConfigError), match="valid"):
        token_weights("entropy", results["tmme"][0], batch.samples[0])
