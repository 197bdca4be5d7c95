"""Atomic writes: complete files only, usual permissions, no temporary files left."""

from __future__ import annotations

import os
import stat

import pyarrow as pa
import pytest

from lookright.io import atomic_write_table, atomic_write_text


def test_atomic_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        table_path = atomic_write_table(pa.table({"a": [1, 2]}), tmp_path / "t.parquet")
        text_path = atomic_write_text(tmp_path / "sub" / "x.md", "hello")
    finally:
        os.umask(mask)
    for path in (table_path, text_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert text_path.read_text() == "hello"
    assert sorted(p.name for p in tmp_path.rglob(".*.tmp")) == []


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_table(pa.table({"a": [1]}), tmp_path / "t.parquet")
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        atomic_write_table("not a table", path)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert list(tmp_path.glob(".*.tmp")) == []
