"""Find and load the tables the report is built from (pyarrow only).

The contract of the producing stages::

    <eval>/<model>/<source>/saliency/   summary.parquet, curves.parquet, maps.parquet,
                                        metrics.json, run.json       (evaluate_saliency)
    <eval>/<model>/<source>/<strategy>/ pope.parquet, chair.parquet, metrics.json, run.json
                                                                     (evaluate_answers)
    <grpo>/<model>/<reward_set>/samples.parquet                      (grpo rollouts)
    <data>/images.parquet, samples.parquet                           (prepare_data)

``source`` is ``sft`` or ``grpo-<reward_set>``. Any piece may be missing (the report then says
"not available"); an evaluation folder with no outputs at all is an error naming the folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lookright.decoding.params import STRATEGIES
from lookright.io import SchemaError

SALIENCY = "saliency"
GRPO_PREFIX = "grpo-"
KEY_COLUMNS = ("model", "source", "reward_set")
ANSWER_FILES = ("pope.parquet", "chair.parquet", "metrics.json")
SALIENCY_FILES = ("summary.parquet", "curves.parquet", "maps.parquet", "metrics.json")
# Columns of maps.parquet the gallery reads (token maps can be large and are skipped).
MAP_COLUMNS = ("sample_id", "method", "height", "width", "map")
MAP_OPTIONAL = (
    "reason",
    "image_width",
    "image_height",
    "question",
    "completion",
    "alignment",
    "view",
)


class ReportInputError(FileNotFoundError):
    """The evaluation folder is missing or holds no evaluation output at all."""


def reward_set_of(source: str) -> str | None:
    """``grpo-acc+fmt`` -> ``acc+fmt``; ``sft`` (or anything else) -> None."""
    return source[len(GRPO_PREFIX) :] if source.startswith(GRPO_PREFIX) else None


def source_order(source: str) -> tuple[int, str]:
    """Sort key: ``sft`` first, then the GRPO branches, then anything else, by name."""
    if source == "sft":
        return (0, "")
    return (1, source) if reward_set_of(source) is not None else (2, source)


def strategy_order(strategy: str) -> tuple[int, str]:
    """Sort key: the decode stage's order of strategies, then unknown ones by name."""
    if strategy in STRATEGIES:
        return (STRATEGIES.index(strategy), "")
    return (len(STRATEGIES), strategy)


@dataclass(frozen=True)
class EvalDir:
    """One evaluation output folder: the saliency evaluation or one decode strategy's."""

    model: str
    source: str
    kind: str  # "saliency" or the strategy name
    path: Path

    @property
    def reward_set(self) -> str | None:
        return reward_set_of(self.source)

    def keys(self) -> dict[str, str | None]:
        return {"model": self.model, "source": self.source, "reward_set": self.reward_set}


@dataclass
class EvalOutputs:
    """Every evaluation folder found under ``root``, in report order."""

    root: Path
    saliency: list[EvalDir]
    answers: list[EvalDir]

    def model_sources(self) -> list[tuple[str, str]]:
        """The (model, source) pairs that have any output, in report order."""
        pairs = {(d.model, d.source) for d in [*self.saliency, *self.answers]}
        return sorted(pairs, key=lambda p: (p[0], source_order(p[1])))


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_any(path: Path, names: tuple[str, ...]) -> bool:
    return any((path / name).is_file() for name in names)


def discover(eval_dir: str | Path) -> EvalOutputs:
    """Every ``<model>/<source>/saliency`` and ``<model>/<source>/<strategy>`` folder under
    ``eval_dir`` (for reading a results folder by hand; the report stage is given its folders
    explicitly, :func:`collect`)."""
    root = Path(eval_dir)
    if not root.is_dir():
        raise ReportInputError(f"{root}: evaluation folder does not exist")
    folders = [
        sub
        for m in _subdirs(root)
        for s in _subdirs(m)
        for sub in _subdirs(s)
        if _has_any(sub, SALIENCY_FILES if sub.name == SALIENCY else ANSWER_FILES)
    ]
    if not folders:
        raise ReportInputError(
            f"{root}: no evaluation outputs found (expected <model>/<source>/saliency/"
            f"summary.parquet or <model>/<source>/<strategy>/metrics.json under it)"
        )
    return collect(folders, root)


