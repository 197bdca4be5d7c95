"""Saliency-R1 logit decomposition: the exactness identity of METHODS.md section 1, and the
CoT bottleneck against a brute-force computation from full attention matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import FAMILIES, perturb_biases_and_norms

from lookright.saliency import explain_batch
from lookright.saliency.batch import pad_positions, prepare_batch
from lookright.saliency.gradient_pass import differentiable_forward
from lookright.saliency.row_pass import RowPass, RowRequest

QUESTIONS = ["What color is the circle?", "Is there a star?"]
COMPLETIONS = ["<think>The circle is red.</think>red", "no"]


def _add_o_proj_bias(model, adapter) -> None:
    """LLaMA has no o_proj bias by default: give it one so the identity's bias term is tested."""
    for layer in adapter.decoder_layers(model):
        old = layer.self_attn.o_proj
        if old.bias is None:
            new = torch.nn.Linear(
                old.in_features, old.out_features, bias=True, dtype=old.weight.dtype
            )
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.normal_(0, 0.3)
            layer.self_attn.o_proj = new


def _float64_model(build_tiny, family):
    model, processor, adapter = build_tiny(family)
    model = model.double()
    perturb_biases_and_norms(model)
    _add_o_proj_bias(model, adapter)
    return model, processor, adapter


def _residual_pieces(model, adapter):
    """Hooks keeping h^0 (first layer input) and every layer's attention and MLP outputs."""
    pieces = {"h0": None, "mlp": []}
    layers = adapter.decoder_layers(model)

    def first_input(module, args, kwargs):
        pieces["h0"] = args[0] if args else kwargs["hidden_states"]

    handles = [layers[0].register_forward_pre_hook(first_input, with_kwargs=True)]
    for layer in layers:
        handles.append(layer.mlp.register_forward_hook(lambda m, a, o: pieces["mlp"].append(o)))
    return pieces, handles


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_equals_sum_of_direct_contributions_for_every_row(family, build_tiny, noise_images):
    """z = sum_p c_p + sum_l e.(o_proj bias) + sum_l e.mlp_out^l + e.h^0 at every row."""
    model, processor, adapter = _float64_model(build_tiny, family)
    batch = prepare_batch(model, processor, adapter, noise_images[:2], QUESTIONS, COMPLETIONS)
    ids = batch.input_ids
    length = ids.shape[1]
    rows, row_valid = pad_positions(
        [list(range(start, length - 1)) for start in batch.encoded.prompt_start]
    )
    targets = torch.gather(ids, 1, rows + 1)
    keys, key_valid = pad_positions([list(range(length))] * len(batch))
    request = RowRequest(rows, row_valid, keys, key_valid, targets=targets, decompose=row_valid)

    pieces, handles = _residual_pieces(model, adapter)
    result = RowPass(model, adapter).run(batch.inputs, request)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        logits = model(**batch.inputs).logits
    logit = logits[torch.arange(len(batch))[:, None], rows, targets]

    def at_rows(x):
        return torch.gather(x, 1, rows[..., None].expand(-1, -1, x.shape[-1]))

    e = result.direction
    total = result.contributions.sum(-1) + (e * at_rows(pieces["h0"])).sum(-1)
    for layer, mlp_out in zip(adapter.decoder_layers(model), pieces["mlp"], strict=True):
        total = total + (e * at_rows(mlp_out)).sum(-1)
        total = total + (e * layer.self_attn.o_proj.bias).sum(-1)
    scale = logit.abs().amax(dim=1, keepdim=True)
    error = ((total - logit).abs() / scale)[row_valid]
    assert error.max() < 1e-5, f"{family}: relative error {error.max():.2e}"
    # Dropping the frozen 1/rms factor breaks the identity (the test can fail).
    wrong = total * result.rms
    assert ((wrong - logit).abs() / scale)[row_valid].max() > 1e-2


@pytest.mark.parametrize("family", FAMILIES)
def test_method_token_maps_are_the_contributions_of_visual_keys(family, build_tiny, noise_images):
    """The registry method reads the row predicting each token (i-1) at the visual keys."""
    model, processor, adapter = _float64_model(build_tiny, family)
    results = explain_batch(
        model, processor, noise_images[:2], QUESTIONS, COMPLETIONS, ["logit_decomposition"], adapter
    )["logit_decomposition"]
    batch = prepare_batch(model, processor, adapter, noise_images[:2], QUESTIONS, COMPLETIONS)
    length = batch.input_ids.shape[1]
    rows, row_valid = pad_positions([list(range(length - 1))] * len(batch))
    keys, key_valid = pad_positions([list(range(length))] * len(batch))
    targets = torch.gather(batch.input_ids, 1, rows + 1)
    request = RowRequest(rows, row_valid, keys, key_valid, targets=targets, decompose=row_valid)
    everything = RowPass(model, adapter).run(batch.inputs, request).contributions
    for b, sample in enumerate(batch.samples):
        predicting = [p - 1 for p in sample.targets]
        expected = everything[b][predicting][:, sample.visual].numpy()
        got = results[b].token_maps.reshape(len(sample.targets), -1)
        assert abs(got - expected).max() < 1e-9
        assert results[b].token_ids == batch.input_ids[b, sample.targets].tolist()
        relu_sum = expected.sum(0).clip(min=0).reshape(sample.grid)
        if relu_sum.sum() == 0:  # every visual contribution negative: "no map", not a crash
            assert results[b].response_map is None and results[b].reason == "map sums to 0"
        else:
            assert abs(results[b].response_map - relu_sum).max() < 1e-6


