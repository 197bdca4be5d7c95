"""One attention function for LocoRE and SGRS, registered through transformers' AttentionInterface.

Inside :func:`attention_session` the language model's config names ``"lookright"`` as its
attention implementation (registered with ``AttentionInterface`` and ``AttentionMaskInterface``;
no transformers source is patched) and the session remembers the model's own implementation
(``sdpa`` or ``eager``). Every decoder attention call then comes here with the query, the
cached keys/values (RoPE applied, cache updated by the model's own attention module) and the
mask the model built with its own implementation's mask function:

* prefill (query length = key length): the model's implementation, untouched; the prompt
  width is recorded (left padding puts every sample's generated tokens in the same columns).
* a decoding step (one query row) in a LocoRE layer: the bias ``log(1 + beta)`` on the keys of
  the last ``w_s`` generated tokens is added to the mask and the model's implementation runs
  (``renormalise=True``, exactly multiply-then-renormalise); or the row is computed explicitly
  and its weights on those keys multiplied by ``1 + beta`` (``renormalise=False``).
* SGRS (:mod:`lookright.decoding.saliency`), on a one-row decoding step that runs with
  gradients (``graph_step``), from the lowest target layer up: the output VALUES still come
  from the model's implementation (so tokens are bit-for-bit those of the plain model) while
  the gradient flows through an explicit computation of the row; the lowest target layer's
  probabilities are the graph's leaf (the parameters do not require grad during scoring) and
  every target layer's probabilities are kept as graph nodes for ``dL/dA``. The key/value
  tensors such a step wrote to the cache are detached after scoring
  (:meth:`AttentionSession.release_graph`).

Everything else is the model's implementation with the model's mask, so beta = 0 or a layer
outside the LocoRE layers is bit-for-bit the plain model.

Why not the saliency engine's ``gradient_pass.explicit_attention``: it replaces each attention
``forward`` by a whole-sequence, cache-free computation (``S x S`` probabilities, mask rebuilt
from the 2-D padding mask). Decoding has one new query row per step against a KV cache; this
function keeps the model's projections, RoPE and cache update and only swaps the kernel, and
reuses the engine's ``grouped_matmul``/``work_dtype`` (:mod:`lookright.saliency.attention_math`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from lookright.decoding.params import LocoreParams, layer_indices
from lookright.models.base import VLMAdapter
from lookright.models.transformers_internals import (
    attention_implementation,
    modeling_function,
    release_cache_graph,
)
from lookright.saliency.attention_math import grouped_matmul, work_dtype

ATTENTION_NAME = "lookright"
SUPPORTED_BASES = ("sdpa", "eager")

# id(text config) -> session; a session is active while its context manager runs.
_SESSIONS: dict[int, AttentionSession] = {}


@dataclass
class AttentionSession:
    """State shared by the attention function during one decoding call."""

    base: str
    n_layers: int
    locore_layers: frozenset[int] = frozenset()
    locore_beta: float = 0.0
    locore_window: int = 1
    locore_renormalise: bool = True
    prompt_width: int | None = None
    # SGRS: a ``graph_step`` runs with gradients from layer ``graph_from`` up; the
    # probabilities of ``target_layers`` are kept in ``probs`` as graph nodes, the key/value
    # tensors the step wrote to the cache in ``graph_cache`` (detached by ``release_graph``)
    graph_step: bool = False
    graph_from: int = 0
    target_layers: frozenset[int] = frozenset()
    probs: dict[int, torch.Tensor] = field(default_factory=dict)
    graph_cache: list[torch.Tensor] = field(default_factory=list)
    _bias_key: tuple | None = None
    _bias_value: Any = None

    _functions: dict[type, Any] = field(default_factory=dict)

    def base_function(self, module: torch.nn.Module):
        """The model's own attention function for ``module`` (eager: its modeling file's)."""
        function = self._functions.get(type(module))
        if function is None:
            eager = modeling_function(module, "eager_attention_forward")
            if eager is None:
                from transformers.models.llama.modeling_llama import eager_attention_forward

                eager = eager_attention_forward
            function = ALL_ATTENTION_FUNCTIONS.get_interface(self.base, eager)
            self._functions[type(module)] = function
        return function

    def release_graph(self) -> None:
        """Forget the last graph step: its probabilities, and the graph its cache entries hold."""
        self.probs = {}
        release_cache_graph(*self.graph_cache)
        self.graph_cache = []

    @property
    def locore_active(self) -> bool:
        return self.locore_beta > 0 and bool(self.locore_layers)

    def window(self, layer: int, kv_length: int) -> tuple[int, int] | None:
        """Key columns ``[lo, hi)`` LocoRE reinforces at this layer and key length, or None."""
        if not self.locore_active or layer not in self.locore_layers:
            return None
        if self.prompt_width is None:
            return None
        generated = kv_length - self.prompt_width
        if generated <= 0:
            return None
        return kv_length - min(generated, self.locore_window), kv_length

    def biased_mask(
        self, mask: torch.Tensor | None, kv_length: int, span: tuple[int, int], like: torch.Tensor
    ) -> torch.Tensor:
        """The model's mask plus ``log(1 + beta)`` on the window keys, in ``like``'s dtype and
        device (cached per step: every layer of a step shares the model's mask)."""
        dtype, device = like.dtype, like.device
        key = (id(mask), kv_length, span, dtype, device)
        if self._bias_key == key:
            return self._bias_value[1]
        bias = torch.zeros(1, 1, 1, kv_length, dtype=dtype, device=device)
        bias[..., span[0] : span[1]] = math.log1p(self.locore_beta)
        if mask is None:
            biased = bias
        elif mask.dtype == torch.bool:
            biased = torch.where(mask[..., :kv_length], bias, torch.finfo(dtype).min)
        else:
            biased = mask[..., :kv_length].to(dtype) + bias
        # keep a reference to ``mask`` so its id cannot be reused while cached
        self._bias_key, self._bias_value = key, (mask, biased)
        return biased


def _session_of(config) -> AttentionSession:
    session = _SESSIONS.get(id(config))
    if session is None:
        raise RuntimeError(
            "the 'lookright' attention implementation runs only inside "
            "lookright.decoding.attention_session()"
        )
    return session


def additive_mask(
    mask: torch.Tensor | None, kv_length: int, dtype: torch.dtype
) -> torch.Tensor | float:
    """A transformers mask (None, boolean "attend" or additive float) as an additive float mask."""
    if mask is None:
        return 0.0
    mask = mask[..., :kv_length]
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)
    return mask.to(dtype)


