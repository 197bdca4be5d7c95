"""COCO 2014 captions and instances (CHAIR ground truth).

See :mod:`lookright.data.readers.common` for the conventions every reader follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lookright.data.jsonstream import (
    check_file,
    iter_json_array,
)
from lookright.data.readers.common import (
    COCO_CAPTION_QUESTION,
    DEFAULT_ROLES,
    RowSink,
    _Collector,
    _resolve_image,
)
from lookright.data.validate import (
    InvalidRecord,
    pixel_box_to_normalised,
    require_fields,
    require_str,
)

SplitSpec = str | Callable[[str], str]


# --------------------------------------------------------------------------- COCO


def _positive_int(record: Mapping[str, Any], name: str) -> int:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRecord(f"field {name!r} is {value!r}, expected a positive integer")
    return value


def _coco_image_entries(path: Path, col: _Collector) -> dict[int, tuple[int, dict[str, Any]]]:
    """``{coco id: (index, entry)}`` of the well-formed ``images`` entries (others rejected)."""
    entries: dict[int, tuple[int, dict[str, Any]]] = {}
    for index, entry in enumerate(iter_json_array(path, "images")):
        try:
            require_fields(entry, ["id", "file_name", "width", "height"])
            image_id_num = entry["id"]
            if isinstance(image_id_num, bool) or not isinstance(image_id_num, int):
                raise InvalidRecord(f"field 'id' is {image_id_num!r}, expected an integer")
            _positive_int(entry, "width")
            _positive_int(entry, "height")
            require_str(entry, "file_name")
            if image_id_num in entries:
                raise InvalidRecord(f"duplicate image id {image_id_num}")
        except InvalidRecord as err:
            col.reject(path, index, entry, f"image entry: {err}")
            continue
        entries[image_id_num] = (index, entry)
    return entries


def _select_images(ids: Iterable[int], max_images: int | None, seed: int | None) -> list[int]:
    order = sorted(ids)
    if max_images is not None and max_images < len(order):
        if seed is None:
            return order[:max_images]
        picks = np.random.default_rng(seed).choice(len(order), max_images, replace=False)
        return [order[i] for i in sorted(picks)]
    return order


def _first_captions(
    path: Path, col: _Collector, known_ids: set[Any], selected: set[int]
) -> dict[int, str]:
    first: dict[int, str] = {}
    for index, ann in enumerate(iter_json_array(path, "annotations")):
        try:
            require_fields(ann, ["image_id", "caption"])
            if ann["image_id"] not in known_ids:
                raise InvalidRecord(f"image_id {ann['image_id']!r} not in 'images'")
            if ann["image_id"] not in selected:
                continue
            caption = require_str(ann, "caption")
            first.setdefault(ann["image_id"], caption)
        except InvalidRecord as err:
            col.reject(path, index, ann, f"caption annotation: {err}")
    return first


class _CocoObjects:
    """Per image: the enclosing box of each category (or every instance, ``per_instance``)."""

    def __init__(self, per_instance: bool) -> None:
        self.per_instance = per_instance
        self.items: dict[int, list[tuple[str, list[float]]]] = {}

    def add(self, coco_id: int, name: str, box: list[float]) -> None:
        items = self.items.setdefault(coco_id, [])
        if not self.per_instance:
            for other, union in items:
                if other == name:
                    union[:] = [
                        min(union[0], box[0]),
                        min(union[1], box[1]),
                        max(union[2], box[2]),
                        max(union[3], box[3]),
                    ]
                    return
        items.append((name, box))

    def of(self, coco_id: int) -> tuple[list[str], list[list[float]]]:
        items = sorted(self.items.get(coco_id, []))
        return [n for n, _ in items], [b for _, b in items]


def _coco_instances(
    path: Path,
    col: _Collector,
    entries: Mapping[int, tuple[int, dict[str, Any]]],
    known_ids: set[Any],
    selected: set[int],
    per_instance: bool,
) -> _CocoObjects:
    categories = {
        c.get("id"): c.get("name")
        for c in iter_json_array(path, "categories")
        if isinstance(c, Mapping) and isinstance(c.get("name"), str)
    }
    objects = _CocoObjects(per_instance)
    for index, ann in enumerate(iter_json_array(path, "annotations")):
        try:
            require_fields(ann, ["image_id", "category_id", "bbox"])
            if ann["image_id"] not in known_ids:
                raise InvalidRecord(f"image_id {ann['image_id']!r} not in 'images'")
            if ann["image_id"] not in selected:
                continue
            name = categories.get(ann["category_id"])
            if name is None:
                raise InvalidRecord(f"category_id {ann['category_id']!r} not in 'categories'")
            entry = entries[ann["image_id"]][1]
            box = pixel_box_to_normalised(ann["bbox"], entry["width"], entry["height"])
        except InvalidRecord as err:
            col.reject(path, index, ann, f"instance annotation: {err}")
            continue
        objects.add(ann["image_id"], name, box)
    return objects


def read_coco(
    captions_json: str | os.PathLike[str],
    instances_json: str | os.PathLike[str] | None,
    image_root: str | os.PathLike[str],
    max_images: int | None = None,
    *,
    split: SplitSpec = "test",
    seed: int | None = None,
    object_instances: bool = False,
    roles: Iterable[str] = DEFAULT_ROLES["coco"],
    source_name: str = "coco",
    sink: RowSink | None = None,
) -> Any:
    """Read COCO captions (+ instances for CHAIR ground truth) into caption samples.

    Images are the ``images`` entries of ``captions_json`` ordered by id; ``max_images``
    keeps the first N (or, with ``seed``, N drawn with ``np.random.default_rng(seed)``).
    Images not selected are neither read nor rejected, and neither are their annotations.
    One ``caption`` sample per image: question "Describe this image.", answer = its FIRST
    reference caption in file order (the others are not stored); its ``objects`` = the
    unique category names of the image's instance annotations, sorted, with
    ``object_boxes`` = for each name the box enclosing all its instances (COCO ``[x, y, w,
    h]`` pixels -> normalised ``[x1, y1, x2, y2]``, x / width and y / height of the
    ``images`` entry; crowd annotations included), and ``object_vocabulary`` "coco" (null
    without ``instances_json``). With ``object_instances=True`` there is one entry per
    annotation instead (names repeat; sorted by name, then box). Rejected: malformed image
    entries, images without a caption, missing/corrupt image files, a decoded size that
    differs from the entry's width/height, and annotations with an unknown image or
    category id or a bad box (the image is kept without that object). The files are read
    element by element (:func:`lookright.data.jsonstream.iter_json_array`). Returns the sink.
    """
    captions_path = check_file(captions_json)
    inst_path = check_file(instances_json) if instances_json else None
    col = _Collector(source_name, split, roles, sink)
    entries = _coco_image_entries(captions_path, col)
    known_ids: set[Any] = set(entries)
    if inst_path is not None:
        known_ids |= {
            e.get("id") for e in iter_json_array(inst_path, "images") if isinstance(e, Mapping)
        }
    order = _select_images(entries, max_images, seed)
    selected = set(order)
    captions = _first_captions(captions_path, col, known_ids, selected)
    objects = (
        _coco_instances(inst_path, col, entries, known_ids, selected, object_instances)
        if inst_path is not None
        else _CocoObjects(object_instances)
    )
    vocabulary = "coco" if inst_path is not None else None
    for coco_id in order:
        index, entry = entries[coco_id]
        try:
            if coco_id not in captions:
                raise InvalidRecord(f"no caption for image id {coco_id}")
            img_path, name = _resolve_image(image_root, entry["file_name"])
            expected = (entry["width"], entry["height"])
            image_id = col.image(str(img_path), img_path, name, expected_size=expected)
        except InvalidRecord as err:
            col.reject(captions_path, index, entry, str(err))
            continue
        names, boxes = objects.of(coco_id)
        col.add_sample(
            f"{source_name}-{coco_id}-caption",
            image_id,
            "caption",
            COCO_CAPTION_QUESTION,
            captions[coco_id],
            objects=names,
            object_boxes=boxes,
            object_vocabulary=vocabulary,
        )
    return col.sink
