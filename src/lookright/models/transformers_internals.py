"""Every place where lookright relies on transformers internals, and nothing else.

lookright uses transformers through its documented interfaces wherever one exists:
``from_pretrained``/``save_pretrained``, ``generate`` (including its documented re-use of a
pre-filled KV cache), the ``AttentionInterface``/``AttentionMaskInterface`` registries with
``set_attn_implementation``, the models' ``forward`` arguments and output fields, and plain
``torch.nn.Module`` hooks. What is left has no documented interface. Each item below names what
it relies on; ``tests/models/test_transformers_internals.py`` checks every item on real tiny
models of each supported family and fails with a message naming the item, so an upgrade that
breaks one says which, instead of failing deep inside a decode or saliency job.

Checked against transformers 5.23.0 and 5.25.0 (``CHECKED_TRANSFORMERS``).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

CHECKED_TRANSFORMERS: tuple[str, ...] = ("5.23.0", "5.25.0")

# The names of the internals, as the test and the errors print them.
CACHE_KEYWORD = "KV-cache keyword of forward/generate ('cache' or 'past_key_values')"
LAYER_INPUT = "decoder layer / attention module input 'hidden_states' (keyword or first argument)"
ROTARY_KWARG = "attention module keyword 'position_embeddings' = (cos, sin)"
MODELING_FUNCTION = "modeling-file function ('apply_rotary_pos_emb', 'eager_attention_forward')"
ATTN_IMPLEMENTATION = "config._attn_implementation"
CACHE_STORAGE = "attention functions receive the KV cache's own key/value tensors"


class TransformersInternalError(RuntimeError):
    """A transformers internal that lookright relies on is not what it was checked to be."""

    def __init__(self, internal: str, detail: str) -> None:
        import transformers

        super().__init__(
            f"transformers internal changed: {internal}: {detail} (transformers "
            f"{transformers.__version__}; lookright checked it against "
            f"{', '.join(CHECKED_TRANSFORMERS)})"
        )
        self.internal = internal


def cache_keyword(model: nn.Module) -> str:
    """The keyword under which ``model.forward`` and ``generate`` take the KV cache.

    transformers 5.25 renamed ``past_key_values`` to ``cache`` (the old name is deprecated,
    accepted until 5.40); earlier 5.x releases know only ``past_key_values``.
    """
    parameters = inspect.signature(model.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    raise TransformersInternalError(
        CACHE_KEYWORD, f"{type(model).__name__}.forward takes neither 'cache' nor 'past_key_values'"
    )


def layer_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden states a decoder layer or its attention module was called with."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else (args[0] if args else None)
    if not torch.is_tensor(hidden):
        raise TransformersInternalError(LAYER_INPUT, f"got {type(hidden).__name__}")
    return hidden


def replace_layer_input(
    args: tuple, kwargs: dict[str, Any], hidden: torch.Tensor
) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` of a forward pre-hook with the hidden states replaced."""
    if "hidden_states" in kwargs:
        return args, {**kwargs, "hidden_states": hidden}
    return (hidden, *args[1:]), kwargs


def rotary_embeddings(kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` an attention module was called with (RoPE, M-RoPE already folded in)."""
    embeddings = kwargs.get("position_embeddings")
    if not (isinstance(embeddings, tuple) and len(embeddings) == 2):
        raise TransformersInternalError(
            ROTARY_KWARG, f"got {type(embeddings).__name__} instead of a (cos, sin) tuple"
        )
    return embeddings


def modeling_function(module: nn.Module, name: str) -> Callable | None:
    """A function of ``module``'s modeling file (e.g. its ``apply_rotary_pos_emb``), or None."""
    return getattr(sys.modules[type(module).__module__], name, None)


def attention_implementation(config: Any) -> str:
    """The attention implementation a (sub-)config selects (``"sdpa"``, ``"eager"``, ...)."""
    value = getattr(config, "_attn_implementation", None)
    if not isinstance(value, str):
        raise TransformersInternalError(
            ATTN_IMPLEMENTATION, f"{type(config).__name__} has {value!r}"
        )
    return value


def release_cache_graph(*tensors: torch.Tensor) -> None:
    """Detach, in place, key/value tensors an attention function received during a step run
    with gradients, so the KV cache (which stores those very tensors) keeps no graph."""
    for tensor in tensors:
        if torch.is_tensor(tensor) and tensor.requires_grad and tensor.grad_fn is not None:
            if tensor._is_view():
                raise TransformersInternalError(
                    CACHE_STORAGE, "the key/value tensor is a view, not the cache's storage"
                )
            tensor.detach_()
