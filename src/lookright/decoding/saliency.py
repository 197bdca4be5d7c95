"""Per-step LVLMs-Saliency scores of candidate tokens, with the KV cache (docs/methods.md, SGRS).

For the token ``c`` that would follow the current sequence, ``L_c = -log p(c)`` at the query
row that PREDICTS it (the last row of the step) and

    S(c) = mean_{l in target layers} mean_{j in J} Sbar_l[j],
    Sbar_l = n(mean_h |A[l,h,row,:] * dL_c/dA[l,h,row,:]|),   n = L2 normalisation over keys,

with ``J`` = the question's tokens + the tokens generated so far (``tril`` is implicit: a
single row has no future keys). This is the same quantity as the saliency engine's
``attention_gradient`` ``token_scores`` (lookright.saliency.gradient_methods), for one row
(LVLMs-Saliency, arXiv 2601.20279; docs/methods.md#step_saliency; a test checks the equality).

How, with the KV cache and no second forward. Earlier rows need no gradient (causality: the
cached keys/values of earlier positions are constants for this row), so only the one new row
is differentiated. Every scored row is a one-row decoding step: :func:`prefill_all_but_last`
runs the prompt without its last token through ``generate`` (filling a KV cache), and the
decoding ``generate`` then continues from that cache (transformers' documented cache re-use),
so even the first generated token comes from a one-row step.

During such a step, a forward pre-hook on the model (public torch API) turns grad mode on,
with the parameters' ``requires_grad`` off, so nothing is recorded until the attention function
of :mod:`lookright.decoding.attention` makes the lowest target layer's probabilities a graph
leaf; everything above it is then recorded (the target layers' probabilities are kept in
``session.probs``), the forward hook keeps the step's logits and turns grad mode off again.
The output VALUES stay the model's own kernel's, so tokens are bit for bit the plain model's.

The K candidates then differ only in the row's loss: their K gradients come from ONE backward
with ``is_grads_batched`` (a vmap over K one-hot output gradients).

The public reference reads the gradient of another row than the one its loss is taken at;
the gradient is then identically zero and every candidate scores 0 (tests check that K
candidates get different, non-zero scores here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from lookright.decoding.attention import AttentionSession
from lookright.models.base import VLMAdapter
from lookright.models.transformers_internals import cache_keyword

TINY = 1e-12


def per_token_keys(inputs: Mapping[str, Any]) -> list[str]:
    """The inputs with one value per prompt position (ids, mask, token types)."""
    shape = inputs["attention_mask"].shape
    return [k for k, v in inputs.items() if torch.is_tensor(v) and v.shape == shape]


def prefill_all_but_last(
    model: PreTrainedModel,
    inputs: Mapping[str, Any],
    generation_config: Any,
    session: AttentionSession | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the prompt minus its last token through ``generate``, filling a new KV cache.

    Returns ``(continuation, cache_argument)``: the per-token inputs of the whole prompt (the
    image is already in the cache) and ``{<cache keyword>: cache}``;
    ``model.generate(**continuation, **cache_argument, ...)`` then starts with a one-row step
    for the prompt's last token, so the first generated token is scored like every other.
    Positions (M-RoPE included) come from ``generate`` itself in both calls. ``session``: the
    active attention session, told the whole prompt's width (LocoRE's window starts after it).
    """
    keyword = cache_keyword(model)
    cache = DynamicCache(config=model.config)
    token_keys = per_token_keys(inputs)
    head = {k: (v[:, :-1] if k in token_keys else v) for k, v in inputs.items()}
    prefill_config = generation_config.__class__(
        **{**generation_config.to_dict(), "max_new_tokens": 1, "num_beams": 1}
    )
    model.generate(**head, **{keyword: cache}, generation_config=prefill_config)  # type: ignore[operator]
    if session is not None:
        session.prompt_width = int(inputs["input_ids"].shape[1])
    return {k: inputs[k] for k in token_keys}, {keyword: cache}


