"""A half-precision model's saliency maths runs in float32 (issue 15, bug 6).

Real checkpoints run in bf16/fp16; softmax rows, logit contributions summed over thousands of
visual tokens, relevance propagation and gradient reductions must not be rounded to 8 bits of
mantissa on the way. (Their agreement with float32 maps, end to end, is asserted by the
conformance run.)
"""

from __future__ import annotations

import torch

from lookright.models import load_model
from lookright.saliency.base import RowNeeds
from lookright.saliency.batch import prepare_batch
from lookright.saliency.gradient_methods import Glimpse, GradCam
from lookright.saliency.gradient_pass import (
    batched_token_gradients,
    differentiable_forward,
    token_objectives,
)
from lookright.saliency.plan import build_row_request, gradient_targets
from lookright.saliency.row_pass import RowPass
from tests.real_geometry import boxed_image


def test_bf16_model_saliency_intermediates_are_float32(real_geometry_checkpoints):
    loaded = load_model(real_geometry_checkpoints["qwen2_5_vl"])  # bf16, its hub dtype
    model, adapter = loaded.model.eval(), loaded.adapter
    assert next(model.parameters()).dtype == torch.bfloat16
    batch = prepare_batch(
        model,
        loaded.processor,
        adapter,
        [
            boxed_image((308, 196), [0.2, 0.2, 0.6, 0.7]),
            boxed_image((168, 252), [0.1, 0.5, 0.5, 0.9]),
        ],
        ["What is it?", "Where is it?"],
        ["<think>A white box.</think>box", "<think>Left.</think>left"],
    )
    plan = build_row_request(batch, RowNeeds(decompose=True, cot=True, mean_attention=True))
    rows = RowPass(model, adapter).run(batch.inputs, plan.request)
    for name in ("contributions", "cot_contributions", "mean_attention", "rms", "direction"):
        assert getattr(rows, name).dtype == torch.float32, name
    targets = gradient_targets(batch)
    forward = differentiable_forward(model, adapter, batch.inputs, targets.rows)
    assert all(a.dtype == torch.float32 for a in forward.attentions)
    assert forward.logits.dtype == torch.float32
    reducers = [m.reducer(batch, targets, forward) for m in (GradCam(), Glimpse())]
    values = token_objectives(forward.logits, targets.token_ids, "logit")
    wrt = [*forward.attentions, forward.last_layer_input]
    for tokens, grads in batched_token_gradients(values, wrt, targets.valid, 16):
        assert grads[-1].dtype == torch.bfloat16  # the model's own hidden states
        for reducer in reducers:
            reducer.update(tokens, grads[:-1], grads[-1])
    for reducer in reducers:
        assert reducer.vectors.dtype == torch.float32, type(reducer).__name__
