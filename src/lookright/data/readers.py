"""Readers of the real dataset formats (docs/data-formats.md).

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from PIL import Image

from lookright.completion import THINK_CLOSE, THINK_OPEN, final_answer
from lookright.data.jsonstream import (
    BadLine,
    check_file,
    iter_json_array,
    iter_json_records,
)
from lookright.data.schema import IMAGES, POPE_SPLITS, REJECTED, ROLES, SAMPLES, SPLITS
from lookright.data.validate import (
    DataFileError,
    InvalidRecord,
    StoredImage,
    image_size,
    parse_box_string,
    pixel_box_to_normalised,
    read_image,
    record_json,
    require_fields,
    require_str,
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

__all__ = [
    "COCO_CAPTION_QUESTION",
    "DEFAULT_ROLES",
    "FILTERED_PREFIX",
    "VQA_HAT_VAL_IMAGES",
    "ReadResult",
    "RowSink",
    "check_roles",
    "hashed_split",
    "load_attention_map",
    "read_coco",
    "read_llava_conversations",
    "read_pope",
    "read_saliency_r1",
    "read_vqa_hat",
    "reference_holdout",
    "split_think",
    "vqa_hat_question_ids",
    "vqa_v1_questions",
]


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


# --------------------------------------------------------------------------- saliency-r1


def reference_holdout(n_rows: int, holdout: int, seed: int) -> set[int]:
    """Row indices the reference holds out: the test set of
    ``datasets.Dataset.train_test_split(test_size=holdout, seed=seed)`` over ALL ``n_rows``
    rows (``np.random.default_rng(seed).permutation(n_rows)[:holdout]``), before any row is
    validated, so that a rejected row never changes which rows are held out.
    """
    if holdout < 0 or holdout > n_rows:
        raise ValueError(f"holdout={holdout} but the dataset has only {n_rows} rows")
    return {int(i) for i in np.random.default_rng(seed).permutation(n_rows)[:holdout]}


@dataclass
class _Rows:
    """A dataset's rows, streamed: how many, an iterator, a label, the folder of its files."""

    n_rows: int
    rows: Iterable[Any]
    label: str
    data_dir: Path | None


def _parquet_rows(files: Sequence[Path], label: str) -> _Rows:
    import pyarrow.parquet as pq

    try:  # buffered page by page: a row group (~100 MB in HF exports) is never held whole
        handles = [pq.ParquetFile(f, buffer_size=PARQUET_BUFFER, pre_buffer=False) for f in files]
    except (OSError, pa.ArrowException) as err:
        raise DataFileError(
            f"{label}: cannot load the dataset ({type(err).__name__}: {err})"
        ) from err

    def rows() -> Iterator[dict[str, Any]]:
        for handle in handles:
            for batch in handle.iter_batches(batch_size=64):
                yield from batch.to_pylist()

    return _Rows(sum(h.metadata.num_rows for h in handles), rows(), label, None)


def _json_rows(files: Sequence[Path], label: str) -> _Rows:
    def rows() -> Iterator[Any]:
        for file in files:
            for _, record in iter_json_records(file):
                yield record

    n_rows = sum(1 for _ in rows())  # a counting pass: the holdout needs the row count
    return _Rows(n_rows, rows(), label, None)


def _dataset_rows(ds: Any, label: str) -> _Rows:
    return _Rows(len(ds), _undecoded(ds), label, None)