class StepScorer:
    """Scores candidate tokens for the last row of each one-row decoding step.

    Use inside :func:`lookright.decoding.attention.attention_session`, around a ``generate``
    that continues from :func:`prefill_all_but_last` (see the module docstring).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        adapter: VLMAdapter,
        session: AttentionSession,
        target_layers: list[int],
    ) -> None:
        self.model, self.adapter, self.session = model, adapter, session
        self.target_layers = sorted(target_layers)
        self.graph_logits: torch.Tensor | None = None
        self._grad_mode: bool | None = None
        self._requires_grad: list[tuple[torch.nn.Parameter, bool]] = []
        self.handles: list[Any] = []

    def __enter__(self) -> StepScorer:
        self.session.graph_from = self.target_layers[0]
        self.session.target_layers = frozenset(self.target_layers)
        self._requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.requires_grad_(False)
        self.handles = [
            self.model.register_forward_pre_hook(self._start_step, with_kwargs=True),
            self.model.register_forward_hook(self._end_step, always_call=True),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._restore_grad_mode()
        self._release()
        for parameter, flag in self._requires_grad:
            parameter.requires_grad_(flag)
        self._requires_grad = []

    # -- the step -------------------------------------------------------------------------
    def _start_step(self, module, args, kwargs):
        self._release()
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        self.session.graph_step = ids is not None and ids.shape[1] == 1
        if self.session.graph_step:
            self._grad_mode = torch.is_grad_enabled()
            torch.set_grad_enabled(True)

    def _end_step(self, module, args, output):
        if self.session.graph_step:
            logits = getattr(output, "logits", None)
            self.graph_logits = None if logits is None else logits[:, -1, :]
            self.session.graph_step = False
        self._restore_grad_mode()

    def _restore_grad_mode(self) -> None:
        if self._grad_mode is not None:
            torch.set_grad_enabled(self._grad_mode)
            self._grad_mode = None

    def _release(self) -> None:
        """Drop the last step's graph, and detach the cache entries it wrote."""
        self.graph_logits = None
        self.session.release_graph()

    # -- scoring --------------------------------------------------------------------------
    def scores(self, candidates: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``S(c)`` of ``candidates (B, K)`` token ids at the step's last row -> ``(B, K)``.

        ``key_mask (B, S)``: 1 on the keys J (question + generated tokens) of each row.
        """
        logits = self.graph_logits
        found = [self.session.probs.get(layer) for layer in self.target_layers]
        probs = [p for p in found if p is not None]
        if logits is None or logits.grad_fn is None or len(probs) < len(found):
            self._release()
            raise RuntimeError(
                "no one-row decoding step was recorded with gradients: score inside "
                "model.generate continuing from prefill_all_but_last() "
                "(lookright.decoding.generate does this)"
            )
        try:
            with torch.enable_grad():
                dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
                nll = -torch.log_softmax(logits.to(dtype), dim=-1).gather(1, candidates)
                count = candidates.shape[1]
                one_hots = torch.eye(count, dtype=nll.dtype, device=nll.device)
                one_hots = one_hots[:, None, :].expand(count, *nll.shape).contiguous()
                grads = torch.autograd.grad(
                    nll, probs, grad_outputs=one_hots, is_grads_batched=True, allow_unused=True
                )
        finally:
            self._release()
        total = torch.zeros(())
        for attention, grad in zip(probs, grads, strict=True):
            if grad is None:
                grad = attention.new_zeros((count, *attention.shape))
            # (K, B, H, 1, S) -> mean over heads -> (K, B, S)
            saliency = (attention.detach()[None] * grad).abs().mean(dim=2)[:, :, 0, :]
            total = total + saliency / saliency.norm(dim=-1, keepdim=True).clamp_min(TINY)
        total = total / len(probs)
        keys = key_mask[:, : total.shape[-1]].to(total.dtype)
        per_candidate = (total * keys[None]).sum(dim=-1) / keys.sum(dim=-1).clamp_min(1.0)
        return per_candidate.T.contiguous()
