"""Gradient methods: dZ/dA against finite differences of the logit under a perturbed attention
matrix, batched == looped gradients, and LVLMs-Saliency / GLIMPSE maps against naive
full-matrix re-implementations fed with those verified gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import FAMILIES, perturb_biases_and_norms

from lookright.saliency import explain_batch, get_method
from lookright.saliency.batch import prepare_batch
from lookright.saliency.gradient_pass import (
    batched_token_gradients,
    differentiable_forward,
    token_objectives,
)
from lookright.saliency.plan import gradient_targets

QUESTION = ["What color is the circle?", "Is there a star?"]
COMPLETION = ["<think>The circle is red.</think>red", "no"]


def _exact_norms(model: torch.nn.Module) -> None:
    """RMSNorm in the input dtype (transformers computes it in float32, which swamps FD)."""
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            eps = getattr(module, "variance_epsilon", 1e-6)

            def forward(x, module=module, eps=eps):
                return module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

            module.forward = forward


def _setup(build_tiny, family, images):
    model, processor, adapter = build_tiny(family)
    model = model.double()
    perturb_biases_and_norms(model)
    _exact_norms(model)
    batch = prepare_batch(model, processor, adapter, images[:2], QUESTION, COMPLETION)
    return model, processor, adapter, batch


def _all_gradients(model, adapter, batch, objective, batched=True):
    targets = gradient_targets(batch)
    forward = differentiable_forward(model, adapter, batch.inputs, targets.rows)
    values = token_objectives(forward.logits, targets.token_ids, objective)
    per_layer = [[] for _ in forward.attentions]
    for _, grads in batched_token_gradients(values, forward.attentions, targets.valid, 8, batched):
        for layer, grad in enumerate(grads):
            per_layer[layer].append(grad)
    return targets, forward, [torch.cat(g) for g in per_layer]  # (K, B, H, S, S) per layer


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("objective", ["logit", "nll"])
def test_attention_gradients_match_finite_differences(family, objective, build_tiny, noise_images):
    model, _, adapter, batch = _setup(build_tiny, family, noise_images)
    targets, forward, grads = _all_gradients(model, adapter, batch, objective)
    generator = torch.Generator().manual_seed(0)
    for layer in range(len(grads)):
        direction = torch.randn(
            forward.attentions[layer].shape, generator=generator, dtype=torch.float64
        )

        def objective_at(step, layer=layer, direction=direction):
            def edit(index, probs):
                return probs + step * direction if index == layer else probs

            out = differentiable_forward(model, adapter, batch.inputs, targets.rows, edit=edit)
            return token_objectives(out.logits, targets.token_ids, objective).detach()

        step = 1e-6
        numeric = (objective_at(step) - objective_at(-step)) / (2 * step)  # (B, K)
        analytic = (grads[layer] * direction).sum(dim=(2, 3, 4)).T
        scale = analytic[targets.valid].abs().max()
        error = (numeric - analytic)[targets.valid].abs().max() / scale
        assert error < 1e-6, f"{family} layer {layer}: relative error {error:.2e}"


def test_batched_gradients_equal_one_backward_per_token(build_tiny, noise_images):
    model, _, adapter, batch = _setup(build_tiny, "qwen2_5_vl", noise_images)
    _, _, batched = _all_gradients(model, adapter, batch, "logit", batched=True)
    _, _, looped = _all_gradients(model, adapter, batch, "logit", batched=False)
    for a, b in zip(batched, looped, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_attention_gradient_reads_the_predicting_row(family, build_tiny, noise_images):
    """LVLMs-Saliency: the map comes from row q(t) = i-1, where dL/dA is non-zero; row i (the
    reference's) has an identically zero gradient. Tokens get different, non-zero scores."""
    model, processor, adapter, batch = _setup(build_tiny, family, noise_images)
    targets, forward, grads = _all_gradients(model, adapter, batch, "nll")
    result = explain_batch(
        model, processor, noise_images[:2], QUESTION, COMPLETION, ["attention_gradient"], adapter
    )
    for b, sample in enumerate(batch.samples):
        naive = []
        for k, position in enumerate(sample.targets):
            own_row = [grads[layer][k, b, :, position, :] for layer in range(len(grads))]
            assert all(float(g.abs().max()) == 0.0 for g in own_row)  # the reference's row
            layer_maps = []
            for layer, probs in enumerate(forward.attentions):
                row = (
                    probs[b, :, position - 1].detach() * grads[layer][k, b, :, position - 1]
                ).abs()
                row = row.mean(0)
                assert float(row[position:].abs().max()) == 0.0  # tril: no future keys
                layer_maps.append(row / row.norm())
            naive.append(torch.stack(layer_maps).mean(0))
        naive = torch.stack(naive)  # (T, S)
        got = result["attention_gradient"][b]
        expected_tokens = naive[:, sample.visual].numpy()
        assert np.allclose(
            got.token_maps.reshape(len(sample.targets), -1), expected_tokens, atol=1e-6
        )
        assert np.allclose(got.response_map.reshape(-1), expected_tokens.mean(0), atol=1e-6)
        scores = got.token_scores
        first = sample.targets[0]
        for k, position in enumerate(sample.targets):
            keys = list(sample.prompt_text) + list(range(first, position))
            assert scores[k] == pytest.approx(float(naive[k, keys].mean()), abs=1e-6)
        assert np.all(scores > 0)
        assert len(np.unique(np.round(scores, 8))) == len(scores)


def _naive_glimpse(forward, grads, batch, b, head_temperature=0.5, depth_temperature=0.2):
    """GLIMPSE with explicit (S, S) relevance matrices: R = I; R = R + w_l Abar_l @ R."""
    sample = batch.samples[b]
    layers = len(grads)
    length = forward.attentions[0].shape[-1]
    probabilities = torch.softmax(forward.logits[b].detach(), dim=-1)
    real_keys = batch.attention_mask[b].bool()  # padding keys: A = 0, dz/dA is not
    rows = []
    for k, position in enumerate(sample.targets):
        fused, masses = [], []
        for layer in range(layers):
            attention, grad = forward.attentions[layer][b].detach(), grads[layer][k, b]
            weighted = attention * grad.clamp(min=0)
            scores = torch.stack(
                [
                    weighted[h].sum() / grad[h][:, real_keys].clamp(min=0).sum().clamp(min=1e-12)
                    for h in range(attention.shape[0])
                ]
            )
            w = torch.softmax(scores / head_temperature, dim=0)
            matrix = sum(w[h] * weighted[h] for h in range(attention.shape[0]))
            masses.append(matrix.abs().sum())
            row_sums = matrix.sum(-1, keepdim=True)
            fused.append(torch.where(row_sums > 0, matrix / row_sums.clamp(min=1e-300), matrix))
        evidence = torch.stack(masses) / torch.stack(masses).sum()
        prior = torch.softmax(
            torch.arange(1, layers + 1, dtype=torch.float64) / layers / depth_temperature, 0
        )
        weights = evidence * prior / (evidence * prior).sum()
        relevance = torch.eye(length, dtype=torch.float64)
        for layer in range(layers):
            relevance = relevance + weights[layer] * fused[layer] @ relevance
        rows.append(relevance[position - 1])
    rows = torch.stack(rows)
    confidence = torch.stack(
        [probabilities[k, batch.input_ids[b, p]] for k, p in enumerate(sample.targets)]
    )
    a_prompt = rows[:, sample.prompt_text].sum(1)
    a_visual = rows[:, sample.visual].sum(1)
    visual_map = ((confidence * a_prompt)[:, None] * rows[:, sample.visual]).sum(0)
    prompt_map = ((confidence * a_visual)[:, None] * rows[:, sample.prompt_text]).sum(0)
    return rows, visual_map, prompt_map


@pytest.mark.parametrize("family", FAMILIES)
def test_glimpse_matches_naive_full_matrix_propagation(family, build_tiny, noise_images):
    model, processor, adapter, batch = _setup(build_tiny, family, noise_images)
    targets, forward, grads = _all_gradients(model, adapter, batch, "logit")
    result = explain_batch(
        model, processor, noise_images[:2], QUESTION, COMPLETION, ["glimpse"], adapter
    )
    for b, sample in enumerate(batch.samples):
        rows, visual_map, prompt_map = _naive_glimpse(forward, grads, batch, b)
        got = result["glimpse"][b]
        assert np.allclose(
            got.token_maps.reshape(len(sample.targets), -1),
            rows[:, sample.visual].numpy(),
            rtol=1e-5,
            atol=1e-8,
        )
        assert np.allclose(got.response_map.reshape(-1), visual_map.numpy(), rtol=1e-5, atol=1e-9)
        assert np.allclose(got.prompt_saliency, prompt_map.numpy(), rtol=1e-5, atol=1e-9)
        assert got.prompt_token_ids == batch.input_ids[b, sample.prompt_text].tolist()


def test_glimpse_options_change_the_map(build_tiny, noise_images):
    """The ablation switches are wired (depth weighting matters, as in the paper's ablation)."""
    model, processor, adapter, _ = _setup(build_tiny, "qwen2_5_vl", noise_images)
    default = get_method("glimpse")
    flat = get_method("glimpse", depth_weighting=False)
    results = explain_batch(
        model, processor, noise_images[:1], QUESTION[:1], COMPLETION[:1], [default], adapter
    )
    ablated = explain_batch(
        model, processor, noise_images[:1], QUESTION[:1], COMPLETION[:1], [flat], adapter
    )
    assert not np.allclose(results["glimpse"][0].response_map, ablated["glimpse"][0].response_map)
    with pytest.raises(ValueError, match="valid options"):
        get_method("glimpse", temperature=1.0)
