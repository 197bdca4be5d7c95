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
* SGRS (:mod:`lookright.decoding.saliency`), from the lowest target layer up: on a decoding
  step that runs with gradients (``graph_step``) the output VALUES still come from the
  model's implementation (so tokens are bit-for-bit those of the plain model) while the
  gradient flows through an explicit computation of the row, whose post-softmax
  probabilities in the target layers are kept as graph nodes for ``dL/dA``; when the prompt's
  last row is recomputed after the prefill (``recompute``), the row is computed explicitly.

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
import sys
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
    # SGRS: ``recompute`` (a row recomputed after the step: explicit attention everywhere) or
    # ``graph_step`` (the step itself runs with gradients from layer ``graph_from`` up);
    # either way the probabilities of ``target_layers`` are kept in ``probs`` as graph nodes
    recompute: bool = False
    graph_step: bool = False
    graph_from: int = 0
    target_layers: frozenset[int] = frozenset()
    probs: dict[int, torch.Tensor] = field(default_factory=dict)
    _bias_key: tuple | None = None
    _bias_value: Any = None

    _functions: dict[type, Any] = field(default_factory=dict)

    def base_function(self, module: torch.nn.Module):
        """The model's own attention function for ``module`` (eager: its modeling file's)."""
        function = self._functions.get(type(module))
        if function is None:
            eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
            if eager is None:
                from transformers.models.llama.modeling_llama import eager_attention_forward

                eager = eager_attention_forward
            function = ALL_ATTENTION_FUNCTIONS.get_interface(self.base, eager)
            self._functions[type(module)] = function
        return function

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
) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q k^T * scaling + mask)`` with optional LocoRE on ``span``, and its output.

    ``query (B, H, R, d)``, ``key/value (B, KV, S, d)`` (GQA: kv head j serves query heads
    ``j * H/KV ..``, as transformers' ``repeat_kv``, without repeating). Returns
    ``(output (B, R, H, d), probs (B, H, R, S))``, the probabilities in float32 (float64 for
    float64 models), differentiable.
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
    layer = module.layer_idx
    if (  # the hot path: a decoding step this session leaves untouched
        q_length == 1
        and not (session.recompute or session.graph_step)
        and (layer not in session.locore_layers or session.locore_beta <= 0)
    ):
        return base(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scaling = module.scaling if scaling is None else scaling
    if q_length == kv_length:  # prefill
        if not session.recompute:
            session.prompt_width = kv_length
            session._bias_key = session._bias_value = None
        return base(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    span = session.window(layer, kv_length) if q_length == 1 else None
    beta, renormalise = session.locore_beta, session.locore_renormalise
    if session.recompute:
        output, probs = explicit_attention(
            query, key, value, attention_mask, scaling, span, beta, renormalise
        )
        if layer in session.target_layers:
            session.probs[layer] = probs
        return output, probs
    in_graph = session.graph_step and layer >= session.graph_from and torch.is_grad_enabled()
    if in_graph and (span is None or renormalise):
        # SGRS decoding step: the VALUES of the model's kernel (tokens unchanged, bit for bit),
        # the GRADIENT of the explicit row, whose probabilities are kept for dL/dA
        with torch.no_grad():
            mask = attention_mask
            if span is not None:
                mask = session.biased_mask(attention_mask, kv_length, span, query)
            output, _ = base(
                module, query, key, value, mask, dropout=dropout, scaling=scaling, **kwargs
            )
        explicit, probs = explicit_attention(
            query, key, value, attention_mask, scaling, span, beta, renormalise
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
    if in_graph and layer in session.target_layers:
        session.probs[layer] = probs
    return output, probs.detach().to(query.dtype)


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
        config = layer.self_attn.config
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

    ``locore`` (None = off) configures LocoRE; SGRS sets ``recompute``/``target_layers`` on
    the yielded session itself. The model's implementation must be ``sdpa`` or ``eager``
    (a flash kernel takes no additive bias).
    """
    configs = _text_configs(model, adapter)
    base = configs[0]._attn_implementation
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
    originals = [c._attn_implementation for c in configs]
    for config in configs:
        _SESSIONS[id(config)] = session
        config._attn_implementation = ATTENTION_NAME
    try:
        yield session
    finally:
        for config, original in zip(configs, originals, strict=True):
            config._attn_implementation = original
            _SESSIONS.pop(id(config), None)
