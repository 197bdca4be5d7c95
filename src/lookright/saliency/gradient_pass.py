"""A forward with differentiable attention probabilities, and batched per-token gradients.

Gradient-based methods (LVLMs-Saliency, GLIMPSE, TMME, Grad-CAM) need ``dz_t / dA[l, h]`` for
every explained token t. ``output_attentions`` does not help (nothing under SDPA, and under
eager the probabilities are returned detached from nothing we can differentiate against
without keeping them in the graph). lookright instead replaces, for the duration of one
forward, the ``forward`` of each decoder layer's ``self_attn`` module by a function that
computes the same thing explicitly (q/k/v projections, the family's RoPE, GQA, causal +
padding mask, float32 softmax, ``o_proj``) and keeps the probabilities ``A[l]`` (B, H, S, S)
as graph nodes. The vision tower keeps its own attention implementation and runs without a
graph (grad mode off for its forward), and the input of the first decoder layer is detached
and made to require grad, so only the language model is differentiated, whatever the
parameters' ``requires_grad``.

Per-token gradients: one objective value per (sample, token) ``Z[b, k]``; one call of
``torch.autograd.grad(Z, wrt, grad_outputs=one_hots, is_grads_batched=True)`` computes the
gradients of a chunk of k's at once (vmap over the backward), instead of a Python loop of one
backward per token. Samples of a batch are independent, so the one-hot of column k selects
token k of every sample in the same backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from lookright.models.base import VLMAdapter
from lookright.models.transformers_internals import (
    layer_input,
    replace_layer_input,
    rotary_embeddings,
)
from lookright.saliency.attention_math import (
    allowed_keys,
    apply_rope,
    attention_probabilities,
    batched_gather,
    grouped_matmul,
    head_counts,
    split_heads,
    work_dtype,
)

AttentionEdit = Callable[[int, torch.Tensor], torch.Tensor]
"""``edit(layer_index, probs) -> probs``: a hook to perturb attention (finite-difference tests)."""


@dataclass
class GradientForward:
    """Graph outputs of one differentiable forward.

    attentions: per decoder layer ``(B, H, S, S)`` post-softmax probabilities (graph nodes).
    last_layer_input: ``(B, S, D)`` hidden states entering the last decoder layer.
    logits: ``(B, K, V)`` logits at the requested rows.
    """

    attentions: list[torch.Tensor]
    last_layer_input: torch.Tensor
    logits: torch.Tensor


def _explicit_attention(module, layer_index: int, state: dict) -> Callable:
    _, _, head_dim = head_counts(module)

    def forward(*args, **kwargs):
        hidden_states = layer_input(args, kwargs)
        batch, length, _ = hidden_states.shape
        cos, sin = rotary_embeddings(kwargs)
        cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)
        queries = apply_rope(module, split_heads(module.q_proj(hidden_states), head_dim), cos, sin)
        keys = apply_rope(module, split_heads(module.k_proj(hidden_states), head_dim), cos, sin)
        values = split_heads(module.v_proj(hidden_states), head_dim)
        positions = torch.arange(length, device=hidden_states.device)[None].expand(batch, -1)
        allowed = allowed_keys(positions, state["padding"], getattr(module, "sliding_window", None))
        probs = attention_probabilities(queries, keys, allowed, module.scaling, state["dtype"])
        if state["edit"] is not None:
            probs = state["edit"](layer_index, probs)
        state["attentions"].append(probs)
        output = grouped_matmul(probs.to(values.dtype), values)
        output = output.transpose(1, 2).reshape(batch, length, -1)
        return module.o_proj(output), probs

    return forward


@contextmanager
def explicit_attention(model: PreTrainedModel, adapter: VLMAdapter, state: dict) -> Iterator[None]:
    """Temporarily run every decoder attention explicitly, recording probabilities in ``state``."""
    layers = list(adapter.decoder_layers(model))
    originals = []
    for index, layer in enumerate(layers):
        module = layer.self_attn
        originals.append((module, module.__dict__.get("forward")))
        module.forward = _explicit_attention(module, index, state)

    def make_leaf(module, args, kwargs):
        leaf = layer_input(args, kwargs).detach().requires_grad_(True)
        return replace_layer_input(args, kwargs, leaf)

    def keep_last_input(module, args, kwargs):
        state["last_layer_input"] = layer_input(args, kwargs)

    def vision_without_graph(module, args):
        state["grad_enabled"] = torch.is_grad_enabled()
        torch.set_grad_enabled(False)

    def restore_grad_mode(module, args, output):
        torch.set_grad_enabled(state.pop("grad_enabled", True))

    vision = adapter.vision_tower(model)
    handles = [
        layers[0].register_forward_pre_hook(make_leaf, with_kwargs=True),
        layers[-1].register_forward_pre_hook(keep_last_input, with_kwargs=True),
        vision.register_forward_pre_hook(vision_without_graph),
        vision.register_forward_hook(restore_grad_mode, always_call=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, original in originals:
            if original is None:
                del module.forward
            else:
                module.forward = original


def differentiable_forward(
    model: PreTrainedModel,
    adapter: VLMAdapter,
    inputs,
    rows: torch.Tensor,
    edit: AttentionEdit | None = None,
) -> GradientForward:
    """Forward with graph-kept attention; logits only at ``rows (B, K)`` (lm_head on K rows)."""
    dtype = work_dtype(next(model.parameters()).dtype)
    state = {
        "padding": inputs["attention_mask"],
        "dtype": dtype,
        "edit": edit,
        "attentions": [],
        "last_layer_input": None,
    }
    with torch.enable_grad(), explicit_attention(model, adapter, state):
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
        logits = adapter.lm_head(model)(batched_gather(hidden, rows, 1)).to(dtype)
    return GradientForward(state["attentions"], state["last_layer_input"], logits)


def token_objectives(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """``Z[b, k]``: the logit of target k (``"logit"``) or its NLL ``-log p`` (``"nll"``)."""
    if kind == "logit":
        return torch.gather(logits, 2, targets[..., None])[..., 0]
    if kind == "nll":
        return -torch.gather(F.log_softmax(logits, dim=-1), 2, targets[..., None])[..., 0]
    raise ValueError(f"unknown objective {kind!r}; valid: 'logit', 'nll'")


def batched_token_gradients(
    objectives: torch.Tensor,
    wrt: list[torch.Tensor],
    valid: torch.Tensor,
    chunk: int = 16,
    batched: bool = True,
) -> Iterator[tuple[slice, list[torch.Tensor]]]:
    """Yield ``(token slice, [grad of Z[:, k] w.r.t. each of wrt, stacked on a leading k axis])``.

    ``objectives (B, K)``; ``valid (B, K)`` masks padded tokens (their gradients are zero).
    With ``batched`` (default) each chunk is ONE vmapped backward
    (``is_grads_batched=True``); ``batched=False`` is the one-backward-per-token loop, kept for
    the benchmark comparison.
    """
    count = objectives.shape[1]
    weights = valid.to(objectives.dtype)
    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        if batched:
            one_hots = torch.zeros(
                stop - start, *objectives.shape, dtype=objectives.dtype, device=objectives.device
            )
            for j, k in enumerate(range(start, stop)):
                one_hots[j, :, k] = weights[:, k]
            grads = torch.autograd.grad(
                objectives,
                wrt,
                grad_outputs=one_hots,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
            yield (
                slice(start, stop),
                [_zeros_if_none(g, w, stop - start) for g, w in zip(grads, wrt, strict=True)],
            )
        else:
            per_token = []
            for k in range(start, stop):
                grads = torch.autograd.grad(
                    (objectives[:, k] * weights[:, k]).sum(),
                    wrt,
                    retain_graph=True,
                    allow_unused=True,
                )
                per_token.append(
                    [_zeros_if_none(g, w, None) for g, w in zip(grads, wrt, strict=True)]
                )
            yield slice(start, stop), [torch.stack(items) for items in zip(*per_token, strict=True)]


def _zeros_if_none(
    grad: torch.Tensor | None, like: torch.Tensor, count: int | None
) -> torch.Tensor:
    if grad is not None:
        return grad
    shape = like.shape if count is None else (count, *like.shape)
    return torch.zeros(shape, dtype=like.dtype, device=like.device)
