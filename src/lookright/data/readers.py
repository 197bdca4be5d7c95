"""Readers of the real dataset formats (METHODS.md section 11) into the prepare_data rows.

Every reader returns a :class:`ReadResult`: lists of dict rows with exactly the columns of
:data:`~lookright.data.schema.IMAGES`, :data:`~lookright.data.schema.SAMPLES` and
:data:`~lookright.data.schema.REJECTED`, so ``lookright.io.rows_to_table(rows, schema)``
builds the Parquet tables directly.

Conventions shared by all readers

* Images are fully decoded, converted to RGB and re-encoded as PNG (``image_png``); EXIF
  orientation is not applied (annotation boxes refer to the stored pixel grid).
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
  :func:`hashed_split`); the split is decided per image and copied to its samples.
* ids are prefixed with the source name: ``{source}-{key}``. Images shared by several
  records (POPE, LLaVA, VQA-HAT) give one ``images`` row.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from lookright.data.schema import IMAGES, POPE_SPLITS, REJECTED, SAMPLES, SPLITS
from lookright.data.validate import (
    DataFileError,
    InvalidRecord,
    encode_png,
    image_size,
    load_image,
    parse_box_string,
    pixel_box_to_normalised,
    record_json,
    require_fields,
    require_str,
)
from lookright.io import rows_to_table

SplitSpec = str | Callable[[str], str]
FILTERED_PREFIX = "filtered:"
COCO_CAPTION_QUESTION = "Describe this image."

__all__ = [
    "COCO_CAPTION_QUESTION",
    "FILTERED_PREFIX",
    "ReadResult",
    "hashed_split",
    "load_attention_map",
    "read_coco",
    "read_llava_conversations",
    "read_pope",
    "read_saliency_r1",
    "read_vqa_hat",
    "split_think",
    "vqa_hat_question_ids",
    "vqa_v1_questions",
]


# --------------------------------------------------------------------------- result


@dataclass
class ReadResult:
    """Rows for the three prepare_data tables (dicts with exactly the schema's columns)."""

    images: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

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
        """Append ``other``'s rows (in place); raises on duplicate image or sample ids."""
        for name, rows, key in (
            ("image", self.images, "image_id"),
            ("sample", self.samples, "sample_id"),
        ):
            seen = {r[key] for r in rows}
            new = other.images if name == "image" else other.samples
            dup = sorted(seen.intersection(r[key] for r in new))
            if dup:
                raise ValueError(f"duplicate {name} ids when merging reader results: {dup[:5]}")
        self.images.extend(other.images)
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
    if "</think>" in text:
        answer, cot = text.rpartition("</think>")[2].strip(), text
    elif "<think>" in text:
        raise InvalidRecord(f"{field_name}: '<think>' without '</think>'")
    else:
        answer, cot = text, None
    tagged = _ANSWER_TAG.match(answer)
    if tagged:
        answer = tagged.group(1).strip()
    if not answer:
        raise InvalidRecord(f"{field_name}: empty answer after '</think>'")
    return answer, cot


# --------------------------------------------------------------------------- JSON files


def _check_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(f"{path}: not UTF-8 text ({err})") from err


def _load_json_document(path: str | os.PathLike[str]) -> Any:
    """Parse a whole JSON file; syntax errors -> DataFileError naming file, line, column."""
    path = _check_file(path)
    text = _read_text(path)
    if not text.strip():
        raise DataFileError(f"{path}: file is empty, expected JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg})"
        ) from err


@dataclass
class _BadLine:
    text: str
    reason: str


def _load_json_lines(path: str | os.PathLike[str]) -> list[tuple[int, Any]]:
    """``(0-based line, record | _BadLine)`` of a JSON Lines file, or of a JSON array file.

    A single malformed line becomes a ``_BadLine`` (rejected by the caller); a file with no
    parseable line at all raises DataFileError naming the file and the first bad line.
    """
    path = _check_file(path)
    text = _read_text(path)
    if text.lstrip().startswith("["):
        data = _load_json_document(path)
        return list(enumerate(data))
    rows: list[tuple[int, Any]] = []
    first_error: str | None = None
    n_good = 0
    for lineno, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
            n_good += 1
        except json.JSONDecodeError as err:
            reason = f"line is not valid JSON ({err.msg}, column {err.colno})"
            rows.append((lineno, _BadLine(line, reason)))
            if first_error is None:
                first_error = f"line {lineno + 1}: not valid JSON ({err.msg})"
    if n_good == 0:
        if first_error is None:
            raise DataFileError(f"{path}: file is empty, expected JSON Lines")
        raise DataFileError(f"{path}: {first_error}; no line of the file is valid JSON")
    return rows


# --------------------------------------------------------------------------- collector


class _Collector:
    """Accumulates rows; caches images so an image shared by many records is read once."""

    def __init__(self, source: str, split: SplitSpec | None) -> None:
        self.source = source
        self.split = _split_fn(split) if split is not None else None
        self.result = ReadResult()
        self._images: dict[str, tuple[str, str] | InvalidRecord] = {}
        self._image_ids: dict[str, str] = {}
        self._sample_ids: set[str] = set()

    def reject(self, source_file: Any, source_row: int | None, record: Any, reason: str) -> None:
        if isinstance(record, _BadLine):
            record = record.text
        self.result.rejected.append(
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
        self,
        key: str,
        image_id: str,
        src: Any,
        name: str,
        objects: Sequence[str] = (),
        object_boxes: Sequence[Sequence[float]] = (),
        split: str | None = None,
    ) -> tuple[str, str]:
        """Load (once per ``key``) and add an image row; returns ``(image_id, split)``."""
        cached = self._images.get(key)
        if isinstance(cached, InvalidRecord):
            raise InvalidRecord(str(cached))
        if cached is not None:
            return cached
        try:
            other = self._image_ids.get(image_id)
            if other is not None and other != key:
                raise InvalidRecord(f"image id {image_id!r} already used by image {other!r}")
            img = src if isinstance(src, Image.Image) else load_image(src, name)
            png = encode_png(img)
        except InvalidRecord as err:
            self._images[key] = err
            raise
        self.add_image_row(image_id, img.width, img.height, png, objects, object_boxes, split)
        self._image_ids[image_id] = key
        self._images[key] = (image_id, self.result.images[-1]["split"])
        return self._images[key]

    def add_image_row(
        self,
        image_id: str,
        width: int,
        height: int,
        png: bytes,
        objects: Sequence[str] = (),
        object_boxes: Sequence[Sequence[float]] = (),
        split: str | None = None,
    ) -> str:
        if split is None:
            assert self.split is not None
            split = self.split(image_id)
        self.result.images.append(
            {
                "image_id": image_id,
                "split": split,
                "source": self.source,
                "image_png": png,
                "width": int(width),
                "height": int(height),
                "objects": list(objects),
                "object_boxes": [list(b) for b in object_boxes],
            }
        )
        return split

    def add_sample(
        self,
        sample_id: str,
        image_id: str,
        split: str,
        task: str,
        question: str,
        answer: str,
        cot: str | None = None,
        boxes: Sequence[Sequence[float]] = (),
        pope_split: str | None = None,
        human_map: np.ndarray | None = None,
    ) -> None:
        self._sample_ids.add(sample_id)
        self.result.samples.append(
            {
                "sample_id": sample_id,
                "image_id": image_id,
                "split": split,
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


def _image_key(rel: str) -> str:
    """Image id suffix: the relative path without its extension, '/'-separated."""
    return Path(rel).with_suffix("").as_posix()


# --------------------------------------------------------------------------- saliency-r1


def _load_hf_rows(
    source: Any, hf_split: str, cache_dir: str | None
) -> tuple[Iterable[Mapping[str, Any]], str, Path | None]:
    """``(rows, label for source_file, folder that relative image paths refer to)``."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        source = source[hf_split]
    if isinstance(source, datasets.Dataset):
        return _undecoded(source), "<datasets.Dataset>", None
    if isinstance(source, (list, tuple)):
        return source, "<records>", None
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"unsupported saliency-r1 source {source!r}")
    path = Path(source)
    label = str(source)
    try:
        if path.is_dir():
            markers = ("dataset_info.json", "state.json", "dataset_dict.json")
            if any((path / m).exists() for m in markers):
                ds = datasets.load_from_disk(str(path))
                if isinstance(ds, datasets.DatasetDict):
                    ds = ds[hf_split]
                return _undecoded(ds), label, path
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            builder = "parquet"
            if not files:
                files = sorted(str(p) for p in path.rglob("*.json*"))
                builder = "json"
            if not files:
                raise DataFileError(f"{path}: no .parquet/.json/.jsonl files in this folder")
            ds = datasets.load_dataset(
                builder, data_files=files, split="train", cache_dir=cache_dir
            )
            return _undecoded(ds), label, path
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".json", ".jsonl"):
            _check_file(path)
            builder = "parquet" if suffix == ".parquet" else "json"
            if builder == "json":
                _diagnose_json(path)
            ds = datasets.load_dataset(
                builder, data_files=str(path), split="train", cache_dir=cache_dir
            )
            return _undecoded(ds), label, path.parent
        # a Hugging Face hub id (or a hub-cached dataset name)
        ds = datasets.load_dataset(str(source), split=hf_split, cache_dir=cache_dir)
        return _undecoded(ds), label, None
    except (DataFileError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - datasets/pyarrow raise many error types
        raise DataFileError(
            f"{label}: cannot load the dataset ({type(err).__name__}: {err})"
        ) from err


def _diagnose_json(path: Path) -> None:
    """Fail early, naming the line, when a JSON/JSONL file has no parseable record."""
    text = _read_text(path)
    if text.lstrip().startswith("["):
        _load_json_document(path)
    else:
        bad = [row for row in _load_json_lines(path) if isinstance(row[1], _BadLine)]
        if bad:
            line, item = bad[0]
            raise DataFileError(f"{path}: line {line + 1}: {item.reason}")


def _undecoded(ds: Any) -> Any:
    """Keep image bytes undecoded so a corrupt image becomes a rejection, not a crash."""
    import datasets

    feature = ds.features.get("image")
    if isinstance(feature, datasets.Image) and feature.decode:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def read_saliency_r1(
    source: Any,
    *,
    split: SplitSpec | None = None,
    holdout: int = 100,
    seed: int = 42,
    max_image_side: int | None = 512,
    hf_split: str = "train",
    image_root: str | os.PathLike[str] | None = None,
    cache_dir: str | None = None,
    source_name: str = "saliency-r1-8k",
) -> ReadResult:
    """Read saliency-r1-8k: fields ``image``, ``problem``, ``solution``, ``bbox``.

    ``source``: a Hugging Face dataset id, a ``save_to_disk`` folder, a folder of
    Parquet/JSON(L) files, one such file, a ``datasets.Dataset``, or a list of dicts.
    ``image`` is a PIL image, ``{"bytes", "path"}`` dict, raw bytes or a path (relative
    paths are resolved against ``image_root``, default the data file's folder). ``bbox`` is
    the string ``"[x1, y1, x2, y2]"`` normalised to [0, 1]. Each row gives one image and one
    ``vqa`` sample: question = problem, answer/cot from :func:`split_think` (cot is null
    when the solution has no think tags), boxes = [bbox].

    Images with a side > ``max_image_side`` are rejected with a ``"filtered:"`` reason
    (None keeps all). Split: with ``split=None`` (default) the reference protocol: after
    validation and filtering, ``holdout`` kept rows chosen by
    ``np.random.default_rng(seed).permutation`` go to ``test``, the rest to ``train``
    (the test set of ``Dataset.train_test_split(test_size=holdout, seed=seed)`` on the kept
    rows). A split name or function overrides this. ids: ``{source_name}-{row:05d}``.
    """
    rows, label, data_dir = _load_hf_rows(source, hf_split, cache_dir)
    root = Path(image_root) if image_root is not None else data_dir
    col = _Collector(source_name, split)
    pending: list[dict[str, Any]] = []
    for index, record in enumerate(rows):
        try:
            require_fields(record, ["image", "problem", "solution", "bbox"])
            question = require_str(record, "problem")
            answer, cot = split_think(require_str(record, "solution"), "solution")
            box = parse_box_string(record["bbox"])
            src = record["image"]
            name = f"{label} row {index}"
            if isinstance(src, str):
                src, name = _resolve_image(root, src)
            elif isinstance(src, Mapping) and src.get("path"):
                name = str(src["path"])
                if src.get("bytes") is None:
                    src, name = _resolve_image(root, name)
            if max_image_side is not None:
                width, height = image_size(src, name)
                if max(width, height) > max_image_side:
                    raise InvalidRecord(
                        f"{FILTERED_PREFIX} image {name!r} is {width}x{height}, a side > "
                        f"max_image_side={max_image_side}"
                    )
            img = load_image(src, name)
        except InvalidRecord as err:
            col.reject(label, index, record, str(err))
            continue
        pending.append(
            {
                "index": index,
                "png": encode_png(img),
                "width": img.width,
                "height": img.height,
                "question": question,
                "answer": answer,
                "cot": cot,
                "box": box,
            }
        )
    test_rows: set[int] = set()
    if split is None:
        if holdout < 0 or holdout > len(pending):
            raise ValueError(
                f"{label}: holdout={holdout} but only {len(pending)} valid rows were read"
            )
        perm = np.random.default_rng(seed).permutation(len(pending))
        test_rows = {int(i) for i in perm[:holdout]}
    for k, item in enumerate(pending):
        image_id = f"{source_name}-{item['index']:05d}"
        fixed = None if split is not None else ("test" if k in test_rows else "train")
        img_split = col.add_image_row(
            image_id, item["width"], item["height"], item["png"], split=fixed
        )
        col.add_sample(
            f"{image_id}-vqa",
            image_id,
            img_split,
            "vqa",
            item["question"],
            item["answer"],
            cot=item["cot"],
            boxes=[item["box"]],
        )
    return col.result


# --------------------------------------------------------------------------- LLaVA


_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


def _first_pair(conversations: Any) -> tuple[str, str]:
    """The first human turn and the first gpt turn after it (later turns are ignored)."""
    if not isinstance(conversations, list):
        raise InvalidRecord(
            f"field 'conversations' is a {type(conversations).__name__}, expected a list"
        )
    human = None
    for turn in conversations:
        if not isinstance(turn, Mapping):
            raise InvalidRecord("a turn of 'conversations' is not an object")
        role = str(turn.get("from", "")).lower()
        if human is None and role in _HUMAN:
            human = turn.get("value")
        elif human is not None and role in _GPT:
            gpt = turn.get("value")
            if not isinstance(human, str) or not isinstance(gpt, str):
                raise InvalidRecord("a turn of 'conversations' has no string 'value'")
            return human, gpt
    raise InvalidRecord("no human turn followed by a gpt turn in 'conversations'")


def read_llava_conversations(
    json_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: SplitSpec = "train",
    source_name: str = "sft-cold-start",
) -> ReadResult:
    """Read a LLaVA conversation JSON list (the Vision-R1-cold SFT format).

    Records ``{"id"?, "image": relative path, "conversations": [{"from": "human", "value":
    "<image>\\n..."}, {"from": "gpt", "value": "<think>...</think>..."}, ...]}``. Only the
    FIRST human turn and the first gpt turn after it are used (later turns are ignored);
    a record without such a pair is rejected, as is a list of several images. question =
    the human value without ``<image>`` placeholders, stripped; answer/cot from
    :func:`split_think` on the gpt value (cot = the gpt value when it has think tags, else
    null). Task ``vqa``, no boxes. Sample ids ``{source_name}-{id}`` (``id`` field, else the
    0-based record index); image ids ``{source_name}-{image path without extension}``.
    """
    path = _check_file(json_path)
    data = _load_json_document(path)
    if not isinstance(data, list):
        raise DataFileError(
            f"{path}: top level is a {type(data).__name__}, expected a JSON list of records"
        )
    col = _Collector(source_name, split)
    for index, record in enumerate(data):
        try:
            require_fields(record, ["image", "conversations"])
            if isinstance(record["image"], list):
                raise InvalidRecord("field 'image' is a list; multi-image records not supported")
            human, gpt = _first_pair(record["conversations"])
            question = human.replace("<image>", "").strip()
            if not question:
                raise InvalidRecord("empty question after removing '<image>'")
            answer, cot = split_think(gpt, "gpt reply")
            rid = record.get("id")
            sample_id = f"{source_name}-{rid if rid is not None else f'{index:06d}'}"
            img_path, name = _resolve_image(image_root, record["image"])
            col.check_sample_id(sample_id)
            image_id, img_split = col.image(
                str(img_path), f"{source_name}-{_image_key(name)}", img_path, name
            )
        except InvalidRecord as err:
            col.reject(path, index, record, str(err))
            continue
        col.add_sample(sample_id, image_id, img_split, "vqa", question, answer, cot=cot)
    return col.result


# --------------------------------------------------------------------------- POPE


_POPE_NAME = re.compile(r"pope_(random|popular|adversarial)")


def _pope_files(
    files: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str],
) -> list[tuple[str, Path]]:
    if isinstance(files, Mapping):
        items = [(str(k), Path(v)) for k, v in files.items()]
    else:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        items = []
        for f in files:
            match = _POPE_NAME.search(Path(f).name)
            if match is None:
                raise ValueError(
                    f"{f}: cannot tell the POPE split from the file name "
                    f"(expected coco_pope_{{random,popular,adversarial}}.json); pass a dict"
                )
            items.append((match.group(1), Path(f)))
    for pope_split, _ in items:
        if pope_split not in POPE_SPLITS:
            raise ValueError(f"POPE split {pope_split!r} is not one of {POPE_SPLITS}")
    return items


def read_pope(
    files: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: SplitSpec = "test",
    source_name: str = "pope",
) -> ReadResult:
    """Read POPE question files (JSON Lines ``{question_id, image, text, label}``).

    ``files``: ``{"random": path, ...}`` or paths named ``coco_pope_{random,popular,
    adversarial}.json`` (a JSON array file is accepted too). Task ``pope``, question = text,
    answer = label lowercased (anything but yes/no is rejected), pope_split from the dict key
    or file name. ``image`` is relative to ``image_root`` (COCO val2014). One ``images`` row
    per distinct image over all files (id ``{source_name}-{file name without extension}``);
    sample ids ``{source_name}-{pope_split}-{question_id}`` (duplicates rejected).
    """
    col = _Collector(source_name, split)
    for pope_split, path in _pope_files(files):
        for lineno, record in _load_json_lines(path):
            try:
                if isinstance(record, _BadLine):
                    raise InvalidRecord(record.reason)
                require_fields(record, ["question_id", "image", "text", "label"])
                question = require_str(record, "text")
                label = require_str(record, "label").lower()
                if label not in ("yes", "no"):
                    raise InvalidRecord(f"label {record['label']!r} is not yes/no")
                sample_id = f"{source_name}-{pope_split}-{record['question_id']}"
                img_path, name = _resolve_image(image_root, record["image"])
                col.check_sample_id(sample_id)
                image_id, img_split = col.image(
                    str(img_path), f"{source_name}-{_image_key(name)}", img_path, name
                )
            except InvalidRecord as err:
                col.reject(path, lineno, record, str(err))
                continue
            col.add_sample(
                sample_id, image_id, img_split, "pope", question, label, pope_split=pope_split
            )
    return col.result


# --------------------------------------------------------------------------- COCO


def _positive_int(record: Mapping[str, Any], name: str) -> int:
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRecord(f"field {name!r} is {value!r}, expected a positive integer")
    return value


def _coco_document(path: Any, what: str) -> dict[str, Any]:
    data = _load_json_document(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataFileError(f"{path}: not a COCO {what} file (no 'annotations' list)")
    if not isinstance(data.get("images", []), list):
        raise DataFileError(f"{path}: 'images' is not a list")
    return data


def read_coco(
    captions_json: str | os.PathLike[str],
    instances_json: str | os.PathLike[str] | None,
    image_root: str | os.PathLike[str],
    max_images: int | None = None,
    *,
    split: SplitSpec = "test",
    seed: int | None = None,
    object_instances: bool = False,
    source_name: str = "coco",
) -> ReadResult:
    """Read COCO captions (+ instances for CHAIR ground truth) into caption samples.

    Images are the ``images`` entries of ``captions_json`` ordered by id; ``max_images``
    keeps the first N (or, with ``seed``, N drawn with ``np.random.default_rng(seed)``).
    Images not selected are neither read nor rejected, and neither are their annotations.
    Per image: ``objects`` = the unique category names of its instance annotations, sorted,
    and ``object_boxes`` = for each name the box enclosing all its instances (COCO
    ``[x, y, w, h]`` pixels -> normalised ``[x1, y1, x2, y2]``, x / width and y / height of
    the ``images`` entry; crowd annotations included). With ``object_instances=True`` there
    is one entry per annotation instead (names repeat; sorted by name, then box). One
    ``caption`` sample per image: question "Describe this image.", answer = its FIRST
    reference caption in file order (the others are not stored). Rejected: malformed image
    entries, images without a caption, missing/corrupt image files, a decoded size that
    differs from the entry's width/height, and annotations with an unknown image or
    category id or a bad box (the image is kept without that object).
    """
    captions_path = _check_file(captions_json)
    cap = _coco_document(captions_path, "captions")
    inst = _coco_document(_check_file(instances_json), "instances") if instances_json else None
    col = _Collector(source_name, split)

    entries: dict[int, tuple[int, dict[str, Any]]] = {}
    for index, entry in enumerate(cap.get("images", [])):
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
            col.reject(captions_path, index, entry, f"image entry: {err}")
            continue
        entries[image_id_num] = (index, entry)
    known_ids = set(entries)
    if inst is not None:
        known_ids |= {e.get("id") for e in inst.get("images", []) if isinstance(e, Mapping)}

    order = sorted(entries)
    if max_images is not None and max_images < len(order):
        if seed is None:
            order = order[:max_images]
        else:
            picks = np.random.default_rng(seed).choice(len(order), max_images, replace=False)
            order = [order[i] for i in sorted(picks)]
    selected = set(order)

    captions: dict[int, list[str]] = {i: [] for i in selected}
    for index, ann in enumerate(cap["annotations"]):
        try:
            require_fields(ann, ["image_id", "caption"])
            if ann["image_id"] not in known_ids:
                raise InvalidRecord(f"image_id {ann['image_id']!r} not in 'images'")
            if ann["image_id"] not in selected:
                continue
            captions[ann["image_id"]].append(require_str(ann, "caption"))
        except InvalidRecord as err:
            col.reject(captions_path, index, ann, f"caption annotation: {err}")

    objects: dict[int, list[tuple[str, list[float]]]] = {i: [] for i in selected}
    if inst is not None:
        inst_path = Path(instances_json)  # type: ignore[arg-type]
        categories = {
            c.get("id"): c.get("name")
            for c in inst.get("categories", [])
            if isinstance(c, Mapping) and isinstance(c.get("name"), str)
        }
        for index, ann in enumerate(inst["annotations"]):
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
                col.reject(inst_path, index, ann, f"instance annotation: {err}")
                continue
            objects[ann["image_id"]].append((name, box))

    for coco_id in order:
        index, entry = entries[coco_id]
        try:
            if not captions[coco_id]:
                raise InvalidRecord(f"no caption for image id {coco_id}")
            img_path, name = _resolve_image(image_root, entry["file_name"])
            img = load_image(img_path, name)
            if img.size != (entry["width"], entry["height"]):
                raise InvalidRecord(
                    f"image {name!r}: decoded size {img.width}x{img.height} differs from the "
                    f"annotated {entry['width']}x{entry['height']}"
                )
            names, boxes = _coco_objects(objects[coco_id], object_instances)
            image_id, img_split = col.image(
                str(img_path),
                f"{source_name}-{_image_key(name)}",
                img,
                name,
                objects=names,
                object_boxes=boxes,
            )
        except InvalidRecord as err:
            col.reject(captions_path, index, entry, str(err))
            continue
        col.add_sample(
            f"{source_name}-{coco_id}-caption",
            image_id,
            img_split,
            "caption",
            COCO_CAPTION_QUESTION,
            captions[coco_id][0],
        )
    return col.result


def _coco_objects(
    items: list[tuple[str, list[float]]], per_instance: bool
) -> tuple[list[str], list[list[float]]]:
    if per_instance:
        items = sorted(items)
        return [n for n, _ in items], [b for _, b in items]
    union: dict[str, list[float]] = {}
    for name, (x1, y1, x2, y2) in items:
        u = union.setdefault(name, [x1, y1, x2, y2])
        u[:] = [min(u[0], x1), min(u[1], y1), max(u[2], x2), max(u[3], y2)]
    names = sorted(union)
    return names, [union[n] for n in names]


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
    image_template: str = "COCO_val2014_{image_id:012d}.jpg",
) -> list[dict[str, Any]]:
    """Question dicts for :func:`read_vqa_hat` from the VQA v1 questions + annotations files.

    ``questions_json`` holds ``{"questions": [{question_id, image_id, question}]}``,
    ``annotations_json`` ``{"annotations": [{question_id, multiple_choice_answer, ...}]}``;
    answer = ``multiple_choice_answer``, image = ``image_template`` formatted with the image
    id. ``question_ids`` (e.g. :func:`vqa_hat_question_ids`) selects questions (a selection,
    not a rejection). A field that cannot be filled is left out, so that
    :func:`read_vqa_hat` rejects the question with the reason.
    """
    qdoc = _load_json_document(questions_json)
    adoc = _load_json_document(annotations_json)
    if not isinstance(qdoc, dict) or not isinstance(qdoc.get("questions"), list):
        raise DataFileError(f"{questions_json}: not a VQA questions file (no 'questions' list)")
    if not isinstance(adoc, dict) or not isinstance(adoc.get("annotations"), list):
        raise DataFileError(f"{annotations_json}: not a VQA annotations file (no 'annotations')")
    answers = {
        str(a.get("question_id")): a.get("multiple_choice_answer")
        for a in adoc["annotations"]
        if isinstance(a, Mapping)
    }
    wanted = None if question_ids is None else {str(q) for q in question_ids}
    out: list[dict[str, Any]] = []
    for q in qdoc["questions"]:
        qid = q.get("question_id") if isinstance(q, Mapping) else None
        if wanted is not None and str(qid) not in wanted:
            continue
        if not isinstance(q, Mapping):
            out.append({"question_id": None, "record": q})
            continue
        rec: dict[str, Any] = {"question_id": qid, "question": q.get("question")}
        if isinstance(q.get("image_id"), int):
            rec["image"] = image_template.format(image_id=q["image_id"])
        if answers.get(str(qid)) is not None:
            rec["answer"] = answers[str(qid)]
        out.append(rec)
    return out


def read_vqa_hat(
    maps_dir: str | os.PathLike[str],
    questions: Sequence[Mapping[str, Any]] | str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    *,
    split: SplitSpec = "test",
    source_name: str = "vqa-hat",
) -> ReadResult:
    """Read VQA-HAT human attention maps for VQA v1 questions.

    ``questions``: dicts (or a JSON / JSON Lines file of them) with ``question_id``,
    ``image`` (path, relative to ``image_root``), ``question`` and ``answer`` (a string).
    Maps are the grayscale PNGs ``{question_id}_{k}.png`` in ``maps_dir`` (every k found
    is used); each is scaled to [0, 1] (8-bit / 255) and the annotators' maps (which must
    share one size) are averaged in float64; the mean is stored as float32, row-major, in
    ``human_map`` with ``human_map_height/width`` (the maps' own resolution, independent of
    the image). Task ``vqa``, no boxes. Questions without maps, with an unreadable map or maps of different sizes are
    rejected. Sample ids ``{source_name}-{question_id}``.
    """
    maps_path = Path(maps_dir)
    maps = _index_maps(maps_path)
    if isinstance(questions, (str, os.PathLike)):
        qfile: Any = _check_file(questions)
        rows = _load_json_lines(qfile)
    else:
        qfile = maps_path
        rows = list(enumerate(questions))
    col = _Collector(source_name, split)
    for index, record in rows:
        try:
            if isinstance(record, _BadLine):
                raise InvalidRecord(record.reason)
            require_fields(record, ["question_id", "image", "question", "answer"])
            qid = str(record["question_id"])
            question = require_str(record, "question")
            answer = require_str(record, "answer")
            found = maps.get(qid)
            if not found:
                raise InvalidRecord(f"no attention maps '{qid}_<k>.png' in {maps_path}")
            arrays = [load_attention_map(p, np.float64) for _, p in found]
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise InvalidRecord(
                    f"attention maps of question {qid} differ in size: {sorted(shapes)}"
                )
            human = np.mean(np.stack(arrays), axis=0).astype(np.float32)
            sample_id = f"{source_name}-{qid}"
            img_path, name = _resolve_image(image_root, record["image"])
            col.check_sample_id(sample_id)
            image_id, img_split = col.image(
                str(img_path), f"{source_name}-{_image_key(name)}", img_path, name
            )
        except InvalidRecord as err:
            col.reject(qfile, index, record, str(err))
            continue
        col.add_sample(sample_id, image_id, img_split, "vqa", question, answer, human_map=human)
    return col.result
