"""Parquet storage of a run's saliency maps (one row per sample x method).

Maps are stored flattened (row-major) as ``list<float32>`` with their ``height``/``width``;
per-token maps as one flattened ``(n_tokens, height, width)`` list; ``view`` is the part of the
image the grid covers (``[x0, y0, x1, y1]`` normalised, the processor's crop/pad; null = the
whole image, as in files written before it existed). A sample without a map
("no map") has a null ``map`` and its ``reason``. Files are written atomically
(:func:`lookright.io.atomic_write_table`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lookright.io import SchemaError, atomic_write_table, read_table
from lookright.models.geometry import ImageView
from lookright.saliency.types import SaliencyResult

MAP_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("map", pa.list_(pa.float32())),
        pa.field("reason", pa.string()),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("token_maps", pa.list_(pa.float32())),
        pa.field("token_ids", pa.list_(pa.int32())),
        pa.field("token_positions", pa.list_(pa.int32())),
        pa.field("token_scores", pa.list_(pa.float32())),
        pa.field("prompt_saliency", pa.list_(pa.float32())),
        pa.field("prompt_token_ids", pa.list_(pa.int32())),
        pa.field("image_width", pa.int32()),
        pa.field("image_height", pa.int32()),
        pa.field("question", pa.string()),
        pa.field("completion", pa.string()),
        pa.field("alignment", pa.float64()),
        pa.field("extras", pa.string()),
        pa.field("view", pa.list_(pa.float64())),
    ]
)


def _flat(array: np.ndarray | None) -> list[float] | None:
    return None if array is None else np.asarray(array, dtype=np.float32).reshape(-1).tolist()


def map_row(
    result: SaliencyResult,
    sample_id: str,
    image_size: tuple[int, int] | None = None,
    question: str | None = None,
    completion: str | None = None,
    alignment: float | None = None,
) -> dict[str, Any]:
    """One Parquet row (a dict matching :data:`MAP_SCHEMA`) of one method's result."""
    n_tokens = 0 if result.token_maps is None else int(result.token_maps.shape[0])
    return {
        "sample_id": sample_id,
        "method": result.method,
        "height": int(result.grid[0]),
        "width": int(result.grid[1]),
        "map": _flat(result.response_map),
        "reason": result.reason,
        "n_tokens": n_tokens,
        "token_maps": _flat(result.token_maps),
        "token_ids": [int(t) for t in result.token_ids],
        "token_positions": [int(p) for p in result.token_positions],
        "token_scores": _flat(result.token_scores),
        "prompt_saliency": _flat(result.prompt_saliency),
        "prompt_token_ids": None
        if result.prompt_token_ids is None
        else [int(t) for t in result.prompt_token_ids],
        "image_width": None if image_size is None else int(image_size[0]),
        "image_height": None if image_size is None else int(image_size[1]),
        "question": question,
        "completion": completion,
        "alignment": alignment,
        "extras": json.dumps(result.extras) if result.extras else None,
        "view": None if result.view.is_full else result.view.as_list(),
    }


def maps_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A :data:`MAP_SCHEMA` table from :func:`map_row` dicts."""
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in MAP_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=MAP_SCHEMA)


def write_maps(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Atomically write :func:`map_row` dicts as a Parquet file."""
    return atomic_write_table(maps_table(rows), path)


def read_maps(path: str | os.PathLike[str]) -> pa.Table:
    """Read a maps file, checking it has every column of :data:`MAP_SCHEMA` (a file written
    before ``view`` existed gets a null ``view``: the whole image)."""
    table = read_table(path)
    if "view" not in table.column_names:
        view_type = MAP_SCHEMA.field("view").type
        table = table.append_column("view", pa.nulls(table.num_rows, view_type))
    missing = [name for name in MAP_SCHEMA.names if name not in table.column_names]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; expected {MAP_SCHEMA.names}")
    return table.select(MAP_SCHEMA.names).cast(MAP_SCHEMA)


def result_from_row(row: Mapping[str, Any]) -> SaliencyResult:
    """Rebuild a :class:`SaliencyResult` from a stored row (``table.to_pylist()`` item)."""
    grid = (int(row["height"]), int(row["width"]))

    def array(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        values = row.get(name)
        if values is None:
            return None
        out = np.asarray(values, dtype=np.float32)
        return out if shape is None else out.reshape(shape)

    n_tokens = int(row["n_tokens"])
    return SaliencyResult(
        method=row["method"],
        grid=grid,
        response_map=array("map", grid),
        token_maps=array("token_maps", (n_tokens, *grid)),
        token_ids=list(row.get("token_ids") or []),
        token_positions=list(row.get("token_positions") or []),
        token_scores=array("token_scores"),
        prompt_saliency=array("prompt_saliency"),
        prompt_token_ids=row.get("prompt_token_ids"),
        reason=row.get("reason"),
        extras=json.loads(row["extras"]) if row.get("extras") else {},
        view=ImageView.from_list(row.get("view")),
    )
