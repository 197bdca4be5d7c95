"""Model families behind one adapter interface (see :mod:`lookright.models.base`)."""

from lookright.models.base import (
    ADAPTERS,
    EncodedBatch,
    LoadedModel,
    VisualLayout,
    VLMAdapter,
    adapter_for,
    get_adapter,
    load_model,
)

__all__ = [
    "ADAPTERS",
    "EncodedBatch",
    "LoadedModel",
    "VLMAdapter",
    "VisualLayout",
    "adapter_for",
    "get_adapter",
    "load_model",
]
