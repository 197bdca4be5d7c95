"""VQA-HAT: human attention maps of VQA v1 questions (val: 3 annotators, train: 1).

See :mod:`lookright.data.readers.common` for the conventions every reader follows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lookright.data.jsonstream import (
    BadLine,
    check_file,
    iter_json_array,
    iter_json_records,
)
from lookright.data.readers.common import (
    DEFAULT_ROLES,
    VQA_HAT_VAL_IMAGES,
    RowSink,
    _Collector,
    _resolve_image,
)
from lookright.data.validate import (
    InvalidRecord,
    require_fields,
    require_str,
)

SplitSpec = str | Callable[[str], str]


# --------------------------------------------------------------------------- VQA-HAT


_MAP_NAME = re.compile(r"^(.+)_(\d+)\.png$", re.IGNORECASE)


def _index_maps(maps_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    if not maps_dir.is_dir():
        raise FileNotFoundError(f"{maps_dir}: no such folder (VQA-HAT maps)")
    index: dict[str, list[tuple[int, Path]]] = {}
    for entry in os.scandir(maps_dir):
        match = _MAP_NAME.match(entry.name)
        if match and entry.is_file():
            index.setdefault(match.group(1), []).append((int(match.group(2)), Path(entry.path)))
    for maps in index.values():
        maps.sort()
    return index


def load_attention_map(path: Path, dtype: Any = np.float32) -> np.ndarray:
    """One annotator's map in [0, 1]: 8-bit / 255, 16-bit / 65535 (colour -> L first)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64) / 65535.0
            elif img.mode == "F":
                arr = np.asarray(img, dtype=np.float64)
            else:
                arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    except Exception as err:  # noqa: BLE001
        raise InvalidRecord(f"attention map {path.name!r}: cannot be decoded (PIL: {err})") from err
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise InvalidRecord(f"attention map {path.name!r}: values outside [0, 1] after scaling")
    return arr.astype(dtype)


def vqa_hat_question_ids(maps_dir: str | os.PathLike[str]) -> set[str]:
    """The question ids (as strings) that have at least one ``{id}_{k}.png`` map."""
    return set(_index_maps(Path(maps_dir)))


def vqa_v1_questions(
    questions_json: str | os.PathLike[str],
    annotations_json: str | os.PathLike[str],
    question_ids: Iterable[Any] | None = None,
    image_template: str = VQA_HAT_VAL_IMAGES,
) -> list[dict[str, Any]]:
    """Question dicts for :func:`read_vqa_hat` from the VQA v1 questions + annotations files.

    ``questions_json`` holds ``{"questions": [{question_id, image_id, question}]}``,
    ``annotations_json`` ``{"annotations": [{question_id, multiple_choice_answer, ...}]}``;
    answer = ``multiple_choice_answer``, image = ``image_template`` formatted with the image
    id (``COCO_val2014_{image_id:012d}.jpg`` for VQA-HAT val, ``COCO_train2014_...`` for its
    train split). ``question_ids`` (e.g. :func:`vqa_hat_question_ids`) selects questions (a
    selection, not a rejection); only those are kept in memory. A field that cannot be
    filled is left out, so that :func:`read_vqa_hat` rejects the question with the reason.
    """
    wanted = None if question_ids is None else {str(q) for q in question_ids}
    try:
        image_template.format(image_id=1)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"image_template {image_template!r}: must format with image_id, e.g. "
            f"'COCO_train2014_{{image_id:012d}}.jpg' ({err})"
        ) from None
    out: list[dict[str, Any]] = []
    for q in iter_json_array(questions_json, "questions"):
        qid = q.get("question_id") if isinstance(q, Mapping) else None
        if wanted is not None and str(qid) not in wanted:
            continue
        if not isinstance(q, Mapping):
            out.append({"question_id": None, "record": q})
            continue
        rec: dict[str, Any] = {"question_id": qid, "question": q.get("question")}
        if isinstance(q.get("image_id"), int):
            rec["image"] = image_template.format(image_id=q["image_id"])
        out.append(rec)
    by_id = {str(r["question_id"]): r for r in out}
    for a in iter_json_array(annotations_json, "annotations"):
        if isinstance(a, Mapping) and str(a.get("question_id")) in by_id:
            answer = a.get("multiple_choice_answer")
            if answer is not None:
                by_id[str(a["question_id"])]["answer"] = answer
    return out


def read_vqa_hat(
    maps_dir: str | os.PathLike[str],
    questions: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    split: SplitSpec = "test",
    roles: Iterable[str] = DEFAULT_ROLES["vqa_hat"],
    source_name: str = "vqa-hat",
    sink: RowSink | None = None,
) -> Any:
    """Read VQA-HAT human attention maps for VQA v1 questions.

    ``questions``: dicts (or a JSON / JSON Lines file of them) with ``question_id``,
    ``image`` (path, relative to ``image_root``), ``question`` and ``answer`` (a string).
    Maps are the grayscale PNGs ``{question_id}_{k}.png`` in ``maps_dir`` (every k found
    is used); each is scaled to [0, 1] (8-bit / 255) and the annotators' maps (which must
    share one size) are averaged in float64; the mean is stored as float32, row-major, in
    ``human_map`` with ``human_map_height/width`` (the maps' own resolution, independent of
    the image). Task ``vqa``, no boxes. Questions without maps, with an unreadable map or
    maps of different sizes are rejected. Sample ids ``{source_name}-{question_id}``.
    Returns the sink.
    """
    maps_path = Path(maps_dir)
    maps = _index_maps(maps_path)
    if isinstance(questions, (str, os.PathLike)):
        qfile: Any = check_file(questions)
        rows: Iterable[tuple[int, Any]] = iter_json_records(qfile)
    else:
        qfile = maps_path
        rows = enumerate(questions)
    col = _Collector(source_name, split, roles, sink)
    for index, record in rows:
        try:
            if isinstance(record, BadLine):
                raise InvalidRecord(record.reason)
            require_fields(record, ["question_id", "image", "question", "answer"])
            qid = str(record["question_id"])
            question = require_str(record, "question")
            answer = require_str(record, "answer")
            human = _mean_human_map(maps.get(qid), qid, maps_path)
            sample_id = f"{source_name}-{qid}"
            img_path, name = _resolve_image(image_root, record["image"])
            col.check_sample_id(sample_id)
            image_id = col.image(str(img_path), img_path, name)
        except InvalidRecord as err:
            col.reject(qfile, index, record, str(err))
            continue
        col.add_sample(sample_id, image_id, "vqa", question, answer, human_map=human)
    return col.sink


def _mean_human_map(found: list[tuple[int, Path]] | None, qid: str, maps_path: Path) -> Any:
    if not found:
        raise InvalidRecord(f"no attention maps '{qid}_<k>.png' in {maps_path}")
    arrays = [load_attention_map(p, np.float64) for _, p in found]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InvalidRecord(f"attention maps of question {qid} differ in size: {sorted(shapes)}")
    return np.mean(np.stack(arrays), axis=0).astype(np.float32)
