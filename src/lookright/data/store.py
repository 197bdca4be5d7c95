"""Write the ``prepare_data`` tables in bounded batches: :class:`ParquetSink`.

Readers (:mod:`lookright.data.readers`) hand it one row at a time; it buffers at most
``batch_rows`` rows (64 images, 1024 samples) or ``batch_bytes`` (16 MB) per table, then
appends them to the table's Parquet file as one row group, so memory does not grow with the
data set (200k images; measured in BENCHMARKS.md).
Each image is written once, keyed by its ``image_id`` (the SHA-256 of its bytes). The files
are written under temporary names and renamed into place by :meth:`ParquetSink.finish`, so a
reader of the output folder sees complete tables or none.

A reader entry may carve a ``val`` split out of its ``train`` samples
(:class:`ValCarve`): the entry's train images are ordered by a seeded permutation and taken,
with all their samples, until the requested number of samples is reached. That needs every
train sample of the entry to be known, so ``samples.parquet`` is rewritten once at the end
(batch by batch) with the new splits.
"""

from __future__ import annotations

import os
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookright.data.readers.common import FILTERED_PREFIX, image_row
from lookright.data.schema import IMAGES, REJECTED, SAMPLES
from lookright.data.validate import StoredImage
from lookright.io import rows_to_table

BATCH_ROWS = {"images": 64, "samples": 1024, "rejected": 1024}
"""Rows per row group (at most): 64 images of ~150 KB keep a batch near 10 MB."""
BATCH_BYTES = 16 << 20
TABLES = {"images": IMAGES, "samples": SAMPLES, "rejected": REJECTED}


@dataclass(frozen=True)
class ValCarve:
    """How many of an entry's train samples move to ``val``: ``count`` samples, or
    ``round(fraction * train samples)``; chosen by image with ``seed`` (see module doc)."""

    what: str
    seed: int
    count: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, value: Any, seed: int, what: str) -> ValCarve | None:
        """``val: 0.05`` (a fraction in (0, 1)), ``val: 500`` (a count) or null/0 (none)."""
        if value is None or value == 0:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{what}.val={value!r}: expected a fraction in (0, 1) or a count")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{what}.val={value}: a count must be >= 0")
            return cls(what, seed, count=value)
        if not 0.0 < value < 1.0:
            raise ValueError(f"{what}.val={value}: a fraction must lie in (0, 1)")
        return cls(what, seed, fraction=float(value))

    def target(self, n_train: int) -> int:
        wanted = self.count if self.count is not None else round(self.fraction * n_train)
        if wanted > n_train:
            raise ValueError(
                f"{self.what}.val={self.count}: the entry has only {n_train} train samples"
            )
        return int(wanted)


@dataclass
class _EntryTrain:
    """Positions (rows of samples.parquet) and image keys of one entry's train samples."""

    carve: ValCarve
    positions: array = field(default_factory=lambda: array("q"))
    images: list[str] = field(default_factory=list)


def choose_val_positions(entry: _EntryTrain) -> list[int]:
    """Rows of ``entry`` that move to val: whole images in seeded order until the target."""
    target = entry.carve.target(len(entry.positions))
    by_image: dict[str, list[int]] = {}
    for position, image in zip(entry.positions, entry.images, strict=True):
        by_image.setdefault(image, []).append(position)
    order = list(by_image)
    chosen: list[int] = []
    for k in np.random.default_rng(entry.carve.seed).permutation(len(order)):
        if len(chosen) >= target:
            break
        chosen += by_image[order[int(k)]]
    return chosen


class _Table:
    """One Parquet file written row group by row group."""

    def __init__(self, path: Path, schema: pa.Schema, batch_rows: int, batch_bytes: int) -> None:
        self.path, self.schema = path, schema
        self.partial = path.with_name(f".{path.name}.partial")
        self.writer = pq.ParquetWriter(self.partial, schema)
        self.rows: list[dict[str, Any]] = []
        self.bytes = 0
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        self.n_rows = 0

    def add(self, row: dict[str, Any], size: int = 0) -> int:
        """Buffer ``row``; returns its 0-based row number in the file."""
        self.rows.append(row)
        self.bytes += size
        self.n_rows += 1
        if len(self.rows) >= self.batch_rows or self.bytes >= self.batch_bytes:
            self.flush()
        return self.n_rows - 1

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(rows_to_table(self.rows, self.schema))
            self.rows, self.bytes = [], 0

    def close(self) -> None:
        if self.writer is not None:
            self.flush()
            self.writer.close()
            self.writer = None

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.partial.unlink(missing_ok=True)