def _load_rows(source: Any, hf_split: str, cache_dir: str | None) -> _Rows:
    """The rows of a saliency-r1 source (see :func:`read_saliency_r1`)."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        source = source[hf_split]
    if isinstance(source, datasets.Dataset):
        return _dataset_rows(source, "<datasets.Dataset>")
    if isinstance(source, (list, tuple)):
        return _Rows(len(source), source, "<records>", None)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"unsupported saliency-r1 source {source!r}")
    path, label = Path(source), str(source)
    if path.is_dir():
        markers = ("dataset_info.json", "state.json", "dataset_dict.json")
        if any((path / m).exists() for m in markers):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[hf_split]
            rows = _dataset_rows(ds, label)
        elif files := sorted(path.rglob("*.parquet")):
            rows = _parquet_rows(files, label)
        elif files := sorted(path.rglob("*.json*")):
            rows = _json_rows(files, label)
        else:
            raise DataFileError(f"{path}: no .parquet/.json/.jsonl files in this folder")
        rows.data_dir = path
        return rows
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".json", ".jsonl"):
        check_file(path)
        rows = _parquet_rows([path], label) if suffix == ".parquet" else _json_rows([path], label)
        rows.data_dir = path.parent
        return rows
    try:  # a Hugging Face hub id (or a hub-cached dataset name)
        ds = datasets.load_dataset(str(source), split=hf_split, cache_dir=cache_dir)
    except Exception as err:  # noqa: BLE001 - datasets raises many error types
        raise DataFileError(
            f"{label}: cannot load the dataset ({type(err).__name__}: {err})"
        ) from err
    return _dataset_rows(ds, label)


def _undecoded(ds: Any) -> Any:
    """Keep image bytes undecoded so a corrupt image becomes a rejection, not a crash."""
    import datasets

    feature = ds.features.get("image")
    if isinstance(feature, datasets.Image) and feature.decode:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def _saliency_image(record: Mapping[str, Any], index: int, label: str, root: Any) -> tuple:
    src = record["image"]
    name = f"{label} row {index}"
    if isinstance(src, str):
        src, name = _resolve_image(root, src)
    elif isinstance(src, Mapping) and src.get("path"):
        name = str(src["path"])
        if src.get("bytes") is None:
            src, name = _resolve_image(root, name)
    return src, name


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
    roles: Iterable[str] = DEFAULT_ROLES["saliency_r1"],
    source_name: str = "saliency-r1-8k",
    sink: RowSink | None = None,
) -> Any:
    """Read saliency-r1-8k: fields ``image``, ``problem``, ``solution``, ``bbox``.

    ``source``: a Hugging Face dataset id, a ``save_to_disk`` folder, a folder of
    Parquet/JSON(L) files, one such file, a ``datasets.Dataset``, or a list of dicts.
    ``image`` is a PIL image, ``{"bytes", "path"}`` dict, raw bytes or a path (relative
    paths are resolved against ``image_root``, default the data file's folder). ``bbox`` is
    the string ``"[x1, y1, x2, y2]"`` normalised to [0, 1]. Each row gives one ``vqa``
    sample: question = problem, answer/cot from :func:`split_think` (cot is null when the
    solution has no think tags), boxes = [bbox].

    Images with a side > ``max_image_side`` are rejected with a ``"filtered:"`` reason
    (None keeps all). Split: with ``split=None`` (default) the reference protocol: the
    ``holdout`` rows of :func:`reference_holdout` over ALL rows (seed ``seed``) go to
    ``test``, the rest to ``train``; rows are validated after that, so a held-out row that
    is rejected leaves the test split one row short instead of moving another row in. A
    split name or function overrides this. ids: ``{source_name}-{row:05d}-vqa``.
    Returns the sink (a new :class:`ReadResult` when none is given).
    """
    data = _load_rows(source, hf_split, cache_dir)
    root = Path(image_root) if image_root is not None else data.data_dir
    col = _Collector(source_name, split, roles, sink)
    test_rows = reference_holdout(data.n_rows, holdout, seed) if split is None else set()
    for index, record in enumerate(data.rows):
        try:
            if isinstance(record, BadLine):
                raise InvalidRecord(record.reason)
            require_fields(record, ["image", "problem", "solution", "bbox"])
            question = require_str(record, "problem")
            answer, cot = split_think(require_str(record, "solution"), "solution")
            box = parse_box_string(record["bbox"])
            src, name = _saliency_image(record, index, data.label, root)
            if max_image_side is not None:
                width, height = image_size(src, name)
                if max(width, height) > max_image_side:
                    raise InvalidRecord(
                        f"{FILTERED_PREFIX} image {name!r} is {width}x{height}, a side > "
                        f"max_image_side={max_image_side}"
                    )
            image_id = col.add_stored_image(read_image(src, name))
        except InvalidRecord as err:
            col.reject(data.label, index, record, str(err))
            continue
        fixed = None if split is not None else ("test" if index in test_rows else "train")
        col.add_sample(
            f"{source_name}-{index:05d}-vqa",
            image_id,
            "vqa",
            question,
            answer,
            split=fixed,
            cot=cot,
            boxes=[box],
        )
    return col.sink


# --------------------------------------------------------------------------- LLaVA / Mulberry


_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


def _first_pair(conversations: Any) -> tuple[str, str]:
    """The first human/user turn and the first gpt/assistant turn after it (later turns are
    ignored)."""
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


def _conversation_image(record: Any) -> Any:
    """The one image path of a LLaVA-CoT (``image``) or Mulberry (``images: [...]``) record."""
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"record is a {type(record).__name__}, expected a JSON object")
    if record.get("image") is not None:
        image = record["image"]
        if isinstance(image, list):
            raise InvalidRecord("field 'image' is a list; multi-image records not supported")
        return image
    images = record.get("images")
    if images is None:
        raise InvalidRecord("missing field 'image' (LLaVA-CoT) or 'images' (Mulberry)")
    if not isinstance(images, list) or len(images) != 1:
        count = len(images) if isinstance(images, list) else type(images).__name__
        raise InvalidRecord(f"field 'images' holds {count} entries; exactly 1 is supported")
    return images[0]


def read_llava_conversations(
    json_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: SplitSpec = "train",
    roles: Iterable[str] = DEFAULT_ROLES["llava_conversations"],
    source_name: str = "sft-cold-start",
    sink: RowSink | None = None,
) -> Any:
    """Read a conversation JSON list: both files of the Vision-R1 cold start.

    LLaVA-CoT records ``{"id", "image": relative path, "conversations": [{"from": "human",
    "value": "<image>\\n..."}, {"from": "gpt", "value": "<think>...</think>..."}]}`` and
    Mulberry records ``{"images": [relative path], "conversations": [{"from": "user", ...},
    {"from": "assistant", ...}]}``. Only the FIRST human/user turn and the first
    gpt/assistant turn after it are used (later turns are ignored); a record without such a
    pair is rejected, as is one with several images. question = the human value without
    ``<image>`` placeholders, stripped; answer/cot from :func:`split_think` on the reply
    (cot = the reply when it has think tags, else null). Task ``vqa``, no boxes. Sample ids
    ``{source_name}-{id}``, or ``{source_name}-{file name without extension}-{index:06d}``
    (0-based record index) for records without ``id``. Returns the sink.
    """
    path = check_file(json_path)
    col = _Collector(source_name, split, roles, sink)
    for index, record in enumerate(iter_json_array(path)):
        try:
            rel = _conversation_image(record)
            require_fields(record, ["conversations"])
            human, gpt = _first_pair(record["conversations"])
            question = human.replace("<image>", "").strip()
            if not question:
                raise InvalidRecord("empty question after removing '<image>'")
            answer, cot = split_think(gpt, "gpt reply")
            rid = record.get("id")
            key = rid if rid is not None else f"{path.stem}-{index:06d}"
            sample_id = f"{source_name}-{key}"
            img_path, name = _resolve_image(image_root, rel)
            col.check_sample_id(sample_id)
            image_id = col.image(str(img_path), img_path, name)
        except InvalidRecord as err:
            col.reject(path, index, record, str(err))
            continue
        col.add_sample(sample_id, image_id, "vqa", question, answer, cot=cot)
    return col.sink


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
    roles: Iterable[str] = DEFAULT_ROLES["pope"],
    source_name: str = "pope",
    sink: RowSink | None = None,
) -> Any:
    """Read POPE question files (JSON Lines ``{question_id, image, text, label}``).

    ``files``: ``{"random": path, ...}`` or paths named ``coco_pope_{random,popular,
    adversarial}.json`` (a JSON array file is accepted too). Task ``pope``, question = text,
    answer = label lowercased (anything but yes/no is rejected), pope_split from the dict key
    or file name. ``image`` is relative to ``image_root`` (COCO val2014). Sample ids
    ``{source_name}-{pope_split}-{question_id}`` (duplicates rejected). Returns the sink.
    """
    col = _Collector(source_name, split, roles, sink)
    for pope_split, path in _pope_files(files):
        for lineno, record in iter_json_records(path):
            try:
                if isinstance(record, BadLine):
                    raise InvalidRecord(record.reason)
                require_fields(record, ["question_id", "image", "text", "label"])
                question = require_str(record, "text")
                label = require_str(record, "label").lower()
                if label not in ("yes", "no"):
                    raise InvalidRecord(f"label {record['label']!r} is not yes/no")
                sample_id = f"{source_name}-{pope_split}-{record['question_id']}"
                img_path, name = _resolve_image(image_root, record["image"])
                col.check_sample_id(sample_id)
                image_id = col.image(str(img_path), img_path, name)
            except InvalidRecord as err:
                col.reject(path, lineno, record, str(err))
                continue
            col.add_sample(sample_id, image_id, "pope", question, label, pope_split=pope_split)
    return col.sink


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
