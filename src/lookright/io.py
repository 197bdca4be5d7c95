"""Parquet input/output: atomic writes and schema-checked reads."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


class SchemaError(ValueError):
    """A table does not match the schema its consumer expects."""


def atomic_write_table(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to ``path`` via a temporary file in the same folder and a rename.

    A reader never sees a half-written file: either the old file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def rows_to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Build a table from dict rows, keeping only (and requiring) the schema's columns."""
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def write_rows(
    rows: Iterable[Mapping[str, Any]], schema: pa.Schema, path: str | os.PathLike[str]
) -> Path:
    """Atomically write dict rows as a Parquet file with ``schema``."""
    return atomic_write_table(rows_to_table(rows, schema), path)


def read_table(path: str | os.PathLike[str], schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet file; with ``schema``, fail clearly when a required column is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Parquet file")
    table = pq.read_table(path)
    if schema is not None:
        missing = [name for name in schema.names if name not in table.column_names]
        if missing:
            raise SchemaError(
                f"{path}: missing column(s) {missing}; expected columns {schema.names}"
            )
        table = table.select(schema.names).cast(schema)
    return table
