"""LocoRE: beta = 0 is plain greedy; beta > 0 raises attention to the window by (1 + beta)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor

from lookright.decoding import LocoreParams, attention_session, generate
from lookright.decoding.plain import generation_config

STEPS = 6


class ForceTokens(LogitsProcessor):
    """Make ``generate`` emit a fixed continuation (same inputs with and without LocoRE)."""

    def __init__(self, tokens: torch.Tensor, prompt_width: int) -> None:
        self.tokens, self.prompt_width = tokens, prompt_width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        forced = torch.full_like(scores, -float("inf"))
        return forced.scatter(1, self.tokens[:, step : step + 1], 0.0)


def _attention_rows(model, adapter, inputs, tokens, layer: int, session_kwargs=None):
    """The attention rows (B, H, S) of ``layer`` at each decoding step of a forced run."""
    rows = []

    def keep(module, args, output):
        if output[1] is not None and output[1].shape[-2] == 1:
            rows.append(output[1][:, :, 0, :].detach().float())

    handle = adapter.decoder_layers(model)[layer].self_attn.register_forward_hook(keep)
    config = generation_config(model, tokens.shape[1], do_sample=False)
    force = [ForceTokens(tokens, inputs["input_ids"].shape[1])]
    try:
        if session_kwargs is None:
            model.generate(**inputs, generation_config=config, logits_processor=force)
        else:
            with attention_session(model, adapter, **session_kwargs):
                model.generate(**inputs, generation_config=config, logits_processor=force)
    finally:
        handle.remove()
    return rows


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_beta_zero_is_token_for_token_greedy(build_tiny, encode, family):
    model, processor, adapter = build_tiny(family)
    inputs = encode(processor, adapter)
    greedy = generate(model, inputs, "greedy", max_new_tokens=12)
    same = generate(model, inputs, "locore", max_new_tokens=12, beta=0.0, locore_window=3)
    assert same.tokens == greedy.tokens
    assert torch.equal(same.sequences, greedy.sequences)
    # and LocoRE does change the output when it is on (else the test above proves nothing)
    strong = generate(model, inputs, "locore", max_new_tokens=12, beta=50.0, locore_window=1)
    assert strong.tokens != greedy.tokens


@pytest.mark.parametrize("renormalise", [True, False])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_attention_to_the_window_rises_by_the_expected_factor(
    build_tiny, encode, family, renormalise
):
    """Read back from the eager attention weights of the (only) LocoRE layer.

    With LocoRE in the last layer only, that layer's inputs, and so its pre-softmax scores,
    are the same as without it; the weights on the last w_s generated keys must be multiplied
    by (1 + beta), then renormalised (default) or not.
    """
    model, processor, adapter = build_tiny(family, attn="eager")
    inputs = encode(processor, adapter)
    tokens = generate(model, inputs, "greedy", max_new_tokens=STEPS).sequences
    tokens = tokens[:, inputs["input_ids"].shape[1] :]
    last = len(adapter.decoder_layers(model)) - 1
    beta, window = 0.5, 2
    params = LocoreParams(beta=beta, window=window, layers=(1.0,), renormalise=renormalise)
    plain = _attention_rows(model, adapter, inputs, tokens, last)
    boosted = _attention_rows(model, adapter, inputs, tokens, last, {"locore": params})
    assert len(plain) == len(boosted) == STEPS - 1  # decoding steps after the prefill
    width = inputs["input_ids"].shape[1]
    for step, (a, a_new) in enumerate(zip(plain, boosted, strict=True), start=1):
        kv = a.shape[-1]
        assert kv == width + step
        lo = kv - min(step, window)
        gamma = torch.ones(kv)
        gamma[lo:] = 1.0 + beta
        expected = a * gamma
        if renormalise:
            expected = expected / expected.sum(dim=-1, keepdim=True)
        torch.testing.assert_close(a_new, expected, rtol=1e-5, atol=1e-7)
        mass, mass_new = a[..., lo:].sum(-1), a_new[..., lo:].sum(-1)
        factor = (1 + beta) / (1 + beta * mass) if renormalise else torch.full_like(mass, 1 + beta)
        torch.testing.assert_close(mass_new / mass, factor, rtol=1e-5, atol=1e-7)
        assert bool((mass_new > mass).all())
    # a layer outside the LocoRE layers is untouched (bit for bit)
    first_plain = _attention_rows(model, adapter, inputs, tokens, 0)
    first_boosted = _attention_rows(model, adapter, inputs, tokens, 0, {"locore": params})
    for a, a_new in zip(first_plain, first_boosted, strict=True):
        assert torch.equal(a, a_new)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_sdpa_bias_path_matches_eager(build_tiny, encode, family):
    """Default variant under SDPA (mask None alone, boolean with padding) == eager weights."""
    sdpa, processor, adapter = build_tiny(family, attn="sdpa")
    eager, _, _ = build_tiny(family, attn="eager")
    for rows in [(0,), (0, 1)]:
        inputs = encode(processor, adapter, rows)
        a = generate(sdpa, inputs, "locore", max_new_tokens=10, beta=1.0, locore_window=3)
        b = generate(eager, inputs, "locore", max_new_tokens=10, beta=1.0, locore_window=3)
        assert a.tokens == b.tokens
    assert sdpa.config.text_config._attn_implementation == "sdpa"  # restored after decoding
