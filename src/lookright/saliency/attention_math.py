"""Attention arithmetic shared by the row pass and the gradient pass, for every family.

Qwen2.5-VL, Qwen2-VL and LLaMA (LLaVA's decoder) compute attention the same way in
transformers 5.x: ``q/k/v = {q,k,v}_proj(x)`` viewed as ``(B, heads, S, head_dim)``, RoPE
applied by the modeling module's own ``apply_rotary_pos_emb(q, k, cos, sin)`` with
``position_embeddings = (cos, sin)`` of shape ``(B, S, head_dim)`` (for Qwen the M-RoPE
sections are already folded into cos/sin by the rotary embedding), GQA by repeating each of
the ``kv`` heads ``heads / kv`` times consecutively, then ``softmax(q k^T * scaling + mask)``
with the softmax in float32. The mask is causal plus key padding (plus a sliding window where
a layer has one); lookright builds it from the 2-D attention mask instead of reading the
implementation-specific 4-D mask, so any attention implementation (SDPA, flash) can run the
model's own forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lookright.models.transformers_internals import modeling_function


def rotary_function(attention: nn.Module) -> Callable:
    """The family's ``apply_rotary_pos_emb`` (from the attention module's modeling file)."""
    function = modeling_function(attention, "apply_rotary_pos_emb")
    if function is None:
        raise TypeError(
            f"{type(attention).__name__}: its module has no apply_rotary_pos_emb; "
            "lookright's attention recomputation supports Qwen2-VL, Qwen2.5-VL and LLaMA decoders"
        )
    return function


def head_counts(attention: nn.Module) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim) of a decoder attention module."""
    config = attention.config
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(attention, "head_dim", config.hidden_size // heads))
    return heads, kv_heads, head_dim


def split_heads(x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """``(B, N, heads*head_dim) -> (B, heads, N, head_dim)``."""
    b, n, _ = x.shape
    return x.view(b, n, -1, head_dim).transpose(1, 2)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(
    attention: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    """RoPE of ``x (B, heads, N, d)`` with ``cos/sin (B, N, d)``: ``x cos + rotate_half(x) sin``.

    This is what every supported family's ``apply_rotary_pos_emb`` computes in transformers 5.x
    (Qwen's M-RoPE sections are already folded into cos/sin); calling it directly avoids the
    family function's second (key) output. ``rotary_function`` still rejects unknown modules,
    and the exactness test checks the result against the model's own attention output.
    """
    rotary_function(attention)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def grouped_matmul(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left (B, H, N, k) @ right (B, kv, k, M) -> (B, H, N, M)`` without repeating ``right``.

    GQA: query head ``h = j * groups + g`` uses kv head ``j`` (transformers' ``repeat_kv``),
    so ``left`` viewed as ``(B, kv, groups * N, k)`` lines up with ``right``.
    """
    batch, heads, rows, _ = left.shape
    kv_heads = right.shape[1]
    grouped = left.reshape(batch, kv_heads, (heads // kv_heads) * rows, left.shape[-1])
    return (grouped @ right).view(batch, heads, rows, right.shape[-1])


def allowed_keys(
    query_positions: torch.Tensor, key_padding: torch.Tensor, sliding_window: int | None = None
) -> torch.Tensor:
    """Boolean ``(B, R, S)``: key p is visible from query row i (causal, not padding, window).

    ``query_positions (B, R)`` are sequence positions of the query rows; ``key_padding
    (B, S)`` is the 2-D attention mask (1 = real token).
    """
    keys = torch.arange(key_padding.shape[1], device=key_padding.device)
    rows = query_positions[:, :, None]
    allowed = (keys[None, None, :] <= rows) & key_padding[:, None, :].bool()
    if sliding_window:
        allowed &= keys[None, None, :] > rows - int(sliding_window)
    return allowed


def attention_probabilities(
    queries: torch.Tensor,
    keys: torch.Tensor,
    allowed: torch.Tensor,
    scaling: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Post-softmax attention ``(B, H, R, S)`` of query rows over all keys.

    ``queries (B, H, R, d)``, ``keys (B, kv, S, d)`` (RoPE'd; kv heads are shared by
    ``H / kv`` query heads), ``allowed (B, R, S)``. Masked keys get the most negative finite
    value (not -inf), so a fully masked (padding) row is uniform instead of NaN, as in
    transformers. The softmax runs in ``dtype`` (float32 at least, like eager attention).
    """
    return torch.softmax(masked_scores(queries, keys, ~allowed, scaling, dtype), dim=-1)


def masked_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    blocked: torch.Tensor,
    scaling: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Pre-softmax scores ``(B, H, R, S)`` with blocked keys at the most negative finite value.

    ``blocked (B, R, S)`` is ``~allowed_keys(...)``. Same convention as
    :func:`attention_probabilities`.
    """
    scores = grouped_matmul(queries.to(dtype) * scaling, keys.to(dtype).transpose(-1, -2))
    return scores.masked_fill_(blocked[:, None], torch.finfo(dtype).min)


def work_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 models (exactness tests), float32 otherwise."""
    return torch.float64 if model_dtype == torch.float64 else torch.float32


def batched_gather(x: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """Gather along ``dim`` with a per-batch index ``(B, N)``: ``x`` is ``(B, ..., S, ...)``."""
    shape = [1] * x.dim()
    shape[0], shape[dim] = index.shape[0], index.shape[1]
    expanded = index.view(shape).expand(
        *[x.shape[i] if i != dim else index.shape[1] for i in range(x.dim())]
    )
    return torch.gather(x, dim, expanded)
