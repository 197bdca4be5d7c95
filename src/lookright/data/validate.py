"""Row-level validation of real dataset records, and the rejection-rate guard.

The readers in :mod:`lookright.data.readers` never crash on one bad record: every check here
raises :class:`InvalidRecord` with a human-readable reason, which the reader stores as a row
of the ``rejected`` table (see :mod:`lookright.data.schema`). Only a file that cannot be read
at all raises :class:`DataFileError`. After reading, ``prepare_data`` calls
:func:`check_rejection_rate` so that a reader silently rejecting most of a data set (a wrong
path, a changed format) stops the pipeline instead of training on a sliver of the data.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from lookright.config import StageFailure

BOX_EPS = 1e-6
"""Coordinates this far outside [0, 1] are clamped instead of rejected (float round-off)."""

REJECTION_LIMIT_KEY = "data.max_rejected_fraction"
"""The config key that sets ``max_fraction`` of :func:`check_rejection_rate` (named in errors)."""


class InvalidRecord(ValueError):
    """One input record cannot be used; ``str(error)`` is the reason stored in ``rejected``."""

    @property
    def reason(self) -> str:
        return str(self)


class DataFileError(ValueError):
    """A whole input file cannot be read (not JSON, wrong top-level structure)."""


class TooManyRejected(StageFailure):
    """More input rows were rejected than ``data.max_rejected_fraction`` allows.

    ``rejected_path``: the file the rejected rows were written to (None when not yet).
    """

    def __init__(self, message: str, rejected_path: str | os.PathLike[str] | None = None):
        super().__init__(message)
        self.rejected_path = rejected_path


# --------------------------------------------------------------------------- boxes


def _fmt_box(box: Any) -> str:
    if isinstance(box, (list, tuple)):
        return "[" + ", ".join(_fmt_number(v) for v in box) + "]"
    return repr(box)


def _fmt_number(v: Any) -> str:
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return repr(float(v))
    return repr(v)


def validate_box(box: Any, eps: float = BOX_EPS) -> list[float]:
    """Check a normalised ``[x1, y1, x2, y2]`` box and return it as 4 Python floats.

    Raises :class:`InvalidRecord` for: not a sequence of 4 real numbers, NaN/inf, a
    coordinate outside ``[0, 1]`` by more than ``eps`` (values within ``eps`` are clamped),
    ``x2 <= x1`` or ``y2 <= y1``.
    """
    if hasattr(box, "tolist") and not isinstance(box, (str, bytes)):
        box = box.tolist()
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise InvalidRecord(f"bbox {_fmt_box(box)}: expected 4 numbers [x1, y1, x2, y2]")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box):
        raise InvalidRecord(f"bbox {_fmt_box(box)}: expected 4 numbers [x1, y1, x2, y2]")
    values = [float(v) for v in box]
    label = _fmt_box(values)
    if not all(math.isfinite(v) for v in values):
        raise InvalidRecord(f"bbox {label}: contains NaN or infinity")
    if any(v < -eps or v > 1.0 + eps for v in values):
        raise InvalidRecord(f"bbox {label}: coordinates outside [0, 1]")
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in values)
    if x2 <= x1:
        raise InvalidRecord(f"bbox {label}: x2 <= x1")
    if y2 <= y1:
        raise InvalidRecord(f"bbox {label}: y2 <= y1")
    return [x1, y1, x2, y2]


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
_BOX_RE = re.compile(
    rf"^\s*[\[(]?\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*[\])]?\s*$",
    re.IGNORECASE,
)


def parse_box_string(text: Any, eps: float = BOX_EPS) -> list[float]:
    """Parse ``"[x1, y1, x2, y2]"`` (brackets or parentheses optional) and validate it.

    A list/tuple is accepted too (some exports store the box already parsed).
    """
    if isinstance(text, (list, tuple)) or hasattr(text, "tolist"):
        return validate_box(text, eps)
    if not isinstance(text, str):
        raise InvalidRecord(f"bbox {text!r}: expected a string '[x1, y1, x2, y2]'")
    match = _BOX_RE.match(text)
    if match is None:
        raise InvalidRecord(f"bbox {text!r}: cannot parse as 4 numbers '[x1, y1, x2, y2]'")
    return validate_box([float(g) for g in match.groups()], eps)


def pixel_box_to_normalised(
    xywh: Any, width: int, height: int, tolerance_px: float = 1.0
) -> list[float]:
    """COCO ``[x, y, w, h]`` in pixels -> normalised ``[x1, y1, x2, y2]``.

    x is divided by the image WIDTH and y by its HEIGHT. Corners up to ``tolerance_px``
    outside the image (COCO round-off) are clamped; anything else invalid is rejected.
    """
    if hasattr(xywh, "tolist"):
        xywh = xywh.tolist()
    ok = isinstance(xywh, (list, tuple)) and len(xywh) == 4
    if not ok or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in xywh):
        raise InvalidRecord(f"bbox {_fmt_box(xywh)}: expected 4 numbers [x, y, w, h] in pixels")
    x, y, w, h = (float(v) for v in xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InvalidRecord(f"bbox {_fmt_box(xywh)}: contains NaN or infinity")
    if w <= 0 or h <= 0:
        raise InvalidRecord(f"bbox {_fmt_box(xywh)} (xywh px): width or height <= 0")
    x1, y1, x2, y2 = x, y, x + w, y + h
    if x1 < -tolerance_px or y1 < -tolerance_px:
        raise InvalidRecord(f"bbox {_fmt_box(xywh)} (xywh px): starts outside the image")
    if x2 > width + tolerance_px or y2 > height + tolerance_px:
        raise InvalidRecord(
            f"bbox {_fmt_box(xywh)} (xywh px): extends outside the {width}x{height} image"
        )
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    return validate_box([x1 / width, y1 / height, x2 / width, y2 / height])


# --------------------------------------------------------------------------- images


def _image_name(src: Any, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, Mapping) and src.get("path"):
        return str(src["path"])
    return "<in-memory image>"


def load_image(src: Any, name: str | None = None) -> Image.Image:
    """Fully decode an image and return it as an RGB :class:`PIL.Image.Image`.

    ``src`` is a path, raw encoded bytes, a PIL image, or a Hugging Face image dict
    ``{"bytes": ..., "path": ...}`` (bytes win when both are set). ``name`` is how the image
    is called in error messages (default: the path). Raises :class:`InvalidRecord` for a
    missing, unreadable or corrupt (also truncated) image. EXIF orientation is NOT applied:
    annotation boxes refer to the stored pixel grid.
    """
    label = _image_name(src, name)
    if isinstance(src, Image.Image):
        try:
            src.load()
            return src.convert("RGB")
        except Exception as err:  # noqa: BLE001 - PIL raises many types
            raise InvalidRecord(f"image {label!r}: cannot be decoded (PIL: {err})") from err
    if isinstance(src, Mapping):
        if src.get("bytes") is not None:
            src = src["bytes"]
        elif src.get("path"):
            src = src["path"]
        else:
            raise InvalidRecord(f"image {label!r}: image dict has neither bytes nor path")
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise InvalidRecord(f"image {label!r}: empty image bytes")
        fp: Any = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise InvalidRecord(f"image {label!r}: file not found ({path})")
        fp = path
    else:
        raise InvalidRecord(f"image {label!r}: unsupported image value {type(src).__name__}")
    try:
        with Image.open(fp) as img:
            img.load()
            return img.convert("RGB")
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        raise InvalidRecord(f"image {label!r}: cannot be decoded (PIL: {err})") from err


def image_size(src: Any, name: str | None = None) -> tuple[int, int]:
    """``(width, height)`` from the image header only (cheap; no full decode)."""
    label = _image_name(src, name)
    if isinstance(src, Image.Image):
        return src.size
    if isinstance(src, Mapping):
        src = src.get("bytes") if src.get("bytes") is not None else src.get("path")
    if isinstance(src, (bytes, bytearray, memoryview)):
        fp: Any = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        if not Path(src).is_file():
            raise InvalidRecord(f"image {label!r}: file not found ({src})")
        fp = src
    else:
        raise InvalidRecord(f"image {label!r}: unsupported image value {type(src).__name__}")
    try:
        with Image.open(fp) as img:
            return img.size
    except Exception as err:  # noqa: BLE001
        raise InvalidRecord(f"image {label!r}: cannot be decoded (PIL: {err})") from err


MAX_ASPECT_RATIO = 200.0
"""Longest / shortest side above this is rejected: Qwen2-VL's processor refuses such images
(``smart_resize``: "absolute aspect ratio must be smaller than 200"), mid-training."""


@dataclass(frozen=True)
class StoredImage:
    """An image as ``prepare_data`` stores it: the original file bytes, checked to decode.

    ``image_id`` is the SHA-256 (hex) of ``data``: the same file read by several readers
    (a COCO image in POPE, COCO captions and VQA-HAT) gets one id and is stored once.
    """

    data: bytes
    format: str
    width: int
    height: int

    @property
    def image_id(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _source_bytes(src: Any, label: str) -> bytes:
    if isinstance(src, Mapping):
        if src.get("bytes") is not None:
            src = src["bytes"]
        elif src.get("path"):
            src = src["path"]
        else:
            raise InvalidRecord(f"image {label!r}: image dict has neither bytes nor path")
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise InvalidRecord(f"image {label!r}: empty image bytes")
        return bytes(src)
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise InvalidRecord(f"image {label!r}: file not found ({path})")
        data = path.read_bytes()
        if not data:
            raise InvalidRecord(f"image {label!r}: empty file ({path})")
        return data
    raise InvalidRecord(f"image {label!r}: unsupported image value {type(src).__name__}")


def read_image(
    src: Any, name: str | None = None, max_aspect_ratio: float = MAX_ASPECT_RATIO
) -> StoredImage:
    """The original bytes of an image, after checking that they decode fully to RGB.

    ``src`` as for :func:`load_image`. The bytes are kept as they are (JPEG stays JPEG, a
    CMYK, palette or grayscale file keeps its mode; consumers convert to RGB). A PIL image
    without a file behind it is stored as PNG. Raises :class:`InvalidRecord` for a missing,
    empty, unreadable, truncated or corrupt image, and for one whose longest side is more
    than ``max_aspect_ratio`` times its shortest.
    """
    label = _image_name(src, name)
    if isinstance(src, Image.Image):
        data = encode_png(load_image(src, name))
    else:
        data = _source_bytes(src, label)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or "unknown"
            img.load()
            img.convert("RGB")
            width, height = img.size
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError...
        raise InvalidRecord(f"image {label!r}: cannot be decoded (PIL: {err})") from err
    if max(width, height) > max_aspect_ratio * min(width, height):
        raise InvalidRecord(
            f"image {label!r}: {width}x{height} has an aspect ratio above {max_aspect_ratio:g}"
        )
    return StoredImage(data, fmt, width, height)


def encode_png(img: Image.Image, compress_level: int = 6) -> bytes:
    """PNG bytes of ``img`` converted to RGB (deterministic for the same Pillow version)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# --------------------------------------------------------------------------- records


