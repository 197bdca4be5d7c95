"""What every reader of a real dataset format shares (docs/data-formats.md).

Every reader streams its rows into a :class:`RowSink`: by default a :class:`ReadResult`
(lists of dict rows with exactly the columns of :data:`~lookright.data.schema.IMAGES`,
:data:`~lookright.data.schema.SAMPLES` and :data:`~lookright.data.schema.REJECTED`, for
tests and small data), in ``prepare_data`` a :class:`lookright.data.store.ParquetSink` that
writes bounded batches to disk. Records are read one at a time (JSON lists and JSON Lines
through :mod:`lookright.data.jsonstream`, Parquet by record batches), so memory does not
grow with the number of rows.

Conventions shared by all readers

* Images keep their ORIGINAL bytes (a JPEG stays JPEG; CMYK, palette and grayscale files
  keep their mode); each is decoded once, fully, to check it, and identified by the SHA-256
  of its bytes (:func:`~lookright.data.validate.read_image`), so an image that several
  records or datasets use is stored once. EXIF orientation is not applied (annotation boxes
  refer to the stored pixel grid).
* Boxes are normalised ``[x1, y1, x2, y2]`` floats, x by image width and y by height.
* Nothing is dropped silently: an input record that is not kept (missing field, bad box,
  missing or corrupt image, unknown label, duplicate id ...) becomes a ``rejected`` row with
  ``source``, ``source_file``, ``source_row`` (0-based index into the JSON array, 0-based
  line of a JSON Lines file, or row of a dataset), ``record`` (compact JSON, image bytes
  replaced by a placeholder) and ``reason``. Rows excluded on purpose (saliency-r1-8k images
  larger than ``max_image_side``) are rejected too, with a reason starting ``"filtered:"``;
  :attr:`ReadResult.n_invalid` counts the others, for
  :func:`~lookright.data.validate.check_rejection_rate`.
* A file that cannot be read at all raises :class:`~lookright.data.validate.DataFileError`
  naming the file (and the line, 1-based, for JSON syntax errors); a missing file raises
  :class:`FileNotFoundError`.
* ``split`` is either a split name or a function ``image_id -> split`` (see
  :func:`hashed_split`); it is stored per sample.
* ``roles`` (:data:`~lookright.data.schema.ROLES`) says which stages use the reader's
  samples; each reader has a default (:data:`DEFAULT_ROLES`).
* sample ids are prefixed with the source name: ``{source}-{key}``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from lookright.completion import THINK_CLOSE, THINK_OPEN, final_answer
from lookright.data.jsonstream import (
    BadLine,
)
from lookright.data.schema import IMAGES, REJECTED, ROLES, SAMPLES, SPLITS
from lookright.data.validate import (
    InvalidRecord,
    StoredImage,
    read_image,
    record_json,
)
from lookright.io import rows_to_table

SplitSpec = str | Callable[[str], str]
PARQUET_BUFFER = 4 << 20
"""Bytes read at a time from a Parquet column chunk (saliency-r1-8k sources)."""
FILTERED_PREFIX = "filtered:"
COCO_CAPTION_QUESTION = "Describe this image."
VQA_HAT_VAL_IMAGES = "COCO_val2014_{image_id:012d}.jpg"
"""VQA-HAT val questions are on COCO val2014 images; its train split on
``COCO_train2014_{image_id:012d}.jpg`` (pass that as ``image_template``)."""

DEFAULT_ROLES: dict[str, tuple[str, ...]] = {
    "saliency_r1": ("rl", "eval"),
    "llava_conversations": ("sft",),
    "pope": ("eval",),
    "coco": ("eval",),
    "vqa_hat": ("eval",),
}
"""Roles of each reader's samples unless its entry sets ``roles``: saliency-r1-8k rows are
GRPO prompts (with boxes) and, held out, evaluation rows; the Vision-R1 cold start is SFT;
POPE, COCO captions and VQA-HAT are evaluation only."""


# --------------------------------------------------------------------------- sinks


class RowSink(Protocol):
    """Where a reader puts its rows (images are deduplicated by the sink, by ``image_id``)."""

    def add_image(self, image: StoredImage) -> None: ...

    def add_sample(self, row: dict[str, Any]) -> None: ...

    def reject(self, row: dict[str, Any]) -> None: ...


def image_row(image: StoredImage) -> dict[str, Any]:
    """The ``images`` row of a stored image."""
    return {
        "image_id": image.image_id,
        "image_bytes": image.data,
        "image_format": image.format,
        "width": image.width,
        "height": image.height,
    }


@dataclass
class ReadResult:
    """Rows for the three prepare_data tables, in memory (dicts with the schema's columns)."""

    images: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    _image_ids: set[str] = field(default_factory=set, repr=False, compare=False)

    def add_image(self, image: StoredImage) -> None:
        if image.image_id not in self._image_ids:
            self._image_ids.add(image.image_id)
            self.images.append(image_row(image))

    def add_sample(self, row: dict[str, Any]) -> None:
        self.samples.append(row)

    def reject(self, row: dict[str, Any]) -> None:
        self.rejected.append(row)

    @property
    def n_kept(self) -> int:
        """Kept samples."""
        return len(self.samples)

    @property
    def n_filtered(self) -> int:
        """Rejected rows excluded on purpose (reason starts with ``"filtered:"``)."""
        return sum(1 for r in self.rejected if r["reason"].startswith(FILTERED_PREFIX))

    @property
    def n_invalid(self) -> int:
        """Rejected rows that are data errors (the count to check against the limit)."""
        return len(self.rejected) - self.n_filtered

    def extend(self, other: ReadResult) -> ReadResult:
        """Append ``other``'s rows (in place); an image already present is not added again
        (same id = same bytes); raises on duplicate sample ids."""
        seen = {r["sample_id"] for r in self.samples}
        dup = sorted(seen.intersection(r["sample_id"] for r in other.samples))
        if dup:
            raise ValueError(f"duplicate sample ids when merging reader results: {dup[:5]}")
        for row in other.images:
            if row["image_id"] not in self._image_ids:
                self._image_ids.add(row["image_id"])
                self.images.append(row)
        self.samples.extend(other.samples)
        self.rejected.extend(other.rejected)
        return self

    def to_tables(self) -> tuple[pa.Table, pa.Table, pa.Table]:
        """``(images, samples, rejected)`` as Arrow tables with the schema's types."""
        return (
            rows_to_table(self.images, IMAGES),
            rows_to_table(self.samples, SAMPLES),
            rows_to_table(self.rejected, REJECTED),
        )


# --------------------------------------------------------------------------- splits


def hashed_split(
    val_fraction: float = 0.0, test_fraction: float = 0.0, seed: int = 0
) -> Callable[[str], str]:
    """A deterministic split function ``image_id -> "train" | "val" | "test"``.

    Hashes ``f"{seed}:{image_id}"`` (SHA-256) to a number u in [0, 1): u < test_fraction ->
    test, then the next val_fraction -> val, else train. Independent of reading order.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction > 1:
        raise ValueError(
            f"need 0 <= val_fraction, test_fraction and their sum <= 1, "
            f"got {val_fraction}, {test_fraction}"
        )

    def assign(image_id: str) -> str:
        digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        if u < test_fraction:
            return "test"
        if u < test_fraction + val_fraction:
            return "val"
        return "train"

    return assign


def _split_fn(split: SplitSpec) -> Callable[[str], str]:
    if isinstance(split, str):
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS}")
        return lambda _image_id: split
    if not callable(split):
        raise TypeError(
            f"split must be a split name or a function image_id -> split, got {split!r}"
        )

    def checked(image_id: str) -> str:
        value = split(image_id)
        if value not in SPLITS:
            raise ValueError(f"split function returned {value!r} for {image_id!r}; not in {SPLITS}")
        return value

    return checked


# --------------------------------------------------------------------------- text


_ANSWER_TAG = re.compile(r"^<answer>(.*)</answer>$", re.DOTALL)


def split_think(text: str, field_name: str = "solution") -> tuple[str, str | None]:
    """``(answer, cot)`` from a reply that may be ``<think>...</think>answer``.

    answer = the text after the last ``</think>`` (or the whole reply), stripped, with an
    enclosing ``<answer>...</answer>`` removed; cot = the whole (stripped) reply when it has
    think tags, else None. Rejects an unclosed ``<think>`` and an empty answer.
    """
    text = text.strip()
    if THINK_OPEN in text and THINK_CLOSE not in text:
        raise InvalidRecord(f"{field_name}: '<think>' without '</think>'")
    answer, cot = final_answer(text), (text if THINK_CLOSE in text else None)
    tagged = _ANSWER_TAG.match(answer)
    if tagged:
        answer = tagged.group(1).strip()
    if not answer:
        raise InvalidRecord(f"{field_name}: empty answer after '</think>'")
    return answer, cot


def check_roles(roles: Iterable[str], what: str) -> tuple[str, ...]:
    """``roles`` as a tuple; ValueError naming ``what`` for an empty list or unknown role."""
    roles = tuple(roles)
    bad = [r for r in roles if r not in ROLES]
    if bad or not roles:
        raise ValueError(f"{what}: roles {list(roles)} must be a non-empty list of {list(ROLES)}")
    return roles


# --------------------------------------------------------------------------- collector


@dataclass(frozen=True)
class _ImageRef:
    image_id: str
    width: int
    height: int


def _check_size(name: str, size: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and size != tuple(expected):
        raise InvalidRecord(
            f"image {name!r}: decoded size {size[0]}x{size[1]} differs from the annotated "
            f"{expected[0]}x{expected[1]}"
        )


class _Collector:
    """Builds complete rows for a sink; reads each image (by ``key``) once."""

    def __init__(
        self,
        source: str,
        split: SplitSpec | None,
        roles: Iterable[str],
        sink: RowSink | None,
    ) -> None:
        self.source = source
        self.split = _split_fn(split) if split is not None else None
        self.roles = list(check_roles(roles, source))
        self.sink: Any = ReadResult() if sink is None else sink
        self._images: dict[str, _ImageRef | InvalidRecord] = {}
        self._sample_ids: set[str] = set()

    def reject(self, source_file: Any, source_row: int | None, record: Any, reason: str) -> None:
        if isinstance(record, BadLine):
            record = record.text
        self.sink.reject(
            {
                "source": self.source,
                "source_file": str(source_file),
                "source_row": source_row,
                "record": record_json(record),
                "reason": reason,
            }
        )

    def check_sample_id(self, sample_id: str) -> None:
        """Reject a sample id already kept (ids are claimed by :meth:`add_sample`)."""
        if sample_id in self._sample_ids:
            raise InvalidRecord(f"duplicate sample id {sample_id!r}")

    def image(
        self, key: str, src: Any, name: str, expected_size: tuple[int, int] | None = None
    ) -> str:
        """Read (once per ``key``), check and store an image; returns its ``image_id``.

        With ``expected_size`` (width, height, e.g. from an annotation file) an image of
        another size is rejected and not stored.
        """
        cached = self._images.get(key)
        if isinstance(cached, InvalidRecord):
            raise InvalidRecord(str(cached))
        if cached is None:
            try:
                stored = read_image(src, name)
            except InvalidRecord as err:
                self._images[key] = err
                raise
            _check_size(name, (stored.width, stored.height), expected_size)
            self.sink.add_image(stored)
            cached = self._images[key] = _ImageRef(stored.image_id, stored.width, stored.height)
        _check_size(name, (cached.width, cached.height), expected_size)
        return cached.image_id

    def add_stored_image(self, stored: StoredImage) -> str:
        self.sink.add_image(stored)
        return stored.image_id

    def split_of(self, image_id: str, split: str | None = None) -> str:
        if split is not None:
            return split
        assert self.split is not None
        return self.split(image_id)

    def add_sample(
        self,
        sample_id: str,
        image_id: str,
        task: str,
        question: str,
        answer: str,
        *,
        split: str | None = None,
        cot: str | None = None,
        boxes: Sequence[Sequence[float]] = (),
        pope_split: str | None = None,
        human_map: np.ndarray | None = None,
        objects: Sequence[str] = (),
        object_boxes: Sequence[Sequence[float]] = (),
        object_vocabulary: str | None = None,
    ) -> None:
        self._sample_ids.add(sample_id)
        self.sink.add_sample(
            {
                "sample_id": sample_id,
                "image_id": image_id,
                "split": self.split_of(image_id, split),
                "source": self.source,
                "roles": list(self.roles),
                "task": task,
                "question": question,
                "answer": answer,
                "cot": cot,
                "boxes": [list(b) for b in boxes],
                "pope_split": pope_split,
                "subset": None,
                "human_map": None if human_map is None else human_map.ravel().tolist(),
                "human_map_height": None if human_map is None else int(human_map.shape[0]),
                "human_map_width": None if human_map is None else int(human_map.shape[1]),
                "objects": list(objects),
                "object_boxes": [list(b) for b in object_boxes],
                "object_vocabulary": object_vocabulary,
            }
        )


def _resolve_image(image_root: str | os.PathLike[str] | None, rel: Any) -> tuple[Path, str]:
    """``(path, name for messages)`` of an image path relative to ``image_root`` (or cwd)."""
    if not isinstance(rel, str) or not rel.strip():
        raise InvalidRecord(f"field 'image' is {rel!r}, expected a relative path string")
    rel = rel.strip()
    path = Path(rel)
    if not path.is_absolute() and image_root is not None:
        path = Path(image_root) / path
    return path, rel
