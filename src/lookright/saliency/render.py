"""PNG overlays of saliency maps (Pillow only, no matplotlib).

The grid map is bilinearly upsampled onto the part of the image its grid covers (the
processor's crop/pad, :func:`lookright.metrics.localisation.upsample_map`),
negative values are clipped, the map is scaled to [0, 1] by its maximum and coloured with a
"jet"-like ramp whose opacity grows with the value, then alpha-blended over the image. Boxes
(normalised ``[x1, y1, x2, y2]``, x by width, y by height) are drawn as rectangles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookright.metrics.localisation import upsample_map
from lookright.models.geometry import ImageView

# (value, R, G, B) stops of a jet-like colour ramp.
_RAMP = np.array(
    [
        (0.00, 0, 0, 128),
        (0.15, 0, 0, 255),
        (0.40, 0, 255, 255),
        (0.60, 255, 255, 0),
        (0.85, 255, 0, 0),
        (1.00, 128, 0, 0),
    ],
    dtype=np.float64,
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] ``(H, W)`` to RGB ``(H, W, 3)`` uint8 with the jet-like ramp."""
    clipped = np.clip(values, 0.0, 1.0)
    channels = [np.interp(clipped, _RAMP[:, 0], _RAMP[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def normalise_map(saliency_map: np.ndarray) -> np.ndarray:
    """Clip negatives and scale to [0, 1] by the maximum (all-zero or non-finite -> zeros)."""
    values = np.nan_to_num(
        np.asarray(saliency_map, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0
    )
    values = np.maximum(values, 0.0)
    top = float(values.max()) if values.size else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def overlay(
    image: Image.Image,
    saliency_map: np.ndarray | None,
    boxes: Sequence[Sequence[float]] | None = None,
    max_alpha: float = 0.6,
    box_color: tuple[int, int, int] = (255, 255, 255),
    view: ImageView | None = None,
) -> Image.Image:
    """The image with the heatmap blended over it and the box(es) drawn; RGB.

    ``view`` places the map's grid on the image (default: over all of it). A missing map
    (``None``) gives the plain image (with boxes), so "no map" still renders.
    """
    base = image.convert("RGB")
    width, height = base.size
    if saliency_map is not None and np.asarray(saliency_map).size:
        values = normalise_map(upsample_map(np.asarray(saliency_map), (width, height), view))
        colours = colorize(values).astype(np.float64)
        alpha = (max_alpha * values)[..., None]
        blended = (1 - alpha) * np.asarray(base, dtype=np.float64) + alpha * colours
        base = Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(base)
    line = max(1, round(min(width, height) / 100))
    for x1, y1, x2, y2 in boxes or []:
        # Clamp to the last pixel so a box touching the right/bottom edge stays visible.
        corners = (
            x1 * width,
            y1 * height,
            min(x2 * width, width - 1),
            min(y2 * height, height - 1),
        )
        draw.rectangle(corners, outline=box_color, width=line)
    return base


def save_overlay(
    path: str | os.PathLike[str],
    image: Image.Image,
    saliency_map: np.ndarray | None,
    boxes: Sequence[Sequence[float]] | None = None,
    view: ImageView | None = None,
) -> Path:
    """Render :func:`overlay` to a PNG file (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay(image, saliency_map, boxes, view=view).save(path, format="PNG")
    return path


def panel(
    image: Image.Image,
    maps: dict[str, np.ndarray | None],
    boxes: Sequence[Sequence[float]] | None = None,
    tile: int = 256,
) -> Image.Image:
    """One row of overlays, one per method (titled), after the plain image: a side-by-side
    comparison of methods on one image."""
    titled = [("image", image.convert("RGB"))]
    titled += [(name, overlay(image, values, boxes)) for name, values in maps.items()]
    scale = tile / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    header = 16
    sheet = Image.new("RGB", (size[0] * len(titled), size[1] + header), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, (name, picture) in enumerate(titled):
        sheet.paste(picture.resize(size, Image.BILINEAR), (column * size[0], header))
        draw.text((column * size[0] + 3, 2), name[: max(4, size[0] // 7)], fill=(0, 0, 0))
    return sheet
