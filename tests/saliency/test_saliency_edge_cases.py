"""No map, never a crash: truncated completions, empty answers, empty completions, zero maps;
and the alignment score through lookright.saliency's re-export."""

from __future__ import annotations

import numpy as np
import pytest

from lookright.saliency import alignment_score, available_methods, explain_batch, get_method
from lookright.saliency.batch import split_completion
from lookright.saliency.types import finish_map


def _pieces(*tokens: str) -> tuple[str, list[tuple[int, int]]]:
    """Text and character spans of a completion made of ``tokens`` (as token_offsets gives)."""
    spans, at = [], 0
    for token in tokens:
        spans.append((at, at + len(token)))
        at += len(token)
    return "".join(tokens), spans


def test_split_completion_by_characters_of_the_tokens():
    # a real BPE's pieces: the tags merge with their neighbours
    text, spans = _pieces("<", "think", ">It", " is", " red", ".</", "think", ">red", " car")
    assert split_completion(text, spans, 10) == ([12, 13, 14, 15], [17, 18], None)
    # tags as tokens of their own (lookright's tiny tokenizers)
    text, spans = _pieces("<think>", "It", " is", "</think>", "red")
    assert split_completion(text, spans, 0) == ([1, 2], [4], None)
    text, spans = _pieces("<think>", "It", " is")
    assert split_completion(text, spans, 0)[2] == "no </think> in the completion (truncated?)"
    assert split_completion(*_pieces("<think>", "It", "</think>"), 0)[2] == "empty answer"
    assert split_completion(*_pieces("<think>", "</think>", "red"), 0)[2] == "empty thought"
    # No opening tag in the completion (the prompt opened it): the thought starts at once.
    assert split_completion(*_pieces("It", " is", "</think>", "red"), 0)[:2] == ([0, 1], [3])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_degenerate_completions_give_no_map_not_a_crash(family, build_tiny, noise_images):
    model, processor, adapter = build_tiny(family)
    completions = [
        "<think>The circle is",  # truncated: no </think>
        "<think>The circle is red.</think>",  # empty answer
        "",  # empty completion
        "<think>The circle is red.</think>red",  # a normal one in the same batch
    ]
    images = [noise_images[0]] * len(completions)
    questions = ["What color is the circle?"] * len(completions)
    methods = [*available_methods(), get_method("logit_decomposition", span="answer")]
    methods = [m for m in methods if m != "logit_decomposition"]
    results = explain_batch(model, processor, images, questions, completions, methods, adapter)
    cot = results["cot_bottleneck"]
    assert cot[0].response_map is None and "no </think>" in cot[0].reason
    assert cot[1].response_map is None and cot[1].reason == "empty answer"
    assert cot[2].response_map is None
    assert cot[3].token_maps is not None and cot[3].token_maps.shape[0] >= 1
    answer_only = results["logit_decomposition"]
    assert answer_only[0].response_map is None and answer_only[1].response_map is None
    for name, per_sample in results.items():
        assert per_sample[2].response_map is None, name
        assert per_sample[2].reason == "empty completion", name
        assert per_sample[3].grid == (4, 4)
        for result in per_sample:
            if result.response_map is not None:
                assert np.isfinite(result.response_map).all(), name


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_a_batch_of_only_empty_completions_gives_no_maps(family, build_tiny, noise_images):
    """Issue 15, bug 4: a 3-step SFT on a real architecture answered nothing for a whole
    batch; the row pass then had zero query rows and crashed ("cannot reshape tensor of 0
    elements"), which killed evaluate_saliency. Every method says "no map", the stage goes on.
    """
    from lookright.stages.evaluate_saliency import explain_samples

    model, processor, adapter = build_tiny(family)
    rows = [{"question": "What color is the circle?"}, {"question": "Is there a star?"}]
    explained = explain_samples(
        model,
        processor,
        adapter,
        rows,
        noise_images[:2],
        ["", ""],
        available_methods(),
        batch_size=2,
        keep_results=2,
    )
    for sample in explained:
        assert set(sample.maps) == set(available_methods())
        for method, saliency_map in sample.maps.items():
            assert saliency_map is None, method
            assert sample.reasons[method] == "empty completion", method


def test_zero_and_empty_maps_are_no_map():
    zero = finish_map("m", (2, 3), np.zeros(6))
    assert zero.response_map is None and zero.reason == "map sums to 0" and not zero.has_map
    nan = finish_map("m", (1, 2), np.array([np.nan, 1.0]))
    assert nan.response_map is None
    assert alignment_score(np.zeros((2, 3)), [[0, 0, 1, 1]], (30, 20)) is None
    assert alignment_score(np.zeros((0, 0)), [[0, 0, 1, 1]], (30, 20)) is None


def test_alignment_on_non_square_image_with_box_near_bottom_edge():
    """200 x 100 image, 2 x 4 map with all mass in the bottom-right cell (x 150..200, y 50..100).

    Box [0.5, 0.8, 1.0, 1.0] -> pixels x 100..200, y 80..100: covers 40% of that cell's height,
    so 0.4 of the mass. The reference's bug (y2 scaled by the WIDTH) would give another value.
    """
    saliency = np.zeros((2, 4))
    saliency[1, 3] = 1.0
    assert alignment_score(saliency, [[0.5, 0.8, 1.0, 1.0]], (200, 100)) == pytest.approx(0.4)
    assert alignment_score(saliency, [[0.75, 0.5, 1.0, 1.0]], (200, 100)) == pytest.approx(1.0)
    saliency[0, 0] = 1.0
    assert alignment_score(
        saliency, [[0.0, 0.0, 0.25, 0.5], [0.75, 0.9, 1.0, 1.0]], (200, 100)
    ) == pytest.approx(0.6)


def test_registry_names_and_errors():
    assert available_methods() == sorted(
        [
            "attention_gradient",
            "cot_bottleneck",
            "cot_bottleneck_generating",
            "glimpse",
            "gradcam",
            "logit_decomposition",
            "logit_decomposition_centered",
            "occlusion",
            "random",
            "raw_attention",
            "rollout",
            "tmme",
            "tmme_last_k",
        ]
    )
    with pytest.raises(ValueError, match="valid methods: .*glimpse"):
        get_method("saliency")
    with pytest.raises(ValueError, match="span"):
        get_method("logit_decomposition", span="thought")
    assert get_method("attention_gradient", layers=[-1]).layers == [-1]
