"""Model families behind one adapter interface (see :mod:`lookright.models.base`).

The names below load :mod:`lookright.models.base` (and with it torch and transformers) on
first use, so light modules of the package (``geometry``, ``transformers_internals``'s names)
can be imported alone.
"""

from __future__ import annotations

from lookright.lazy import lazy_exports

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


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = list(_LAZY)
