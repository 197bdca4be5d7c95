"""Names a package exports without importing them until first use.

A package ``__init__`` lists ``_LAZY = {name: module}`` and sets
``__getattr__ = lazy_exports(__name__, _LAZY)``: ``from package import name`` then imports
``module`` only when ``name`` is asked for, so light parts of the package (config, names,
geometry) import without torch. :mod:`lookright.stages.fingerprint` reads the same ``_LAZY``
tables, so a stage that imports a lazily exported name still reruns when its module changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