class ParquetSink:
    """A :class:`lookright.data.readers.RowSink` writing images/samples/rejected.parquet."""

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        batch_rows: int | None = None,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        """``batch_rows`` (default :data:`BATCH_ROWS` per table) and ``batch_bytes`` bound
        the rows buffered per table before they are written as one row group."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tables = {
            name: _Table(
                self.out_dir / f"{name}.parquet",
                schema,
                batch_rows or BATCH_ROWS[name],
                batch_bytes,
            )
            for name, schema in TABLES.items()
        }
        self.image_ids: set[str] = set()
        self.sample_ids: set[str] = set()
        self.image_bytes = 0
        self.n_invalid = 0
        self.n_filtered = 0
        self.reasons: Counter[str] = Counter()
        self._entry: _EntryTrain | None = None
        self._val_positions: set[int] = set()
        self.on_row: Callable[[], None] | None = None  # called per sample or rejection (progress)

    # -- RowSink

    def add_image(self, image: StoredImage) -> None:
        if image.image_id in self.image_ids:
            return
        self.image_ids.add(image.image_id)
        self.image_bytes += len(image.data)
        self.tables["images"].add(image_row(image), len(image.data))

    def add_sample(self, row: dict[str, Any]) -> None:
        if row["sample_id"] in self.sample_ids:
            raise ValueError(
                f"duplicate sample id {row['sample_id']!r} across data.real entries: give "
                "one of them another source_name"
            )
        self.sample_ids.add(row["sample_id"])
        if self.on_row is not None:
            self.on_row()
        size = 4 * len(row["human_map"] or ()) + len(row["question"]) + len(row["cot"] or "")
        position = self.tables["samples"].add(row, size)
        if self._entry is not None and row["split"] == "train":
            self._entry.positions.append(position)
            self._entry.images.append(row["image_id"])

    def reject(self, row: dict[str, Any]) -> None:
        if self.on_row is not None:
            self.on_row()
        if row["reason"].startswith(FILTERED_PREFIX):
            self.n_filtered += 1
        else:
            self.n_invalid += 1
        self.reasons[row["reason"].split(":")[0]] += 1
        self.tables["rejected"].add(row, len(row["record"]))

    # -- entries and the val carve

    def begin_entry(self, carve: ValCarve | None) -> None:
        """Start a reader entry; with ``carve`` its train samples are tracked for val."""
        self._entry = None if carve is None else _EntryTrain(carve)

    def end_entry(self) -> None:
        if self._entry is not None:
            self._val_positions.update(choose_val_positions(self._entry))
        self._entry = None

    # -- counts and files

    @property
    def n_samples(self) -> int:
        return self.tables["samples"].n_rows

    @property
    def n_rejected(self) -> int:
        return self.tables["rejected"].n_rows

    def finish_rejected(self) -> Path:
        """Close and publish ``rejected.parquet`` (also when the stage is about to fail)."""
        table = self.tables["rejected"]
        if table.writer is not None:
            table.close()
            os.replace(table.partial, table.path)
        return table.path

    def finish(self) -> dict[str, Any]:
        """Publish all tables (applying the val carve); returns the summary counts."""
        self.finish_rejected()
        images = self.tables["images"]
        images.close()
        os.replace(images.partial, images.path)
        samples = self.tables["samples"]
        samples.close()
        counts = _rewrite_splits(samples.partial, samples.path, self._val_positions)
        samples.partial.unlink(missing_ok=True)
        return self.summary(counts)

    def abort(self) -> None:
        """Remove every unpublished file (a published rejected.parquet stays)."""
        for table in self.tables.values():
            table.discard()

    def summary(self, counts: dict[str, Counter[str]]) -> dict[str, Any]:
        return {
            "n_images": len(self.image_ids),
            "image_bytes": self.image_bytes,
            "n_samples": self.n_samples,
            "n_rejected": self.n_rejected,
            "n_rejected_invalid": self.n_invalid,
            "n_rejected_filtered": self.n_filtered,
            "samples_by_split_task": dict(sorted(counts["split_task"].items())),
            "samples_by_source_split": dict(sorted(counts["source_split"].items())),
            "samples_by_role_split": dict(sorted(counts["role_split"].items())),
            "rejected_by_reason": dict(self.reasons.most_common()),
        }


def _rewrite_splits(partial: Path, final: Path, val_positions: set[int]) -> dict[str, Counter]:
    """Copy ``partial`` to ``final`` batch by batch, moving ``val_positions`` to val, and
    count samples per split x task, source x split and role x split."""
    counts: dict[str, Counter[str]] = {
        k: Counter() for k in ("split_task", "source_split", "role_split")
    }
    source = pq.ParquetFile(partial)
    tmp = final.with_name(f".{final.name}.rewrite")
    writer = pq.ParquetWriter(tmp, SAMPLES)
    try:
        offset = 0
        for group in range(source.num_row_groups):
            table = source.read_row_group(group)
            splits = table["split"].to_pylist()
            for k in range(len(splits)):
                if offset + k in val_positions:
                    splits[k] = "val"
            offset += len(splits)
            index = table.schema.get_field_index("split")
            table = table.set_column(index, SAMPLES.field("split"), pa.array(splits, pa.string()))
            _count(counts, table)
            writer.write_table(table)
        writer.close()
        os.replace(tmp, final)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return counts


def _count(counts: dict[str, Counter[str]], table: pa.Table) -> None:
    columns = table.select(["split", "task", "source", "roles"]).to_pydict()
    for split, task, source, roles in zip(*columns.values(), strict=True):
        counts["split_task"][f"{split}/{task}"] += 1
        counts["source_split"][f"{source}/{split}"] += 1
        for role in roles:
            counts["role_split"][f"{role}/{split}"] += 1
