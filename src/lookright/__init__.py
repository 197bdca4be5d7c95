"""lookright: experiment pipeline for vision-language models that are right for the right reasons.

The Python API (docs/api.md), loaded on first use so that ``import lookright`` stays light:

* :func:`explain` -> :class:`Explanation`: saliency maps of one answer, with ``.overlay()``
  and ``.panel()``; :func:`available_methods` lists the methods;
* :func:`load_model`: a checkpoint folder or hub id with its processor and family adapter;
* ``lookright.rewards``: TRL reward functions (accuracy, format, Saliency-R1's
  saliency alignment, SAYO's region attention);
* ``lookright.decoding``: :func:`lookright.decoding.generate` (greedy, beam, sampling,
  SGRS, LocoRE) and the ``custom_generate`` folders for ``model.generate``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookright.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "explain": "lookright.saliency.explain",
    "Explanation": "lookright.saliency.explain",
    "available_methods": "lookright.saliency.api",
    "load_model": "lookright.models.base",
}

if TYPE_CHECKING:
    from lookright.models.base import load_model
    from lookright.saliency.api import available_methods
    from lookright.saliency.explain import Explanation, explain


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["Explanation", "__version__", "available_methods", "explain", "load_model"]