def collect(folders: list[str | Path], root: str | Path | None = None) -> EvalOutputs:
    """The evaluation outputs of exactly ``folders`` (each ``.../<model>/<source>/<kind>``,
    kind ``saliency`` or a decoding strategy); a folder with no output is an error."""
    saliency: list[EvalDir] = []
    answers: list[EvalDir] = []
    for folder in map(Path, folders):
        entry = EvalDir(folder.parent.parent.name, folder.parent.name, folder.name, folder)
        files = SALIENCY_FILES if folder.name == SALIENCY else ANSWER_FILES
        if not _has_any(folder, files):
            raise ReportInputError(
                f"{folder}: no evaluation output in it (expected one of {list(files)})"
            )
        (saliency if folder.name == SALIENCY else answers).append(entry)
    if not saliency and not answers:
        raise ReportInputError("no evaluation folder given: nothing to report")
    saliency.sort(key=lambda d: (d.model, source_order(d.source)))
    answers.sort(key=lambda d: (d.model, source_order(d.source), strategy_order(d.kind)))
    first = Path(folders[0])
    return EvalOutputs(Path(root) if root else first.parent.parent.parent, saliency, answers)


def finite_or_none(value: Any) -> float | None:
    """A float for finite numbers (bools excluded), None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (NaN allowed), or None when the file is absent."""
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table | None:
    """The table in ``path`` (optionally only ``columns``), or None when the file is absent."""
    return pq.read_table(path, columns=columns) if path.is_file() else None


def with_keys(table: pa.Table, keys: dict[str, str | None]) -> pa.Table:
    """``table`` with string key columns (model, source, ...) put first."""
    rest = table.drop_columns([k for k in keys if k in table.column_names])
    arrays = [pa.array([value] * len(rest), pa.string()) for value in keys.values()]
    key_table = pa.table(dict(zip(keys, arrays, strict=True)))
    for name in rest.column_names:
        key_table = key_table.append_column(name, rest[name])
    return key_table


def concat(tables: list[pa.Table]) -> pa.Table | None:
    """Tables stacked (missing columns become null), or None when there are none."""
    tables = [t for t in tables if t is not None]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


def load_keyed(dirs: list[EvalDir], filename: str) -> pa.Table | None:
    """``filename`` of every folder in ``dirs``, stacked with model/source/reward_set columns."""
    tables = []
    for d in dirs:
        table = read_parquet(d.path / filename)
        if table is not None:
            tables.append(with_keys(table, d.keys()))
    return concat(tables)


def load_maps(d: EvalDir) -> pa.Table | None:
    """The gallery columns of ``maps.parquet`` in ``d`` (None when absent)."""
    path = d.path / "maps.parquet"
    if not path.is_file():
        return None
    names = pq.read_schema(path).names
    missing = [c for c in MAP_COLUMNS if c not in names]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; expected at least {MAP_COLUMNS}")
    return pq.read_table(path, columns=[*MAP_COLUMNS, *(c for c in MAP_OPTIONAL if c in names)])


@dataclass
class GrpoRun:
    """The rollouts of one GRPO branch (``samples.parquet``)."""

    model: str
    reward_set: str
    samples: pa.Table


def load_grpo(samples: list[str | Path]) -> list[GrpoRun]:
    """The GRPO branches of ``samples`` (each ``.../<model>/<reward_set>/samples.parquet``)."""
    runs = []
    for path in sorted(map(Path, samples)):
        table = pq.read_table(path)
        if "step" not in table.column_names:
            raise SchemaError(f"{path}: no 'step' column")
        runs.append(GrpoRun(path.parent.parent.name, path.parent.name, table))
    return runs


@dataclass
class GalleryImage:
    """The image of one gallery sample and its evidence boxes."""

    png: bytes
    boxes: list[list[float]]


def load_gallery_images(
    data_dir: str | Path | None, sample_ids: list[str]
) -> dict[str, GalleryImage]:
    """``{sample_id: GalleryImage}`` from the data folder (missing data or sample: left out)."""
    if data_dir is None or not sample_ids:
        return {}
    samples_path = Path(data_dir) / "samples.parquet"
    images_path = Path(data_dir) / "images.parquet"
    if not samples_path.is_file() or not images_path.is_file():
        return {}
    samples = pq.read_table(
        samples_path,
        columns=["sample_id", "image_id", "boxes"],
        filters=[("sample_id", "in", sample_ids)],
    ).to_pylist()
    image_ids = sorted({s["image_id"] for s in samples})
    if not image_ids:
        return {}
    images = pq.read_table(
        images_path, columns=["image_id", "image_bytes"], filters=[("image_id", "in", image_ids)]
    ).to_pylist()
    png = {row["image_id"]: row["image_bytes"] for row in images}
    return {
        s["sample_id"]: GalleryImage(png[s["image_id"]], [list(b) for b in s["boxes"] or []])
        for s in samples
        if s["image_id"] in png
    }
