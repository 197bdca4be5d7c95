"""The current policy as the model-based rewards see it: one teacher-forced forward.

The saliency rewards (Saliency-R1's alignment, SAYO's region attention) read the policy's
attention over prompt + completion. They get it from ONE teacher-forced forward of the current
policy (the saliency engine's row pass, :mod:`lookright.saliency.row_pass`), never from the
attention matrices of generation. So the rollouts may come from any generation backend: HF
``generate`` here, TRL's vLLM mode on clusters (vLLM never exposes attention weights; the
reward recomputes what it needs from the token ids of the rollout).

With PEFT LoRA the policy is the base model with LoRA layers injected. Every projection the
row pass calls (``q_proj``, ``k_proj``, ``v_proj``) runs through its LoRA layer, but the
logit decomposition also READS ``o_proj.weight``, which for a LoRA layer is the frozen base
weight: :func:`lora_effective_o_proj` swaps in the effective weight ``W + BA*scale`` for the
duration of the forward, so the maps are those of the adapted policy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel

from lookright.models.base import VLMAdapter, adapter_for
from lookright.saliency.batch import SaliencyBatch, prepare_batch


class _EffectiveLinear(nn.Module):
    """A frozen linear layer with a given (merged) weight and bias."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight.to(x.dtype), self.bias)


def _lora_weight(module: nn.Module) -> torch.Tensor | None:
    """``W + sum_adapters delta`` of an unmerged PEFT LoRA linear layer, else None."""
    if not hasattr(module, "get_delta_weight") or not hasattr(module, "base_layer"):
        return None
    if getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return None
    active = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
    if not active:
        return None
    weight = module.base_layer.weight.detach().clone()
    for name in active:
        weight += module.get_delta_weight(name).to(weight.dtype)
    return weight


@contextmanager
def lora_effective_o_proj(model: PreTrainedModel, adapter: VLMAdapter) -> Iterator[None]:
    """Temporarily replace LoRA ``o_proj`` layers by linear layers with the merged weight.

    Exact for a no-grad forward in eval mode (LoRA dropout is off); no-op without LoRA.
    """
    swapped = []
    with torch.no_grad():
        for layer in adapter.decoder_layers(model):
            attention = layer.self_attn
            weight = _lora_weight(attention.o_proj)
            if weight is None:
                continue
            bias = attention.o_proj.base_layer.bias
            original = attention.o_proj
            attention.o_proj = _EffectiveLinear(weight, None if bias is None else bias.detach())
            swapped.append((attention, original))
    try:
        yield
    finally:
        for attention, original in swapped:
            attention.o_proj = original


def unwrap_policy(model: nn.Module) -> PreTrainedModel:
    """The transformers model under a PEFT wrapper (LoRA layers stay injected)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model  # type: ignore[return-value]


class Policy:
    """Access to the current policy for the model-based rewards.

    Built from a model (tests, benchmarks) or bound to a trainer after it was created
    (:meth:`bind_trainer`), so the rewards always see the weights being trained.
    """

    def __init__(
        self,
        model: nn.Module | None,
        processor: Any,
        adapter: VLMAdapter | None = None,
        *,
        autocast: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        self._model = model
        self._get_model: Callable[[], nn.Module] | None = None
        self.processor = processor
        self._adapter = adapter
        self._autocast = autocast or nullcontext

    def bind_trainer(self, trainer: Any) -> Policy:
        """Follow ``trainer.model`` (unwrapped by its accelerator) and its autocast."""
        accelerator = trainer.accelerator
        self._get_model = lambda: accelerator.unwrap_model(trainer.model)
        self._autocast = accelerator.autocast
        return self

    @property
    def model(self) -> PreTrainedModel:
        model = self._get_model() if self._get_model is not None else self._model
        if model is None:
            raise RuntimeError("Policy has no model: give one or bind_trainer(trainer) first")
        return unwrap_policy(model)

    @property
    def adapter(self) -> VLMAdapter:
        if self._adapter is None:
            self._adapter = adapter_for(self.model)
        return self._adapter

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @contextmanager
    def forward_context(self) -> Iterator[PreTrainedModel]:
        """Eval mode, no grad, the trainer's autocast and merged LoRA ``o_proj`` weights."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), self._autocast(), lora_effective_o_proj(model, self.adapter):
                yield model
        finally:
            model.train(was_training)

    def prepare(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        completion_ids: Sequence[Sequence[int]] | None = None,
        completions: Sequence[str] | None = None,
        *,
        share_images: bool = False,
    ) -> SaliencyBatch:
        """A teacher-forced batch (prompt + the rollout's own completion ids) on the device.

        With ``share_images`` (call it inside :meth:`forward_context`), samples that hold the
        SAME image object (GRPO's ``num_generations`` rollouts of one prompt) share one run of
        the vision encoder: see :func:`share_image_features`.
        """
        batch = prepare_batch(
            self.model,
            self.processor,
            self.adapter,
            list(images),
            list(questions),
            completions=None if completion_ids is not None else list(completions or []),
            completion_ids=None if completion_ids is None else [list(c) for c in completion_ids],
        )
        batch = batch.to(self.device)
        if share_images:
            share_image_features(self.model, batch, [id(image) for image in images])
        return batch


def share_image_features(model: PreTrainedModel, batch: SaliencyBatch, keys: Sequence) -> bool:
    """Encode each distinct image once and hand the features to the forward.

    Replaces ``pixel_values`` in ``batch.inputs`` by ``mm_encoder_outputs`` (transformers' own
    argument for precomputed encoder outputs), built from the vision encoder run on the first
    sample of each distinct ``keys`` value only: with G rollouts per prompt the encoder runs
    B times instead of B*G, with identical features. Qwen2-VL/2.5-VL layouts
    (``image_grid_thw``) only; returns False (batch unchanged) otherwise or when every key is
    distinct.
    """
    inputs = batch.inputs
    grid = inputs.get("image_grid_thw")
    encode = getattr(getattr(model, "model", None), "get_image_features", None)
    if grid is None or encode is None or "pixel_values" not in inputs:
        return False
    first: dict = {}
    owner = [first.setdefault(key, b) for b, key in enumerate(keys)]
    if len(first) == len(owner) or grid.shape[0] != len(owner):
        return False
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    patches = grid.prod(-1).tolist()
    chunks = torch.split(inputs["pixel_values"], patches)
    unique = sorted(first.values())
    encoded = encode(
        torch.cat([chunks[b] for b in unique]), grid[unique], return_dict=True
    ).pooler_output
    features = dict(zip(unique, encoded, strict=True))
    del inputs["pixel_values"]
    inputs["mm_encoder_outputs"] = {
        "image": BaseModelOutputWithPooling(pooler_output=[features[o] for o in owner])
    }
    return True
