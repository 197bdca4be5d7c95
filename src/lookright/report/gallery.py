"""The saliency gallery: the same samples across sources and methods, overlaid on the image.

One gallery per model. Rows are the gallery samples: those with maps in the most sources,
in order of first appearance (``report.gallery_samples`` of them). Columns are the
(source, method) pairs with maps, sources in report order, methods in ``report.gallery_methods``
order (default: every method, in order of first appearance). Each cell is the heatmap over the
image with the evidence box(es) drawn (:func:`lookright.saliency.render.overlay`); a missing
map renders the plain image and its reason; a sample whose image is not in the data folder is
drawn on grey. Each gallery is also written as one PNG sheet (``gallery__<model>.png``).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont, ImageOps

from lookright.models.geometry import ImageView
from lookright.report.collect import (
    EvalOutputs,
    GalleryImage,
    load_gallery_images,
    load_maps,
    source_order,
)
from lookright.report.config import ReportSection
from lookright.report.files import atomic_write_bytes, safe_name
from lookright.saliency.render import overlay

THUMB = 160  # px, the side of a cell image
HEADER = 36  # px, column labels of the sheet
ROW_LABEL = 170  # px, row labels of the sheet
CAPTION = 16  # px, under each tile of the sheet
PLACEHOLDER_SIZE = 112  # px, grey stand-in image when neither image nor size is known


@dataclass
class Cell:
    """One overlay: PNG bytes of the thumbnail and a short caption."""

    png: bytes
    caption: str


@dataclass
class GalleryRow:
    sample_id: str
    question: str | None
    cells: list[Cell | None]  # one per column; None when the source lacks the map row


@dataclass
class Gallery:
    model: str
    columns: list[tuple[str, str]]  # (source, method)
    rows: list[GalleryRow]
    path: Path | None = None  # the PNG sheet
    notes: list[str] = field(default_factory=list)


def choose_samples(maps: dict[str, pa.Table], n: int) -> list[str]:
    """Up to ``n`` sample ids: most sources first, then order of first appearance."""
    first: dict[str, int] = {}
    coverage: dict[str, int] = {}
    for table in maps.values():
        for sample_id in dict.fromkeys(table["sample_id"].to_pylist()):
            first.setdefault(sample_id, len(first))
            coverage[sample_id] = coverage.get(sample_id, 0) + 1
    return sorted(first, key=lambda s: (-coverage[s], first[s]))[:n]


def choose_columns(
    maps: dict[str, pa.Table], wanted: Sequence[str] | None
) -> list[tuple[str, str]]:
    """(source, method) pairs that have maps, sources in report order."""
    found = list(dict.fromkeys(m for t in maps.values() for m in t["method"].to_pylist()))
    methods = [m for m in wanted if m in found] if wanted is not None else found
    columns = []
    for source in sorted(maps, key=source_order):
        present = set(maps[source]["method"].to_pylist())
        columns += [(source, m) for m in methods if m in present]
    return columns


def _map_array(row: dict[str, Any]) -> np.ndarray | None:
    values = row.get("map")
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float32)
    if array.size != row["height"] * row["width"]:
        return None
    return array.reshape(row["height"], row["width"])


def _base_image(row: dict[str, Any], image: GalleryImage | None) -> Image.Image:
    if image is not None:
        return Image.open(io.BytesIO(image.png)).convert("RGB")
    size = (
        row.get("image_width") or PLACEHOLDER_SIZE,
        row.get("image_height") or PLACEHOLDER_SIZE,
    )
    return Image.new("RGB", size, (128, 128, 128))


def render_cell(row: dict[str, Any], image: GalleryImage | None) -> tuple[Image.Image, str]:
    """The square thumbnail of one map row over its image, and its caption."""
    saliency_map = _map_array(row)
    picture = overlay(
        _base_image(row, image),
        saliency_map,
        image.boxes if image else None,
        view=ImageView.from_list(row.get("view")),
    )
    if saliency_map is None:
        caption = f"no map: {row.get('reason') or 'invalid map'}"
    elif row.get("alignment") is not None:
        caption = f"alignment {row['alignment']:.2f}"
    else:
        caption = ""
    if image is None:
        caption = f"{caption} (image not found)".strip()
    return ImageOps.pad(picture, (THUMB, THUMB), color=(255, 255, 255)), caption


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def build_gallery(
    model: str,
    maps: dict[str, pa.Table],
    images: dict[str, GalleryImage],
    section: ReportSection,
) -> tuple[Gallery, list[Image.Image | None]]:
    """The gallery of one model, and its cell images in row-major order (for the sheet)."""
    samples = choose_samples(maps, section.gallery_samples)
    columns = choose_columns(maps, section.gallery_methods)
    by_key = {
        (source, row["sample_id"], row["method"]): row
        for source, table in maps.items()
        for row in table.to_pylist()
    }
    rows, pictures = [], []
    for sample_id in samples:
        cells: list[Cell | None] = []
        question = None
        for source, method in columns:
            row = by_key.get((source, sample_id, method))
            if row is None:
                cells.append(None)
                pictures.append(None)
                continue
            question = question or row.get("question")
            picture, caption = render_cell(row, images.get(sample_id))
            cells.append(Cell(_png(picture), caption))
            pictures.append(picture)
        rows.append(GalleryRow(sample_id, question, cells))
    gallery = Gallery(model, columns, rows)
    if section.gallery_methods is not None:
        found = {m for _, m in columns}
        missing = [m for m in section.gallery_methods if m not in found]
        if missing:
            gallery.notes.append(f"no maps of method(s) {missing} for model {model}")
    return gallery, pictures


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sheet(gallery: Gallery, pictures: list[Image.Image | None]) -> Image.Image:
    """All cells of ``gallery`` on one white sheet with column and row labels."""
    n_cols, n_rows = len(gallery.columns), len(gallery.rows)
    width = ROW_LABEL + n_cols * (THUMB + 4)
    height = HEADER + n_rows * (THUMB + CAPTION + 4)
    canvas = Image.new("RGB", (max(width, 1), max(height, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for j, (source, method) in enumerate(gallery.columns):
        x = ROW_LABEL + j * (THUMB + 4)
        draw.text((x, 2), _fit(source, 26), fill=(0, 0, 0), font=font)
        draw.text((x, 18), _fit(method, 26), fill=(60, 60, 60), font=font)
    for i, row in enumerate(gallery.rows):
        y = HEADER + i * (THUMB + CAPTION + 4)
        draw.text((4, y + THUMB // 2), _fit(row.sample_id, 26), fill=(0, 0, 0), font=font)
        for j, cell in enumerate(row.cells):
            x = ROW_LABEL + j * (THUMB + 4)
            picture = pictures[i * n_cols + j]
            if picture is None or cell is None:
                draw.text((x + 4, y + THUMB // 2), "no row", fill=(150, 0, 0), font=font)
                continue
            canvas.paste(picture, (x, y))
            draw.text((x, y + THUMB + 1), _fit(cell.caption, 28), fill=(40, 40, 40), font=font)
    return canvas


def build_galleries(
    outputs: EvalOutputs,
    data_dir: str | Path | None,
    section: ReportSection,
    out_dir: str | Path,
) -> list[Gallery]:
    """One gallery per model with maps; each sheet written to ``out_dir``."""
    if section.gallery_samples == 0:
        return []
    by_model: dict[str, dict[str, pa.Table]] = {}
    for d in outputs.saliency:
        table = load_maps(d)
        if table is not None and len(table):
            by_model.setdefault(d.model, {})[d.source] = table
    galleries = []
    for model, maps in by_model.items():
        samples = choose_samples(maps, section.gallery_samples)
        images = load_gallery_images(data_dir, samples)
        gallery, pictures = build_gallery(model, maps, images, section)
        if not gallery.columns or not gallery.rows:
            continue
        path = Path(out_dir) / f"{safe_name('gallery', model)}.png"
        gallery.path = atomic_write_bytes(path, _png(sheet(gallery, pictures)))
        galleries.append(gallery)
    return galleries
