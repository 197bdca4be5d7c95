"""Row-level validation helpers and the rejection-rate guard (lookright.data.validate)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookright.data.validate import (
    REJECTION_LIMIT_KEY,
    InvalidRecord,
    TooManyRejected,
    check_rejection_rate,
    encode_png,
    image_size,
    load_image,
    parse_box_string,
    pixel_box_to_normalised,
    read_image,
    record_json,
    require_fields,
    require_str,
    validate_box,
)

IMAGES = Path(__file__).parents[1] / "fixtures" / "real" / "images"


# --------------------------------------------------------------------------- boxes


def test_validate_box_accepts_and_returns_floats():
    assert validate_box([0, 0.25, 1, 0.5]) == [0.0, 0.25, 1.0, 0.5]
    assert validate_box((0.1, 0.2, 0.3, 0.4)) == [0.1, 0.2, 0.3, 0.4]
    out = validate_box(np.array([0.1, 0.2, 0.3, 0.4], np.float32))
    assert all(type(v) is float for v in out)


def test_validate_box_clamps_within_eps():
    assert validate_box([-1e-7, 0.0, 1.0000005, 1.0]) == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([0.1, 0.2, 0.3], "expected 4 numbers"),
        ([0.1, 0.2, 0.3, "x"], "expected 4 numbers"),
        ([True, 0.2, 0.3, 0.4], "expected 4 numbers"),
        ("0.1, 0.2, 0.3, 0.4", "expected 4 numbers"),
        (None, "expected 4 numbers"),
        ([math.nan, 0.2, 0.3, 0.4], "NaN"),
        ([0.1, 0.2, math.inf, 0.4], "infinity"),
        ([0.1, 0.2, 1.01, 0.4], "outside [0, 1]"),
        ([-0.01, 0.2, 0.3, 0.4], "outside [0, 1]"),
        ([0.2, 0.5, 0.1, 0.9], "x2 <= x1"),
        ([0.2, 0.5, 0.2, 0.9], "x2 <= x1"),
        ([0.1, 0.5, 0.2, 0.5], "y2 <= y1"),
    ],
)
def test_validate_box_rejects(box, reason):
    with pytest.raises(InvalidRecord, match=reason.replace("[", r"\[").replace("]", r"\]")):
        validate_box(box)


def test_validate_box_reason_names_the_box():
    with pytest.raises(InvalidRecord) as err:
        validate_box([0.2, 0.5, 0.1, 0.9])
    assert str(err.value) == "bbox [0.2, 0.5, 0.1, 0.9]: x2 <= x1"
    assert err.value.reason == str(err.value)


def test_parse_box_string():
    assert parse_box_string("[0.1, 0.2, 0.3, 0.4]") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box_string(" (0.1,0.2,0.3,0.4) ") == [0.1, 0.2, 0.3, 0.4]
    assert parse_box_string("[0, 0, 1, 1e-0]") == [0.0, 0.0, 1.0, 1.0]
    assert parse_box_string([0.1, 0.2, 0.3, 0.4]) == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(InvalidRecord, match="cannot parse"):
        parse_box_string("[0.1, 0.2, 0.3]")
    with pytest.raises(InvalidRecord, match="cannot parse"):
        parse_box_string("[a, b, c, d]")
    with pytest.raises(InvalidRecord, match="expected a string"):
        parse_box_string(3)
    with pytest.raises(InvalidRecord, match="NaN"):
        parse_box_string("[nan, 0.1, 0.2, 0.3]")
    with pytest.raises(InvalidRecord, match="y2 <= y1"):
        parse_box_string("[0.1, 0.9, 0.2, 0.3]")


def test_pixel_box_x_by_width_y_by_height():
    # 64 wide, 48 tall: x / 64, y / 48
    assert pixel_box_to_normalised([8, 6, 16, 30], 64, 48) == [0.125, 0.125, 0.375, 0.75]
    # round-off up to 1 px outside is clamped
    assert pixel_box_to_normalised([0, 0, 64.4, 48.2], 64, 48) == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(InvalidRecord, match="outside the 64x48 image"):
        pixel_box_to_normalised([60, 0, 10, 10], 64, 48)
    with pytest.raises(InvalidRecord, match="width or height <= 0"):
        pixel_box_to_normalised([5, 5, 0, 5], 64, 48)
    with pytest.raises(InvalidRecord, match="expected 4 numbers"):
        pixel_box_to_normalised([5, 5, 1], 64, 48)


# --------------------------------------------------------------------------- images


def _png(size=(6, 4), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_sources_give_rgb():
    path = IMAGES / "COCO_val2014_000000000003.png"  # RGBA 40x80
    data = path.read_bytes()
    for src in (
        path,
        str(path),
        data,
        {"bytes": data, "path": None},
        {"bytes": None, "path": path},
    ):
        img = load_image(src)
        assert img.mode == "RGB" and img.size == (40, 80)
    assert load_image(Image.new("L", (3, 2))).mode == "RGB"
    assert image_size(path) == (40, 80) and image_size(data) == (40, 80)


def test_load_image_jpeg_non_square():
    img = load_image(IMAGES / "COCO_val2014_000000000001.jpg")
    assert img.size == (64, 48)


@pytest.mark.parametrize(
    ("src", "name", "reason"),
    [
        (IMAGES / "nope.jpg", "nope.jpg", "image 'nope.jpg': file not found"),
        (IMAGES / "corrupt.jpg", "corrupt.jpg", "image 'corrupt.jpg': cannot be decoded (PIL: "),
        (IMAGES / "truncated.png", "truncated.png", "image 'truncated.png': cannot be decoded"),
        (b"", "empty", "image 'empty': empty image bytes"),
        (b"garbage", "g.png", "image 'g.png': cannot be decoded"),
        ({"bytes": None, "path": None}, "d", "neither bytes nor path"),
        (12, "n", "unsupported image value int"),
    ],
)
def test_load_image_failures_name_the_file(src, name, reason):
    with pytest.raises(InvalidRecord) as err:
        load_image(src, name)
    assert str(err.value).startswith(reason) or reason in str(err.value)


def test_load_image_default_name_is_the_path():
    with pytest.raises(InvalidRecord, match="corrupt.jpg"):
        load_image(IMAGES / "corrupt.jpg")


def test_encode_png_round_trip():
    img = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3), "RGB")
    data = encode_png(img)
    assert data.startswith(b"\x89PNG")
    back = Image.open(io.BytesIO(data))
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(img))
    assert encode_png(img) == data
    assert Image.open(io.BytesIO(encode_png(Image.new("RGBA", (2, 2))))).mode == "RGB"


def _encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "JPEG"),
        ("CMYK", "JPEG"),
        ("L", "JPEG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("I;16", "PNG"),
    ],
)
def test_read_image_keeps_the_original_bytes(mode, fmt):
    data = _encoded(Image.new(mode, (33, 17)), fmt)
    stored = read_image(data, "odd.img")
    assert stored.data == data  # not re-encoded: a JPEG stays JPEG, CMYK stays CMYK
    assert (stored.format, stored.width, stored.height) == (fmt, 33, 17)
    assert stored.image_id == hashlib.sha256(data).hexdigest()
    assert Image.open(io.BytesIO(stored.data)).mode == mode


def test_read_image_of_a_file_and_of_a_pil_image():
    path = IMAGES / "COCO_val2014_000000000001.jpg"
    stored = read_image(path)
    assert stored.data == path.read_bytes() and stored.format == "JPEG"
    assert read_image({"bytes": None, "path": path}) == stored
    decoded = read_image(Image.new("RGB", (5, 4)))  # no file behind it: stored as PNG
    assert decoded.format == "PNG" and (decoded.width, decoded.height) == (5, 4)


@pytest.mark.parametrize(
    ("src", "reason"),
    [
        (IMAGES / "truncated.png", "image 'x': cannot be decoded"),
        (IMAGES / "corrupt.jpg", "image 'x': cannot be decoded"),
        (IMAGES / "nope.jpg", "image 'x': file not found"),
        (b"", "image 'x': empty image bytes"),
        (_png((600, 2)), "image 'x': 600x2 has an aspect ratio above 200"),
    ],
)
def test_read_image_rejects(src, reason):
    with pytest.raises(InvalidRecord) as err:
        read_image(src, "x")
    assert str(err.value).startswith(reason)


# --------------------------------------------------------------------------- records


def test_require_fields():
    require_fields({"a": 1, "b": ""}, ["a", "b"])
    with pytest.raises(InvalidRecord, match="missing field 'solution'"):
        require_fields({"a": 1}, ["a", "solution"])
    with pytest.raises(InvalidRecord, match="missing field 'a'"):
        require_fields({"a": None}, ["a"])
    with pytest.raises(InvalidRecord, match="record is a list"):
        require_fields([1], ["a"])


def test_require_str():
    assert require_str({"q": "  hi \n"}, "q") == "hi"
    with pytest.raises(InvalidRecord, match="field 'q' is empty"):
        require_str({"q": "  "}, "q")
    with pytest.raises(InvalidRecord, match="field 'q' is a int"):
        require_str({"q": 3}, "q")


def test_record_json_replaces_image_bytes():
    rec = {
        "image": {"bytes": b"\x00" * 10, "path": "x.jpg"},
        "pil": Image.new("RGB", (3, 2)),
        "arr": np.array([1.5, 2.0]),
        "n": np.int64(3),
        "nan": float("nan"),
        "text": "é",
    }
    out = record_json(rec)
    assert '": ' not in out and ', "' not in out  # compact separators
    parsed = json.loads(out)
    assert parsed["image"] == {"bytes": "<10 bytes omitted>", "path": "x.jpg"}
    assert parsed["pil"] == "<PIL image RGB 3x2 omitted>"
    assert parsed["arr"] == [1.5, 2.0] and parsed["n"] == 3 and parsed["nan"] == "nan"
    assert parsed["text"] == "é"
    assert record_json("raw line") == '"raw line"'


# --------------------------------------------------------------------------- guard


def test_check_rejection_rate_below_and_at_limit():
    assert check_rejection_rate(90, 10, 0.1, "x") == pytest.approx(0.1)  # equal: allowed
    assert check_rejection_rate(99, 1, 0.05, "x") == pytest.approx(0.01)
    assert check_rejection_rate(0, 0, 0.0, "x") == 0.0
    assert check_rejection_rate(5, 0, 0.0, "x") == 0.0


def test_check_rejection_rate_above_limit():
    with pytest.raises(TooManyRejected) as err:
        check_rejection_rate(80, 20, 0.1, "saliency-r1-8k", rejected_path="out/rejected.parquet")
    msg = str(err.value)
    for part in ("saliency-r1-8k", "20 of 100", "20.0%", "kept 80", REJECTION_LIMIT_KEY, "0.1"):
        assert part in msg
    assert "out/rejected.parquet" in msg
    assert REJECTION_LIMIT_KEY == "data.max_rejected_fraction"
    with pytest.raises(TooManyRejected, match="1 of 1 input rows") as no_path:
        check_rejection_rate(0, 1, 0.5, "pope")
    assert no_path.value.rejected_path is None and err.value.rejected_path.endswith(".parquet")
    with pytest.raises(ValueError):
        check_rejection_rate(-1, 0, 0.5, "x")
