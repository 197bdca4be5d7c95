"""Per-step LVLMs-Saliency scores of candidate tokens, with the KV cache (METHODS.md section 5).

For the token ``c`` that would follow the current sequence, ``L_c = -log p(c)`` at the query
row that PREDICTS it (the last row of the step) and

    S(c) = mean_{l in target layers} mean_{j in J} Sbar_l[j],
    Sbar_l = n(mean_h |A[l,h,row,:] * dL_c/dA[l,h,row,:]|),   n = L2 normalisation over keys,

with ``J`` = the question's tokens + the tokens generated so far (``tril`` is implicit: a
single row has no future keys). This is the same quantity as the saliency engine's
``attention_gradient`` ``token_scores`` (lookright.saliency.gradient_methods), for one row.

How, with the KV cache and without a second full forward. Earlier rows need no gradient
(causality: ``A[l]`` of the last row only influences the last row above layer ``l``; the cached
keys/values of earlier positions are constants), so only the one new row is differentiated,
exactly, from the lowest target layer up:

* a decoding step (one new row) runs from that layer on with gradients inside ``generate``:
  a pre-hook makes the layer's input a leaf and enables grad mode, the attention function of
  :mod:`lookright.decoding.attention` keeps the target layers' probabilities as graph nodes
  (while the values come from the model's own kernel), a hook on ``lm_head`` keeps the logits
  and restores grad mode. The cache entries the step wrote are detached after scoring.
* the prefill's last row (the first generated token; and every step with ``in_graph=False``):
  pre-hooks record the inputs of those layers during the normal step; after it, the layers run
  again for the ONE row, with gradients, on the cache minus that row (:class:`PrefixCache`:
  the row's own key/value is recomputed in the graph).

The K candidates then differ only in the row's loss: their K gradients come from ONE backward
with ``is_grads_batched`` (a vmap over K one-hot output gradients).

The public reference reads the gradient of another row than the one its loss is taken at;
the gradient is then identically zero and every candidate scores 0 (tests check that K
candidates get different, non-zero scores here).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from lookright.decoding.attention import AttentionSession
from lookright.models.base import VLMAdapter

TINY = 1e-12


class PrefixCache:
    """The model's KV cache minus its last ``n`` positions, read-only.

    The attention module calls ``update(k, v, layer)`` with the recomputed row; this returns
    the cached prefix followed by that row (graph-connected) and stores nothing.
    """

    def __init__(self, cache: Any, drop: int = 1) -> None:
        self.cache = cache
        self.drop = drop

    def _layer(self, layer_idx: int):
        layers = getattr(self.cache, "layers", None)
        if layers is None or not hasattr(layers[layer_idx], "keys"):
            raise TypeError(
                f"{type(self.cache).__name__}: SGRS needs a dynamic KV cache with per-layer "
                "keys/values (transformers' DynamicCache)"
            )
        return layers[layer_idx]

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        layer = self._layer(layer_idx)
        keep = layer.keys.shape[-2] - self.drop
        keys = torch.cat([layer.keys[..., :keep, :], key_states], dim=-2)
        values = torch.cat([layer.values[..., :keep, :], value_states], dim=-2)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self._layer(layer_idx).keys.shape[-2]) - self.drop


def _last_row(value: Any, dim: int) -> Any:
    if torch.is_tensor(value) and value.dim() >= -dim and value.shape[dim] > 1:
        index = [slice(None)] * value.dim()
        index[dim] = slice(-1, None)
        return value[tuple(index)]
    return value


class StepScorer:
    """Scores candidate tokens for the last row of each decoding step (see the module docstring).

    Decoding steps (one new row) run with gradients from the lowest target layer up
    (``in_graph=True``, default): no second forward, only the batched backward; the values,
    and so the tokens, are those of the plain model. The prefill's last row (and every step
    with ``in_graph=False``) is recomputed after the step from recorded layer inputs.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        adapter: VLMAdapter,
        session: AttentionSession,
        target_layers: list[int],
        *,
        in_graph: bool = True,
    ) -> None:
        self.model, self.adapter, self.session = model, adapter, session
        self.target_layers = sorted(target_layers)
        self.first = self.target_layers[0]
        self.layers = list(adapter.decoder_layers(model))[self.first :]
        self.in_graph = in_graph
        self.hidden: torch.Tensor | None = None
        self.kwargs: list[dict[str, Any] | None] = [None] * len(self.layers)
        self.cache: Any = None
        self.graph_logits: torch.Tensor | None = None
        self._grad_mode: bool | None = None
        self.handles: list[Any] = []

    # -- recording ------------------------------------------------------------------------
    def __enter__(self) -> StepScorer:
        self.session.graph_from = self.first
        self.session.target_layers = frozenset(self.target_layers)
        for offset, layer in enumerate(self.layers):
            self.handles.append(
                layer.register_forward_pre_hook(self._recorder(offset), with_kwargs=True)
            )
        lm_head = self.adapter.lm_head(self.model)
        self.handles.append(lm_head.register_forward_hook(self._keep_logits))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self._restore_grad_mode()
        self._release()
        self.session.graph_step = False
        self.hidden = self.cache = None
        self.kwargs = [None] * len(self.layers)

    def _restore_grad_mode(self) -> None:
        if self._grad_mode is not None:
            torch.set_grad_enabled(self._grad_mode)
            self._grad_mode = None

    def _release(self) -> None:
        """Drop the last step's graph; detach the cache entries it wrote (else every later
        step's graph would hang on to it)."""
        self.graph_logits = None
        self.session.probs = {}
        layers = getattr(self.cache, "layers", None) or []
        for layer in layers[self.first :]:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if torch.is_tensor(keys) and keys.requires_grad:
                layer.keys = keys.detach()
            if torch.is_tensor(values) and values.requires_grad:
                layer.values = values.detach()

    def _recorder(self, offset: int):
        def hook(module, args, kwargs):
            session = self.session
            if session.recompute:
                return None
            hidden = kwargs.get("hidden_states")
            if hidden is None:
                hidden = args[0]
            if offset == 0:
                self._release()
                self.cache = kwargs.get("past_key_values")
                if self.in_graph and hidden.shape[1] == 1 and self.cache is not None:
                    # a decoding step: from here on with gradients
                    self._grad_mode = torch.is_grad_enabled()
                    torch.set_grad_enabled(True)
                    session.graph_step = True
                    leaf = hidden.detach().requires_grad_(True)
                    if "hidden_states" in kwargs:
                        return args, {**kwargs, "hidden_states": leaf}
                    return (leaf, *args[1:]), kwargs
                session.graph_step = False
                self.hidden = hidden[:, -1:, :].detach().clone()
            if session.graph_step:
                return None
            kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            mask = kwargs.get("attention_mask")
            if torch.is_tensor(mask) and mask.dim() == 4:
                kwargs["attention_mask"] = mask[:, :, -1:, :]
            embeddings = kwargs.get("position_embeddings")
            if isinstance(embeddings, tuple):
                kwargs["position_embeddings"] = tuple(_last_row(e, -2) for e in embeddings)
            kwargs["position_ids"] = _last_row(kwargs.get("position_ids"), -1)
            self.kwargs[offset] = kwargs
            return None

        return hook

    def _keep_logits(self, module, args, output):
        if self.session.graph_step and not self.session.recompute:
            self.graph_logits = output[:, -1, :]
            self.session.graph_step = False
            self._restore_grad_mode()

    # -- scoring --------------------------------------------------------------------------
    def last_row_logits(self) -> torch.Tensor:
        """Recompute the step's last row from the lowest target layer up, with gradients.

        Returns the row's logits ``(B, V)``; the target layers' probabilities are left in
        ``session.probs`` as graph nodes.
        """
        if self.hidden is None or any(k is None for k in self.kwargs):
            raise RuntimeError("no decoding step was recorded (call inside model.generate)")
        session = self.session
        if self.cache is None:
            raise RuntimeError("SGRS needs generate(..., use_cache=True)")
        prefix = PrefixCache(self.cache)
        session.recompute = True
        session.probs = {}
        try:
            hidden = self.hidden.requires_grad_(True)
            for layer, kwargs in zip(self.layers, self.kwargs, strict=True):
                output = layer(hidden, **{**kwargs, "past_key_values": prefix})
                hidden = output[0] if isinstance(output, tuple) else output
            hidden = self.adapter.final_norm(self.model)(hidden)
            logits = self.adapter.lm_head(self.model)(hidden)[:, -1, :]
        finally:
            session.recompute = False
        return logits

    def scores(self, candidates: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``S(c)`` of ``candidates (B, K)`` token ids at the step's last row -> ``(B, K)``.

        ``key_mask (B, S)``: 1 on the keys J (question + generated tokens) of each row.
        """
        try:
            with torch.enable_grad():
                logits = self.graph_logits
                if logits is None:
                    logits = self.last_row_logits()
                dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
                nll = -torch.log_softmax(logits.to(dtype), dim=-1).gather(1, candidates)
                probs = [self.session.probs[layer] for layer in self.target_layers]
                count = candidates.shape[1]
                one_hots = torch.eye(count, dtype=nll.dtype, device=nll.device)
                one_hots = one_hots[:, None, :].expand(count, *nll.shape).contiguous()
                grads = torch.autograd.grad(
                    nll, probs, grad_outputs=one_hots, is_grads_batched=True, allow_unused=True
                )
        finally:
            self._release()
        total = None
        for attention, grad in zip(probs, grads, strict=True):
            if grad is None:
                grad = attention.new_zeros((count, *attention.shape))
            # (K, B, H, 1, S) -> mean over heads -> (K, B, S)
            saliency = (attention.detach()[None] * grad).abs().mean(dim=2)[:, :, 0, :]
            saliency = saliency / saliency.norm(dim=-1, keepdim=True).clamp_min(TINY)
            total = saliency if total is None else total + saliency
        total = total / len(probs)
        keys = key_mask[:, : total.shape[-1]].to(total.dtype)
        per_candidate = (total * keys[None]).sum(dim=-1) / keys.sum(dim=-1).clamp_min(1.0)
        return per_candidate.T.contiguous()
