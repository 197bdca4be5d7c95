"""Model families behind one adapter interface (see :mod:`lookright.models.base`).

The names below load :mod:`lookright.models.base` (and with it torch and transformers) on
first use, so light modules of the package (``geometry``, ``transformers_internals``'s names)
can be imported alone.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    name: "lookright.models.base"
    for name in (
        "ADAPTERS",
        "EncodedBatch",
        "LoadedModel",
        "VisualLayout",
        "VLMAdapter",
        "adapter_for",
        "get_adapter",
        "load_model",
    )
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
