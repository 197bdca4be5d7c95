"""saliency-r1-8k: Parquet (or a Hugging Face dataset) of problems with boxes, images embedded.

See :mod:`lookright.data.readers.common` for the conventions every reader follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lookright.data.jsonstream import (
    BadLine,
    check_file,
    iter_json_records,
)
from lookright.data.readers.common import (
    DEFAULT_ROLES,
    FILTERED_PREFIX,
    PARQUET_BUFFER,
    RowSink,
    _Collector,
    _resolve_image,
    split_think,
)
from lookright.data.validate import (
    DataFileError,
    InvalidRecord,
    image_size,
    parse_box_string,
    read_image,
    require_fields,
    require_str,
)

SplitSpec = str | Callable[[str], str]


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
