"""File helpers of the report: atomic writes (from :mod:`lookright.io`) and safe names."""

from __future__ import annotations

import re

from lookright.io import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_text", "safe_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(*parts: str) -> str:
    """File-name stem from ``parts`` joined by ``__`` (unsafe characters become ``_``)."""
    return "__".join(_UNSAFE.sub("_", part).strip("_") or "_" for part in parts)
