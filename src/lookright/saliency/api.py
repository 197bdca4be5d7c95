"""Run any set of saliency methods on a batch, sharing the model passes they need.

``explain_batch(model, processor, images, questions, completions, ["logit_decomposition",
"glimpse"])`` returns ``{method name: [SaliencyResult per sample]}``. Row methods share one
forward (:mod:`row_pass`), gradient methods one differentiable forward plus one batched
backward sweep per objective (:mod:`gradient_pass`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel

import lookright.saliency.baselines  # noqa: F401  (registers methods)
import lookright.saliency.decomposition  # noqa: F401
import lookright.saliency.gradient_methods  # noqa: F401
import lookright.saliency.occlusion  # noqa: F401
from lookright.config import ConfigError
from lookright.models.base import VLMAdapter, adapter_for
from lookright.saliency.base import (
    METHODS,
    DirectMethod,
    GradientMethod,
    PerturbationMethod,
    RowMethod,
    RowNeeds,
    SaliencyMethod,
)
from lookright.saliency.batch import SaliencyBatch, prepare_batch
from lookright.saliency.gradient_pass import (
    batched_token_gradients,
    differentiable_forward,
    token_objectives,
)
from lookright.saliency.plan import build_row_request, gradient_targets
from lookright.saliency.row_pass import RowPass
from lookright.saliency.types import SaliencyResult, no_map


def available_methods() -> list[str]:
    """Registry names of every saliency method."""
    return sorted(METHODS)


def get_method(name: str, **options: Any) -> SaliencyMethod:
    """Instantiate a method by registry name; unknown names/options list the valid ones."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown saliency method {name!r}; valid methods: {available_methods()}"
        ) from None
    valid = {f.name for f in fields(cls)}
    unknown = set(options) - valid
    if unknown:
        raise ConfigError(
            f"{name}: unknown option(s) {sorted(unknown)}; valid options: {sorted(valid)}"
        )
    return cls(**options)


def _as_methods(methods: Sequence[str | SaliencyMethod]) -> list[SaliencyMethod]:
    return [get_method(m) if isinstance(m, str) else m for m in methods]


def run_methods(
    model: PreTrainedModel,
    adapter: VLMAdapter,
    batch: SaliencyBatch,
    methods: Sequence[str | SaliencyMethod],
) -> dict[str, list[SaliencyResult]]:
    """Run ``methods`` on a prepared batch (inputs already on the model's device)."""
    instances = _as_methods(methods)
    results: dict[str, list[SaliencyResult]] = {}
    was_training = model.training
    model.eval()
    try:
        results.update(
            _run_row_methods(
                model, adapter, batch, [m for m in instances if isinstance(m, RowMethod)]
            )
        )
        results.update(
            _run_gradient_methods(
                model, adapter, batch, [m for m in instances if isinstance(m, GradientMethod)]
            )
        )
        for method in instances:
            if isinstance(method, PerturbationMethod):
                results[method.name] = method.explain(model, adapter, batch)
            elif isinstance(method, DirectMethod):
                results[method.name] = method.explain(batch)
    finally:
        model.train(was_training)
    for per_sample in results.values():
        for result, view in zip(per_sample, batch.views, strict=True):
            result.view = view
    return {m.name: results[m.name] for m in instances}


def _run_row_methods(
    model, adapter, batch, methods: list[RowMethod]
) -> dict[str, list[SaliencyResult]]:
    results: dict[str, list[SaliencyResult]] = {}
    if methods and not any(sample.targets for sample in batch.samples):
        # every completion is empty: no row to recompute (a forward with zero query rows
        # cannot be split into heads), and no map to make
        return {
            m.name: [no_map(m.name, s.grid, "empty completion") for s in batch.samples]
            for m in methods
        }
    for generating in sorted({m.needs().cot_generating for m in methods}):
        group = [m for m in methods if m.needs().cot_generating == generating]
        needs = RowNeeds()
        for method in group:
            needs = needs | method.needs()
        plan = build_row_request(batch, needs)
        rows = RowPass(model, adapter).run(batch.inputs, plan.request)
        results |= {method.name: method.from_rows(batch, plan, rows) for method in group}
    return results


def _run_gradient_methods(
    model, adapter, batch, methods: list[GradientMethod]
) -> dict[str, list[SaliencyResult]]:
    if not methods:
        return {}
    targets = gradient_targets(batch)
    forward = differentiable_forward(model, adapter, batch.inputs, targets.rows)
    wrt = [*forward.attentions, forward.last_layer_input]
    results = {}
    for objective in sorted({m.objective for m in methods}):
        group = [m for m in methods if m.objective == objective]
        reducers = [m.reducer(batch, targets, forward) for m in group]
        if targets.positions.shape[1] > 0:
            values = token_objectives(forward.logits, targets.token_ids, objective)
            chunk, batched = min(m.chunk for m in group), all(m.batched for m in group)
            for tokens, grads in batched_token_gradients(
                values, wrt, targets.valid, chunk, batched
            ):
                for reducer in reducers:
                    reducer.update(tokens, grads[:-1], grads[-1])
        for method, reducer in zip(group, reducers, strict=True):
            results[method.name] = reducer.finish()
    return results


def explain_batch(
    model: PreTrainedModel,
    processor: Any,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    completions: Sequence[str],
    methods: Sequence[str | SaliencyMethod],
    adapter: VLMAdapter | None = None,
) -> dict[str, list[SaliencyResult]]:
    """Saliency maps of teacher-forced (image, question, completion) triples, per method."""
    adapter = adapter or adapter_for(model)
    batch = prepare_batch(model, processor, adapter, images, questions, completions)
    batch.to(_device(model))
    return run_methods(model, adapter, batch, methods)


def explain_sample(
    model: PreTrainedModel,
    processor: Any,
    image: Image.Image,
    question: str,
    completion: str,
    methods: Sequence[str | SaliencyMethod],
    adapter: VLMAdapter | None = None,
) -> dict[str, SaliencyResult]:
    """Single-sample :func:`explain_batch`."""
    batched = explain_batch(model, processor, [image], [question], [completion], methods, adapter)
    return {name: results[0] for name, results in batched.items()}


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device
