"""SGRS: candidate saliency, the threshold/rejection/fallback rule, reduction to top-K sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookright.decoding import SaliencyGuidedSampler, SgrsParams, generate, question_key_mask
from lookright.models.transformers_internals import cache_keyword
from lookright.saliency.api import get_method, run_methods
from lookright.saliency.batch import prepare_batch

# --------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "llava"])
def test_candidates_get_distinct_nonzero_saliency(build_tiny, encode, family):
    """The reference bug (gradient read at another row) gives every candidate 0."""
    model, processor, adapter = build_tiny(family)
    inputs = encode(processor, adapter)
    graph_in_cache = []

    def check_cache(module, args, kwargs):  # at each step, before anything is written
        # reads DynamicCache's per-layer keys/values (cache layout, transformers 5.23-5.25)
        cache = kwargs.get(cache_keyword(model))
        for layer in getattr(cache, "layers", []):
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                graph_in_cache.append(layer.keys.requires_grad or layer.values.requires_grad)

    handle = model.register_forward_pre_hook(check_cache, with_kwargs=True)
    torch.manual_seed(0)
    try:
        out = generate(model, inputs, "sgrs", max_new_tokens=4, top_k=5, sgrs_layers=[0.5])
    finally:
        handle.remove()
    assert graph_in_cache and not any(graph_in_cache)  # each step's graph is released
    assert torch.is_grad_enabled()  # grad mode restored
    assert len(out.records) == 4
    for record in out.records:
        scores = record.saliency
        assert scores.shape == (2, 5)
        assert bool(torch.isfinite(scores).all()) and bool((scores > 1e-4).all())
        for row in scores:
            assert len(set(row.tolist())) == 5  # five different values
        # the chosen token's score is its candidate's score
        for b in range(2):
            k = int((record.candidates[b] == record.chosen[b]).nonzero()[0, 0])
            assert record.chosen_saliency[b] == scores[b, k]


@pytest.mark.parametrize(("fractions", "layers"), [([0.0, 0.5], [0, 1]), ([0.5, 1.0], [1, 2])])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_step_saliency_equals_the_teacher_forced_engine(
    build_tiny, encode, images, questions, family, fractions, layers
):
    """S(t) of each generated token, computed at its one-row step with the KV cache == the saliency engine's attention_gradient token_scores on the
    finished sequence, teacher-forced without a cache (float64)."""
    model, processor, adapter = build_tiny(family)
    model = model.double()
    inputs = encode(processor, adapter)
    keys = question_key_mask(processor, inputs, questions, int(model.config.image_token_id))
    torch.manual_seed(1)
    out = generate(
        model,
        inputs,
        "sgrs",
        max_new_tokens=5,
        question_keys=keys,
        sgrs_layers=fractions,
    )
    batch = prepare_batch(model, processor, adapter, images, questions, completion_ids=out.tokens)
    method = get_method("attention_gradient", layers=layers)
    results = run_methods(model, adapter, batch, [method])["attention_gradient"]
    for b in range(2):
        expected = np.asarray(results[b].token_scores, dtype=np.float64)
        assert expected.size >= 4
        np.testing.assert_allclose(out.token_saliency[b][: expected.size], expected, atol=1e-7)


# --------------------------------------------------------------------------- the rule


class ScriptedScorer:
    """Stands in for StepScorer: fixed saliency per candidate token id."""

    def __init__(self, table: dict[int, float]) -> None:
        self.table = table
        self.calls = 0

    def scores(self, candidates, key_mask):
        self.calls += 1
        return torch.tensor([[self.table[int(c)] for c in row] for row in candidates])


def _logits(values: list[float], vocab: int = 8) -> torch.Tensor:
    row = torch.full((vocab,), -100.0)
    row[: len(values)] = torch.tensor(values)
    return row


def _sampler(table, params, batch=1, seed=0):
    generators = [torch.Generator().manual_seed(seed + b) for b in range(batch)]
    keys = torch.ones(batch, 3)
    return SaliencyGuidedSampler(
        ScriptedScorer(table), params, keys, mode="sgrs", generators=generators
    )


def _step(sampler, logits: torch.Tensor):
    ids = torch.zeros(logits.shape[0], 3 + len(sampler.state.records), dtype=torch.long)
    forced = sampler(ids, logits)
    record = sampler.state.records[-1]
    assert torch.equal(forced.argmax(-1), record.chosen)  # generate takes the chosen token
    assert bool(torch.isinf(forced).sum(-1).eq(logits.shape[-1] - 1).all())
    return record


def test_threshold_rejection_and_fallback_follow_the_definition():
    """Peaked logits make the draw order 0, 1, 2, ... (each rejected token is removed)."""
    table = {0: 0.10, 1: 0.20, 2: 0.30, 3: 0.45, 4: 0.50, 5: 0.9, 6: 0.9, 7: 0.9}
    logits = _logits([40.0, 20.0, 0.0, -20.0, -40.0])[None]  # 5..7 at -100: outside the top-5

    def run(history, max_draws):
        params = SgrsParams(top_k=5, max_draws=max_draws, alpha=0.5, history=2)
        sampler = _sampler(table, params)
        sampler.history[0] = list(history)
        return sampler, _step(sampler, logits)

    # no history: tau = 0, the first draw (token 0) is accepted
    sampler, record = run([], 3)
    assert set(record.candidates[0].tolist()) == {0, 1, 2, 3, 4}
    assert float(record.tau[0]) == 0.0 and int(record.draws[0]) == 1
    assert int(record.chosen[0]) == 0 and not bool(record.fallback[0])
    assert sampler.history[0] == [pytest.approx(0.10)]  # the accepted token's saliency

    # tau = alpha * mean of the LAST W = 2 accepted saliencies = 0.5 * (0.6 + 1.0) / 2 = 0.4
    sampler, record = run([0.9, 0.6, 1.0], 3)
    assert float(record.tau[0]) == pytest.approx(0.4)
    # R = 3: tokens 0, 1, 2 drawn and rejected (S < 0.4) -> fallback: argmax S = token 4
    assert int(record.draws[0]) == 3 and bool(record.fallback[0])
    assert int(record.chosen[0]) == 4 and sampler.history[0][-1] == pytest.approx(0.5)

    # R = 4: the fourth draw, token 3 (S = 0.45 >= 0.4), is accepted; not the argmax (4)
    sampler, record = run([0.9, 0.6, 1.0], 4)
    assert int(record.draws[0]) == 4 and not bool(record.fallback[0])
    assert int(record.chosen[0]) == 3 and sampler.history[0][-1] == pytest.approx(0.45)

    # S == tau is accepted (">="): tau = 0.5 * 0.2 = 0.1 = S(token 0)
    sampler, record = run([0.2, 0.2], 3)
    assert int(record.chosen[0]) == 0 and int(record.draws[0]) == 1


def test_rejected_candidates_are_removed_before_the_next_draw():
    """One candidate above tau and R = K: it is always found (at most K draws, no repeats)."""
    params = SgrsParams(top_k=5, max_draws=5, alpha=1.0, history=1)
    table = {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.9}
    logits = _logits([6.0, 5.5, 5.0, 4.5, 0.0])[None]  # token 4 is the least likely
    for seed in range(6):
        sampler = _sampler({**table, 5: 0, 6: 0, 7: 0}, params, seed=seed)
        sampler.history[0] = [0.5]  # tau = 0.5
        record = _step(sampler, logits)
        assert int(record.chosen[0]) == 4 and not bool(record.fallback[0])
        assert 1 <= int(record.draws[0]) <= 5


def test_each_sequence_keeps_its_own_history():
    params = SgrsParams(top_k=2, max_draws=1, alpha=1.0, history=3)
    table = {0: 0.2, 1: 0.3, **{t: 0.0 for t in range(2, 8)}}
    logits = torch.stack([_logits([2.0, 1.0]), _logits([2.0, 1.0])])
    sampler = _sampler(table, params, batch=2)
    sampler.history = [[], [1.0]]
    record = _step(sampler, logits)
    assert record.tau.tolist() == pytest.approx([0.0, 1.0])
    assert not bool(record.fallback[0]) and bool(record.fallback[1])  # row 1: 0.2, 0.3 < 1
    assert int(record.chosen[1]) == 1  # argmax saliency
    assert sampler.history[0] == [pytest.approx(table[int(record.chosen[0])])]
    assert sampler.history[1] == [1.0, pytest.approx(0.3)]


# --------------------------------------------------------------------------- reductions


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_alpha_zero_is_top_k_sampling_with_the_same_seed(build_tiny, encode, family):
    model, processor, adapter = build_tiny(family)
    inputs = encode(processor, adapter)
    pad = processor.tokenizer.pad_token_id
    torch.manual_seed(7)
    reference = model.generate(
        **inputs,
        do_sample=True,
        top_k=5,
        top_p=1.0,
        temperature=1.0,
        max_new_tokens=10,
        pad_token_id=pad,
    )
    torch.manual_seed(7)
    sgrs = generate(model, inputs, "sgrs", max_new_tokens=10, top_k=5, alpha=0.0)
    torch.manual_seed(7)
    sample = generate(model, inputs, "sample", max_new_tokens=10, top_k=5)
    assert torch.equal(sgrs.sequences, reference)
    assert torch.equal(sample.sequences, reference)
    assert all(n == 1 for row in sgrs.draws for n in row)  # tau = 0: first draw accepted
    assert all(s > 0 for row in sgrs.token_saliency for s in row)  # scored all the same
    torch.manual_seed(8)
    other = generate(model, inputs, "sgrs", max_new_tokens=10, top_k=5, alpha=0.0)
    assert not torch.equal(other.sequences, reference)  # the seed matters: a real sampler


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_batch_with_padding_matches_each_sequence_alone(build_tiny, encode, family):
    model, processor, adapter = build_tiny(family)
    both = encode(processor, adapter, (0, 1))
    assert bool((both["attention_mask"][0] == 0).any())  # sample 0 is left-padded
    singles = [encode(processor, adapter, (b,)) for b in (0, 1)]

    def streams(rows):
        return [torch.Generator().manual_seed(100 + r) for r in rows]

    for strategy in ("greedy", "locore", "sgrs+locore"):
        kwargs = {"max_new_tokens": 8, "beta": 1.0, "locore_window": 3, "alpha": 0.9}
        together = generate(model, both, strategy, generators=streams((0, 1)), **kwargs)
        for b in (0, 1):
            alone = generate(model, singles[b], strategy, generators=streams((b,)), **kwargs)
            assert together.tokens[b] == alone.tokens[0], (strategy, b)
            if alone.token_saliency is not None:
                np.testing.assert_allclose(
                    together.token_saliency[b], alone.token_saliency[0], rtol=1e-4
                )
                assert together.draws[b] == alone.draws[0]


def test_baselines_report_token_saliency_without_changing_their_tokens(build_tiny, encode):
    model, processor, adapter = build_tiny("qwen2_5_vl")
    inputs = encode(processor, adapter)
    for strategy in ("greedy", "locore", "sample"):
        torch.manual_seed(3)
        plain = generate(model, inputs, strategy, max_new_tokens=6, beta=1.0)
        torch.manual_seed(3)
        scored = generate(model, inputs, strategy, max_new_tokens=6, beta=1.0, token_saliency=True)
        assert scored.tokens == plain.tokens, strategy
        assert plain.token_saliency is None and scored.draws is None
        assert [len(s) for s in scored.token_saliency] == [len(t) for t in scored.tokens]
        assert all(s > 0 for row in scored.token_saliency for s in row)
    beam = generate(model, inputs, "beam", max_new_tokens=6, num_beams=2, token_saliency=True)
    assert beam.token_saliency is None


def test_building_blocks_with_plain_generate_match_generate(build_tiny, encode, questions):
    """The documented hook/processor pair on ``model.generate`` == ``decoding.generate``."""
    from lookright.decoding import (
        LocoreParams,
        StepScorer,
        attention_session,
        layer_indices,
        prefill_all_but_last,
    )
    from lookright.decoding.plain import generation_config

    model, processor, adapter = build_tiny("llava")
    inputs = encode(processor, adapter)
    keys = question_key_mask(processor, inputs, questions, int(model.config.image_token_id))
    params, locore = SgrsParams(alpha=0.9), LocoreParams(beta=0.5, window=2)
    torch.manual_seed(5)
    wrapped = generate(
        model, inputs, "sgrs+locore", max_new_tokens=6, sgrs=params, locore=locore,
        question_keys=keys,
    )  # fmt: skip
    torch.manual_seed(5)
    with attention_session(model, adapter, locore=locore) as session:
        layers = layer_indices(params.layers, session.n_layers)
        with StepScorer(model, adapter, session, layers) as scorer:
            sampler = SaliencyGuidedSampler(scorer, params, keys)
            config = generation_config(model, 6, do_sample=False)
            rest, cache = prefill_all_but_last(model, inputs, config, session)
            sequences = model.generate(
                **rest, **cache, generation_config=config, logits_processor=[sampler]
            )
    assert torch.equal(sequences, wrapped.sequences)
    for ours, theirs in zip(sampler.state.records, wrapped.records, strict=True):
        assert torch.equal(ours.saliency, theirs.saliency)
