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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike[str], write) -> Path:
    """``write(tmp)`` into a temporary file of the target's folder, then rename it over.

    A reader never sees a half-written file: either the old file or the complete new one. The
    file gets the usual permissions (0666 minus the umask), not the temporary file's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_table(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write ``table`` to ``path`` as Parquet, atomically (:func:`_atomic_write`)."""
    return _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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


def parquet_digest(path: str | os.PathLike[str]) -> str:
    """A short content fingerprint of a Parquet file, read from its footer only.

    The footer holds the schema, row counts and every column chunk's size, offset and
    statistics, so it changes with the content; reading it costs the same for 1 KB or 50 GB.
    """
    import hashlib

    with open(path, "rb") as handle:
        handle.seek(-8, os.SEEK_END)
        tail = handle.read(8)
        if tail[4:] != b"PAR1":
            raise SchemaError(f"{path}: not a Parquet file (no PAR1 footer)")
        length = int.from_bytes(tail[:4], "little")
        handle.seek(-8 - length, os.SEEK_END)
        footer = handle.read(length)
    return hashlib.sha256(footer).hexdigest()[:12]