def require_fields(record: Any, fields: Iterable[str]) -> None:
    """Raise :class:`InvalidRecord` ``"missing field 'x'"`` for the first absent/null field."""
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"record is a {type(record).__name__}, expected a JSON object")
    for name in fields:
        if record.get(name) is None:
            raise InvalidRecord(f"missing field {name!r}")


def require_str(record: Mapping[str, Any], name: str, allow_empty: bool = False) -> str:
    """The field as a string (stripped); rejects absent, non-string or (default) empty values."""
    require_fields(record, [name])
    value = record[name]
    if not isinstance(value, str):
        raise InvalidRecord(f"field {name!r} is a {type(value).__name__}, expected a string")
    value = value.strip()
    if not value and not allow_empty:
        raise InvalidRecord(f"field {name!r} is empty")
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes omitted>"
    if isinstance(value, Image.Image):
        return f"<PIL image {value.mode} {value.width}x{value.height} omitted>"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, numbers.Number)):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and isinstance(value, numbers.Number):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def record_json(record: Any) -> str:
    """The record as compact JSON; image bytes / PIL images replaced by a placeholder."""
    return json.dumps(_jsonable(record), ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- guard


def check_rejection_rate(
    n_kept: int,
    n_rejected: int,
    max_fraction: float,
    what: str,
    rejected_path: str | os.PathLike[str] | None = None,
) -> float:
    """Raise :class:`TooManyRejected` when ``n_rejected / (n_kept + n_rejected) > max_fraction``.

    Returns the rejected fraction (0.0 when nothing was read). ``what`` names the data
    (e.g. ``"saliency-r1-8k"``), ``rejected_path`` where the rejected rows are written.
    """
    if n_kept < 0 or n_rejected < 0:
        raise ValueError(f"counts must be >= 0, got kept={n_kept}, rejected={n_rejected}")
    total = n_kept + n_rejected
    fraction = n_rejected / total if total else 0.0
    if fraction > max_fraction:
        where = (
            ""
            if rejected_path is None
            else (f" The rejected rows and their reasons are written to {rejected_path}.")
        )
        raise TooManyRejected(
            f"{what}: rejected {n_rejected} of {total} input rows ({fraction:.1%}; kept "
            f"{n_kept}), above the limit {REJECTION_LIMIT_KEY} = {max_fraction:g}; fix the "
            f"data or paths, or raise {REJECTION_LIMIT_KEY} if this is expected.{where}",
            rejected_path=rejected_path,
        )
    return fraction