def test_centered_map_is_the_summed_map_minus_its_mean(build_tiny, noise_images):
    """logit_decomposition_centered = ReLU(S - mean S), S = sum of the signed token maps."""
    model, processor, adapter = _float64_model(build_tiny, "qwen2_5_vl")
    names = ["logit_decomposition", "logit_decomposition_centered"]
    results = explain_batch(
        model, processor, noise_images[:2], QUESTIONS, COMPLETIONS, names, adapter
    )
    for plain, centered in zip(*results.values(), strict=True):
        summed = plain.token_maps.sum(axis=0)
        expected = np.maximum(summed - summed.mean(), 0.0)
        assert np.allclose(centered.token_maps, plain.token_maps)
        assert centered.response_map is not None
        assert np.allclose(centered.response_map, expected, atol=1e-6)
        assert centered.response_map.min() == 0.0  # something is always below the mean
        assert not np.allclose(centered.response_map, np.maximum(summed, 0.0))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("method", "hop"), [("cot_bottleneck", 0), ("cot_bottleneck_generating", 1)]
)
def test_cot_bottleneck_matches_brute_force_two_hop(family, method, hop, build_tiny, noise_images):
    """c[a,j] = sum_{l,h} sum_{t in T} A[q(a),t] A[t-hop,j] e_a.(W_O[:,h] v_j^h).

    hop 0: query row t (METHODS.md); hop 1: the row t-1 that generated t (the reference's).
    """
    model, processor, adapter = _float64_model(build_tiny, family)
    image, question, completion = noise_images[:1], QUESTIONS[:1], COMPLETIONS[:1]
    result = explain_batch(model, processor, image, question, completion, [method], adapter)
    result = result[method][0]
    batch = prepare_batch(model, processor, adapter, image, question, completion)
    sample = batch.samples[0]

    values = []
    handles = [
        layer.self_attn.v_proj.register_forward_hook(lambda m, a, o: values.append(o.detach()))
        for layer in adapter.decoder_layers(model)
    ]
    forward = differentiable_forward(model, adapter, batch.inputs, torch.tensor([[0]]))
    for handle in handles:
        handle.remove()
    # e_a from the identity-tested row pass (the frozen-norm direction of each answer row).
    rows, valid = pad_positions([[a - 1 for a in sample.answer]])
    keys, key_valid = pad_positions([sample.visual])
    request = RowRequest(
        rows, valid, keys, key_valid, targets=batch.input_ids[:, sample.answer], decompose=valid
    )
    e = RowPass(model, adapter).run(batch.inputs, request).direction[0]

    expected = torch.zeros(len(sample.answer), len(sample.visual), dtype=torch.float64)
    for layer, probs, value in zip(
        adapter.decoder_layers(model), forward.attentions, values, strict=True
    ):
        attention = probs[0].detach()
        heads, head_dim = attention.shape[0], layer.self_attn.head_dim
        groups = heads // (value.shape[-1] // head_dim)
        weight = layer.self_attn.o_proj.weight
        for h in range(heads):
            v = value[0].view(value.shape[1], -1, head_dim)[:, h // groups]
            w_o = weight[:, h * head_dim : (h + 1) * head_dim]
            for ai, a in enumerate(sample.answer):
                for ji, j in enumerate(sample.visual):
                    two_hop = sum(
                        attention[h, a - 1, t] * attention[h, t - hop, j] for t in sample.thought
                    )
                    expected[ai, ji] += two_hop * (e[ai] @ (w_o @ v[j]))
    assert result.token_maps.shape == (len(sample.answer), *sample.grid)
    got = torch.as_tensor(result.token_maps.reshape(len(sample.answer), -1), dtype=torch.float64)
    assert torch.allclose(got, expected.float().double(), rtol=1e-4, atol=1e-7)
    summed = torch.clamp(expected.sum(0), min=0).reshape(sample.grid)
    if result.has_map:
        assert torch.allclose(
            torch.as_tensor(result.response_map, dtype=torch.float64), summed, rtol=1e-4, atol=1e-7
        )


def test_row_pass_rides_on_an_external_forward(build_tiny, noise_images):
    """``RowPass.attached`` around a forward that runs anyway (grad enabled, full model with
    lm_head, as GRPO's log-prob forward) gives the same contributions as ``run``."""
    from lookright.saliency.base import RowNeeds
    from lookright.saliency.plan import build_row_request

    model, processor, adapter = build_tiny("qwen2_5_vl")
    batch = prepare_batch(model, processor, adapter, noise_images[:2], QUESTIONS, COMPLETIONS)
    plan = build_row_request(batch, RowNeeds(decompose=True, cot=True))
    alone = RowPass(model, adapter).run(batch.inputs, plan.request)
    with RowPass(model, adapter).attached(batch.inputs, plan.request) as finish:
        logits = model(**batch.inputs).logits
    riding = finish()
    assert logits.requires_grad
    assert torch.allclose(riding.contributions, alone.contributions, atol=1e-6)
    assert torch.allclose(riding.cot_contributions, alone.cot_contributions, atol=1e-6)
    assert not riding.contributions.requires_grad