def explicit_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    span: tuple[int, int] | None = None,
    beta: float = 0.0,
    renormalise: bool = True,
    *,
    leaf: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scaling + mask)`` with optional LocoRE on ``span``, and its output.

    ``query (B, H, R, d)``, ``key/value (B, KV, S, d)`` (GQA: kv head j serves query heads
    ``j * H/KV ..``, as transformers' ``repeat_kv``, without repeating). Returns
    ``(output (B, R, H, d), probs (B, H, R, S))``, the probabilities in float32 (float64 for
    float64 models), differentiable. ``leaf``: where nothing upstream requires grad, make the
    probabilities a graph leaf, so that everything computed from them is recorded.
    """
    dtype = work_dtype(query.dtype)
    kv_length = key.shape[-2]
    scores = grouped_matmul(query.to(dtype), key.to(dtype).transpose(-1, -2)) * scaling
    scores = scores + additive_mask(mask, kv_length, dtype)
    if span is not None and beta > 0 and renormalise:
        bias = torch.zeros(kv_length, dtype=dtype, device=scores.device)
        bias[span[0] : span[1]] = math.log1p(beta)
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1)
    if span is not None and beta > 0 and not renormalise:
        gamma = torch.ones(kv_length, dtype=dtype, device=scores.device)
        gamma[span[0] : span[1]] = 1.0 + beta
        probs = probs * gamma
    if leaf and torch.is_grad_enabled() and not probs.requires_grad:
        probs.requires_grad_(True)
    output = grouped_matmul(probs.to(value.dtype), value)
    return output.transpose(1, 2).contiguous(), probs


def lookright_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The registered ``"lookright"`` attention function (see the module docstring)."""
    session = _SESSIONS.get(id(module.config)) or _session_of(module.config)
    base = session.base_function(module)
    q_length, kv_length = query.shape[-2], key.shape[-2]
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    if (  # the hot path: a decoding step this session leaves untouched
        q_length == 1
        and not session.graph_step
        and (layer not in session.locore_layers or session.locore_beta <= 0)
    ):
        return base(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scaling = float(module.scaling if scaling is None else scaling)  # type: ignore[arg-type]
    if q_length == kv_length:  # prefill
        session.prompt_width = kv_length
        session._bias_key = session._bias_value = None
        return base(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    span = session.window(layer, kv_length) if q_length == 1 else None
    beta, renormalise = session.locore_beta, session.locore_renormalise
    in_graph = session.graph_step and layer >= session.graph_from and torch.is_grad_enabled()
    if in_graph:
        # SGRS decoding step: the VALUES of the model's kernel (tokens unchanged, bit for bit),
        # the GRADIENT of the explicit row, whose probabilities are kept for dL/dA
        session.graph_cache += [key, value]
        with torch.no_grad():
            mask = attention_mask
            if span is not None and renormalise:
                mask = session.biased_mask(attention_mask, kv_length, span, query)
            if span is None or renormalise:
                output, _ = base(
                    module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs
                )
            else:
                output, _ = explicit_attention(
                    query, key, value, attention_mask, scaling, span, beta, False
                )
        explicit, probs = explicit_attention(
            query, key, value, attention_mask, scaling, span, beta, renormalise, leaf=True
        )
        if layer in session.target_layers:
            session.probs[layer] = probs
        return output.detach() + (explicit - explicit.detach()), None
    if span is None:
        return base(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if renormalise:
        mask = session.biased_mask(attention_mask, kv_length, span, query)
        return base(module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs)
    output, probs = explicit_attention(
        query, key, value, attention_mask, scaling, span, beta, False
    )
    return output, probs.to(query.dtype)


def lookright_mask(*args: Any, config, **kwargs: Any):
    """Mask function of ``"lookright"``: the session's base implementation's mask function."""
    return ALL_MASK_ATTENTION_FUNCTIONS[_session_of(config).base](*args, config=config, **kwargs)


def register() -> None:
    """Register ``"lookright"`` with transformers' attention and mask interfaces (idempotent)."""
    AttentionInterface.register(ATTENTION_NAME, lookright_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, lookright_mask)


def _text_configs(model: PreTrainedModel, adapter: VLMAdapter) -> list[Any]:
    """The distinct config objects the decoder's attention modules and mask creation read."""
    configs = [adapter.text_model(model).config]
    for layer in adapter.decoder_layers(model):
        config = layer.self_attn.config  # type: ignore[union-attr]
        if all(config is not c for c in configs):
            configs.append(config)
    return configs


@contextmanager
def attention_session(
    model: PreTrainedModel,
    adapter: VLMAdapter,
    *,
    locore: LocoreParams | None = None,
    family: str | None = None,
) -> Iterator[AttentionSession]:
    """Route the decoder's attention through :func:`lookright_attention` for the duration.

    ``locore`` (None = off) configures LocoRE; SGRS (:class:`StepScorer`) sets
    ``graph_from``/``target_layers`` on the yielded session itself. The model's implementation
    must be ``sdpa`` or ``eager`` (a flash kernel takes no additive bias). The switch goes
    through ``model.set_attn_implementation({"text_config": ...})``: the vision tower keeps
    its own implementation.
    """
    configs = _text_configs(model, adapter)
    base = attention_implementation(configs[0])
    if any(_SESSIONS.get(id(c)) is not None for c in configs):
        raise RuntimeError("a lookright attention session is already active on this model")
    if base not in SUPPORTED_BASES:
        raise ValueError(
            f"lookright decoding needs attn_implementation in {list(SUPPORTED_BASES)}, the "
            f"model uses {base!r} (load it with attn_implementation='sdpa')"
        )
    register()
    n_layers = len(adapter.decoder_layers(model))
    session = AttentionSession(base=base, n_layers=n_layers)
    if locore is not None:
        session.locore_beta = locore.resolved_beta(family or adapter.family)
        session.locore_window = locore.window
        session.locore_renormalise = locore.renormalise
        session.locore_layers = frozenset(layer_indices(locore.layers, n_layers))
    for config in configs:
        _SESSIONS[id(config)] = session
    try:
        _switch(model, configs, ATTENTION_NAME)
        yield session
    finally:
        _switch(model, configs, base)
        for config in configs:
            _SESSIONS.pop(id(config), None)


def _switch(model: PreTrainedModel, configs: list[Any], implementation: str) -> None:
    """Set the language model's attention implementation (public API), and check it took."""
    model.set_attn_implementation({"text_config": implementation})
    wrong = [c for c in configs if attention_implementation(c) != implementation]
    if wrong:
        raise RuntimeError(
            f"{type(model).__name__}.set_attn_implementation({{'text_config': "
            f"{implementation!r}}}) left {len(wrong)} decoder config(s) on "
            f"{attention_implementation(wrong[0])!r}"
        )
