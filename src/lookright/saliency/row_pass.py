"""One teacher-forced forward that recomputes only the attention rows a map needs.

The model runs its normal attention implementation (SDPA, flash, ...). Hooks on each decoder
layer's ``self_attn`` capture the normalised input ``x`` and ``(cos, sin)``; hooks on
``k_proj``/``v_proj`` keep their outputs (no recomputation of K/V). After the layer's attention
ran, lookright recomputes ``q`` for the requested query rows only, RoPE's q and k (the
families' ``apply_rotary_pos_emb`` formula), and the softmax rows ``A[l, h, rows, :]``
(O(L * H * rows * S)); everything derived from them is reduced on the fly, so memory stays
O(B * H * rows * S) for one layer at a time.

Saliency-R1 (logit decomposition, arXiv 2604.04500; docs/methods.md#logit_decomposition): with the final RMSNorm scale frozen,
``z = E_u[y] . (g * h^L / rms(h^L))`` is linear in the residual stream, and the direct
contribution of context position p to the logit of the token predicted at row i is

    c_p = sum_{l,h} A[l,h,i,p] * e . (W_O^l[:, h] v_p^{l,h}),   e = E_u[y] * g / rms(h_i^L).

The hooks use ``e~ = E_u[y] * g`` and divide by the per-row ``rms`` captured at the final norm
after the forward (the contribution is linear in 1/rms). The CoT bottleneck (section 2) uses
the same rows: ``B[l,h,a,j] = sum_t A[l,h,q(a),t] A[l,h,t,j]`` (row t predicts token t+1, a
completion token, so it is already among the rows).

Compared with the Saliency-R1 reference (``generate(output_attentions=True)`` with a patched
SDPA), this needs no eager attention, no HF ``generate`` (any rollout engine works: pass the
token ids), and computes only the rows a map reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel

from lookright.models.base import VLMAdapter
from lookright.models.transformers_internals import layer_input, rotary_embeddings
from lookright.saliency.attention_math import (
    allowed_keys,
    apply_rope,
    attention_probabilities,
    batched_gather,
    head_counts,
    masked_scores,
    split_heads,
    work_dtype,
)


@dataclass
class CotRequest:
    """Slots (indices into the request's rows) of the bottleneck's answer and thought rows.

    ``answer_slots[b, a]`` is the row predicting answer token a; ``thought_slots[b, t]`` is the
    row AT thought position t (the second hop's query row, see :mod:`decomposition`; it is the
    row predicting token t+1); ``thought_positions[b, t]`` the same positions as keys of the
    first hop.
    """

    answer_slots: torch.Tensor
    answer_valid: torch.Tensor
    thought_slots: torch.Tensor
    thought_positions: torch.Tensor
    thought_valid: torch.Tensor


@dataclass
class RowRequest:
    """What one row pass computes.

    ``rows (B, R)``: query positions; ``targets (B, R)``: the token whose logit is decomposed
    at each row (used where ``decompose (B, R)``); ``keys (B, P)``: the key positions whose
    contributions/attention are kept (usually the visual tokens; all positions for the
    exactness test). Padded entries are marked invalid in ``row_valid``/``key_valid``.
    """

    rows: torch.Tensor
    row_valid: torch.Tensor
    keys: torch.Tensor
    key_valid: torch.Tensor
    targets: torch.Tensor | None = None
    decompose: torch.Tensor | None = None
    cot: CotRequest | None = None
    mean_attention: bool = False
    full_attention: bool = False


@dataclass
class RowPassResult:
    """Outputs of a row pass (float tensors in the work dtype, on the model's device).

    contributions: ``(B, R, P)`` direct logit contributions ``c_p`` (rows not decomposed: 0).
    direction: ``(B, R, D)`` the frozen-norm unembedding direction ``e`` of each row.
    final_hidden: ``(B, R, D)`` pre-norm residual stream ``h^L`` at the rows.
    rms: ``(B, R)`` ``rms(h^L)`` including the norm's epsilon.
    cot_contributions: ``(B, Na, P)`` bottleneck contributions ``c[a, j]``.
    mean_attention: ``(B, R, P)`` attention of each row to the keys, mean over layers and heads.
    head_mean_attention: per layer ``(B, S, S)`` attention averaged over heads (all rows).
    """

    contributions: torch.Tensor | None = None
    direction: torch.Tensor | None = None
    final_hidden: torch.Tensor | None = None
    rms: torch.Tensor | None = None
    cot_contributions: torch.Tensor | None = None
    mean_attention: torch.Tensor | None = None
    head_mean_attention: list[torch.Tensor] = field(default_factory=list)


class _Taps:
    """Per-layer captures of the current forward (cleared after each layer is reduced)."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None
        self.cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def clear(self) -> None:
        self.hidden = self.cos_sin = self.keys = self.values = None


def _batch_cos_sin(cos_sin, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` expanded to the batch (LLaMA shares one ``(1, S, d)`` across the batch)."""
    cos, sin = cos_sin
    return cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)


class AttentionRows:
    """Softmax rows ``(B, H, R, S)`` of one layer, read at a few columns only.

    (A fused softmax followed by gathers is cheaper on CPU than ``exp(score - logsumexp)`` at
    the gathered columns, which needs several unfused passes; on GPU both are negligible.)
    """

    def __init__(self, scores: torch.Tensor):
        self.probs = torch.softmax(scores, dim=-1)

    def columns(self, keys: torch.Tensor) -> torch.Tensor:
        """``A[b, h, r, keys[b, p]]`` for every row: ``(B, H, R, P)``."""
        return batched_gather(self.probs, keys, 3)

    def block(self, slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``A[b, h, slots[b, i], keys[b, p]]``: ``(B, H, N, P)``."""
        return batched_gather(batched_gather(self.probs, slots, 2), keys, 3)


class RowPass:
    """Runs :class:`RowRequest` on a model with hooks (see the module docstring)."""

    def __init__(self, model: PreTrainedModel, adapter: VLMAdapter):
        self.model = model
        self.adapter = adapter
        self.layers = list(adapter.decoder_layers(model))
        self.norm = adapter.final_norm(model)
        self.lm_head = adapter.lm_head(model)

    # -- public -----------------------------------------------------------------------
    @torch.no_grad()
    def run(self, inputs, request: RowRequest) -> RowPassResult:
        """One forward of the base model (no lm_head over all rows) with the reducing hooks."""
        with self.attached(inputs, request) as finish:
            self.model.model(**inputs, use_cache=False)
        return finish()

    @contextmanager
    def attached(self, inputs, request: RowRequest) -> Iterator[Callable[[], RowPassResult]]:
        """Hooks installed for the duration of the block; yields ``finish() -> RowPassResult``.

        Lets the saliency ride on a forward that runs anyway (e.g. the policy's log-prob
        forward in GRPO): run ``model(**inputs)`` inside the block (under ``no_grad`` or not:
        the hooks themselves do not build a graph), then call ``finish()`` after it.
        """
        dtype = work_dtype(next(self.model.parameters()).dtype)
        self._request, self._dtype = request, dtype
        self._padding = inputs["attention_mask"].to(request.rows.device)
        self._blocked = ~allowed_keys(request.rows, self._padding)
        self._unembed = self._unembedding(request, dtype)
        self._result = RowPassResult()
        self._layer_count = 0
        handles = self._install()
        try:
            yield self._finish
        finally:
            for handle in handles:
                handle.remove()

    # -- hooks ------------------------------------------------------------------------
    def _install(self) -> list:
        handles = []
        for index, layer in enumerate(self.layers):
            attention, taps = layer.self_attn, _Taps()
            handles.append(
                attention.register_forward_pre_hook(self._capture_input(taps), with_kwargs=True)
            )
            handles.append(attention.k_proj.register_forward_hook(self._capture("keys", taps)))
            handles.append(attention.v_proj.register_forward_hook(self._capture("values", taps)))
            handles.append(attention.register_forward_hook(self._reduce(index, taps)))
        handles.append(self.norm.register_forward_pre_hook(self._capture_final, with_kwargs=True))
        return handles

    @staticmethod
    def _capture_input(taps: _Taps):
        def hook(module, args, kwargs):
            taps.hidden = layer_input(args, kwargs)
            taps.cos_sin = rotary_embeddings(kwargs)

        return hook

    @staticmethod
    def _capture(name: str, taps: _Taps):
        def hook(module, args, output):
            setattr(taps, name, output)

        return hook

    def _capture_final(self, module, args, kwargs):
        hidden = layer_input(args, kwargs).detach()
        self._result.final_hidden = batched_gather(hidden, self._request.rows, 1).to(self._dtype)

    def _reduce(self, index: int, taps: _Taps):
        def hook(module, args, output):
            with torch.no_grad():
                self._reduce_layer(index, module, taps)
            taps.clear()

        return hook

    # -- per-layer reduction --------------------------------------------------------------
    def _row_scores(self, attention, taps: _Taps) -> AttentionRows:
        """Attention rows of the request (scores + log-normaliser) for one layer."""
        request, dtype = self._request, self._dtype
        _, _, head_dim = head_counts(attention)
        cos, sin = _batch_cos_sin(taps.cos_sin, request.rows.shape[0])
        row_hidden = batched_gather(taps.hidden, request.rows, 1)
        queries = split_heads(attention.q_proj(row_hidden), head_dim)
        row_cos, row_sin = (
            batched_gather(cos, request.rows, 1),
            batched_gather(sin, request.rows, 1),
        )
        queries = apply_rope(attention, queries, row_cos, row_sin)
        keys = apply_rope(attention, split_heads(taps.keys, head_dim), cos, sin)
        blocked = self._blocked
        window = getattr(attention, "sliding_window", None)
        if window:
            blocked = ~allowed_keys(request.rows, self._padding, window)
        if request.full_attention:
            self._result.head_mean_attention.append(
                self._full_head_mean(attention, taps, keys, window)
            )
        return AttentionRows(masked_scores(queries, keys, blocked, attention.scaling, dtype))

    def _full_head_mean(self, attention, taps, keys, window) -> torch.Tensor:
        _, _, head_dim = head_counts(attention)
        cos, sin = _batch_cos_sin(taps.cos_sin, taps.hidden.shape[0])
        queries = apply_rope(
            attention, split_heads(attention.q_proj(taps.hidden), head_dim), cos, sin
        )
        positions = torch.arange(taps.hidden.shape[1], device=queries.device)
        positions = positions[None].expand(taps.hidden.shape[0], -1)
        allowed = allowed_keys(positions, self._padding, window)
        probs = attention_probabilities(queries, keys, allowed, attention.scaling, self._dtype)
        return probs.mean(dim=1)

    def _reduce_layer(self, index: int, attention, taps: _Taps) -> None:
        request = self._request
        rows = self._row_scores(attention, taps)
        key_probs = rows.columns(request.keys) * request.key_valid[:, None, None, :]
        self._layer_count += 1
        if request.mean_attention:
            self._accumulate("mean_attention", key_probs.mean(dim=1))
        if self._unembed is None:
            return
        values = split_heads(taps.values, head_dim=head_counts(attention)[2])
        value_scores = self._value_scores(attention, values, request.keys)  # (B, R, H, P)
        if request.decompose is not None:
            contribution = (key_probs.transpose(1, 2) * value_scores).sum(dim=2)
            self._accumulate("contributions", contribution * request.decompose[..., None])
        if request.cot is not None:
            self._accumulate("cot_contributions", self._bottleneck(rows, key_probs, value_scores))

    def _value_scores(self, attention, values: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """``s[b, r, h, p] = e~_r . (W_O[:, head h] v_p^h)`` for the key positions, (B, R, H, P).

        ``values (B, kv, S, d)``; query head ``h = j * groups + g`` reads kv head ``j``.
        """
        heads, kv_heads, head_dim = head_counts(attention)
        weight = attention.o_proj.weight.to(self._dtype)  # (D, H*d)
        batch, rows = self._unembed.shape[:2]
        per_head = (self._unembed @ weight).view(batch, rows, kv_heads, heads // kv_heads, head_dim)
        key_values = batched_gather(values, keys, 2).to(self._dtype)  # (B, kv, P, d)
        scores = torch.einsum("brkgd,bkpd->brkgp", per_head, key_values)
        return scores.reshape(batch, rows, heads, -1)

    def _bottleneck(
        self, rows: AttentionRows, key_probs: torch.Tensor, value_scores: torch.Tensor
    ) -> torch.Tensor:
        """Saliency-R1 two-hop contribution ``sum_h B[h,a,j] s[a,h,j]`` of one layer, (B, Na, P)."""
        cot = self._request.cot
        to_thought = rows.block(cot.answer_slots, cot.thought_positions)  # (B, H, Na, Nt)
        to_thought = to_thought * cot.thought_valid[:, None, None, :]
        thought_to_keys = batched_gather(key_probs, cot.thought_slots, 2)  # (B, H, Nt, P)
        two_hop = to_thought @ thought_to_keys  # (B, H, Na, P)
        answer_scores = batched_gather(value_scores, cot.answer_slots, 1)  # (B, Na, H, P)
        return (two_hop.transpose(1, 2) * answer_scores).sum(dim=2) * cot.answer_valid[..., None]

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        current = getattr(self._result, name)
        setattr(self._result, name, value if current is None else current + value)

    # -- unembedding and final norm -----------------------------------------------------------
    def _unembedding(self, request: RowRequest, dtype: torch.dtype) -> torch.Tensor | None:
        """``e~ = E_u[y] * g`` per row ``(B, R, D)`` (1/rms applied after the forward)."""
        if request.targets is None:
            return None
        rows = self.lm_head.weight[request.targets.clamp_min(0)].to(dtype)
        gain = getattr(self.norm, "weight", None)
        return rows if gain is None else rows * gain.to(dtype)

    def _finish(self) -> RowPassResult:
        result = self._result
        if result.mean_attention is not None:
            result.mean_attention = result.mean_attention / max(self._layer_count, 1)
        if self._unembed is None or result.final_hidden is None:
            return result
        epsilon = getattr(self.norm, "variance_epsilon", getattr(self.norm, "eps", 1e-6))
        result.rms = torch.sqrt(result.final_hidden.pow(2).mean(dim=-1) + epsilon)
        result.direction = self._unembed / result.rms[..., None]
        if result.contributions is not None:
            result.contributions = result.contributions / result.rms[..., None]
        if result.cot_contributions is not None:
            answer_rms = batched_gather(result.rms, self._request.cot.answer_slots, 1)
            result.cot_contributions = result.cot_contributions / answer_rms[..., None]
        return result
