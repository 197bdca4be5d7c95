"""Rollout, TMME and raw attention against direct small-matrix computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from saliency_helpers import FAMILIES

from lookright.saliency import explain_batch, get_method
from lookright.saliency.baselines import rollout_rows
from lookright.saliency.batch import prepare_batch
from lookright.saliency.gradient_methods import propagate_rows
from lookright.saliency.gradient_pass import (
    batched_token_gradients,
    differentiable_forward,
    token_objectives,
)
from lookright.saliency.plan import gradient_targets

QUESTION = ["What color is the circle?", "Is there a star?"]
COMPLETION = ["<think>The circle is red.</think>red", "no"]


def test_rollout_by_hand():
    """Ahat = 0.5 I + 0.5 A: Ahat1 = [[1,0],[.25,.75]], Ahat2 = [[1,0],[.125,.875]];
    Ahat2 @ Ahat1 = [[1, 0], [0.34375, 0.65625]]."""
    a1 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]], dtype=torch.float64)
    a2 = torch.tensor([[[1.0, 0.0], [0.25, 0.75]]], dtype=torch.float64)
    rows = rollout_rows([a1, a2], torch.tensor([[1, 0]]))
    assert torch.allclose(rows[0, 0], torch.tensor([0.34375, 0.65625], dtype=torch.float64))
    assert torch.allclose(rows[0, 1], torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_additive_propagation_by_hand():
    """R = I; R += M1 R; R += M2 R with M1 = [[0,0],[.2,.1]], M2 = [[0,0],[.4,.3]]:
    R = [[1,0],[0.66,1.43]]."""
    m1 = torch.tensor([[[[0.0, 0.0], [0.2, 0.1]]]], dtype=torch.float64)
    m2 = torch.tensor([[[[0.0, 0.0], [0.4, 0.3]]]], dtype=torch.float64)
    row = propagate_rows(torch.tensor([[1]]), [m1, m2], None)
    assert torch.allclose(row[0, 0], torch.tensor([0.66, 1.43], dtype=torch.float64))
    weighted = propagate_rows(
        torch.tensor([[1]]), [m1, m2], torch.tensor([[[0.5]], [[2.0]]], dtype=torch.float64)
    )
    # R1 = I + .5 M1 = [[1,0],[.1,1.05]]; R2 = R1 + 2 M2 R1 -> row 1 = [.1 + .8 + .06, 1.05 + .63]
    assert torch.allclose(weighted[0, 0], torch.tensor([0.96, 1.68], dtype=torch.float64))


def test_propagation_rows_equal_full_matrix_products():
    generator = torch.Generator().manual_seed(0)
    size, layers = 7, 4
    matrices = [
        torch.rand(1, 1, size, size, generator=generator, dtype=torch.float64)
        for _ in range(layers)
    ]
    weights = torch.rand(layers, 1, 1, generator=generator, dtype=torch.float64)
    full = torch.eye(size, dtype=torch.float64)
    for layer in range(layers):
        full = full + weights[layer, 0, 0] * matrices[layer][0, 0] @ full
    for row in range(size):
        got = propagate_rows(torch.tensor([[row]]), matrices, weights)[0, 0]
        assert torch.allclose(got, full[row])
    heads = [m[0].softmax(-1) for m in matrices]
    product = torch.eye(size, dtype=torch.float64)
    for attention in heads:
        product = (0.5 * torch.eye(size) + 0.5 * attention[0]) @ product
    assert torch.allclose(rollout_rows(heads, torch.arange(size)[None])[0], product)


def _attentions_and_grads(model, adapter, batch):
    targets = gradient_targets(batch)
    forward = differentiable_forward(model, adapter, batch.inputs, targets.rows)
    values = token_objectives(forward.logits, targets.token_ids, "logit")
    chunks = list(batched_token_gradients(values, forward.attentions, targets.valid, 64))
    assert len(chunks) == 1
    return [a.detach() for a in forward.attentions], chunks[0][1]


@pytest.mark.parametrize("family", FAMILIES)
def test_baselines_match_full_matrix_computations(family, build_tiny, noise_images):
    model, processor, adapter = build_tiny(family)
    model = model.double()
    batch = prepare_batch(model, processor, adapter, noise_images[:2], QUESTION, COMPLETION)
    attentions, grads = _attentions_and_grads(model, adapter, batch)
    methods = ["rollout", "raw_attention", "tmme", get_method("tmme_last_k", last_layers=1)]
    results = explain_batch(
        model, processor, noise_images[:2], QUESTION, COMPLETION, methods, adapter
    )
    length = attentions[0].shape[-1]
    eye = torch.eye(length, dtype=torch.float64)
    for b, sample in enumerate(batch.samples):
        rollout = eye
        for attention in attentions:
            rollout = (0.5 * eye + 0.5 * attention[b].mean(0)) @ rollout
        raw = torch.stack([a[b].mean(0) for a in attentions]).mean(0)
        tmme_rows, last_rows = [], []
        for k, _ in enumerate(sample.targets):
            relevance, last = eye, eye
            for layer, attention in enumerate(attentions):
                m = (grads[layer][k, b] * attention[b]).clamp(min=0).mean(0)
                relevance = relevance + m @ relevance
                if layer == len(attentions) - 1:
                    last = last + m @ last
            tmme_rows.append(relevance)
            last_rows.append(last)
        predicting = [p - 1 for p in sample.targets]
        expected = {
            "rollout": rollout[predicting][:, sample.visual],
            "raw_attention": raw[predicting][:, sample.visual],
            "tmme": torch.stack([r[q] for r, q in zip(tmme_rows, predicting, strict=True)])[
                :, sample.visual
            ],
            "tmme_last_k": torch.stack([r[q] for r, q in zip(last_rows, predicting, strict=True)])[
                :, sample.visual
            ],
        }
        for name, per_token in expected.items():
            got = results[name][b]
            assert np.allclose(
                got.token_maps.reshape(len(predicting), -1), per_token.numpy(), rtol=1e-5, atol=1e-8
            ), name
            assert np.allclose(
                got.response_map.reshape(-1), per_token.mean(0).numpy(), rtol=1e-5, atol=1e-8
            ), name
