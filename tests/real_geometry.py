"""Real-geometry checkpoints and a small ``prepare_data``-format folder of NON-square images.

``build_checkpoints(folder)`` writes one random-init checkpoint per family with the real
processor geometry, tokenizer conventions and hub file layout
(:mod:`lookright.models.real_geometry`); ``build_data(folder)`` writes ``images.parquet`` /
``samples.parquet`` (the ``prepare_data`` schema) with images of several sizes and aspect
ratios, one coloured rectangle each, its box, a CoT target, POPE and caption prompts and a
human-attention map. Both are deterministic.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookright.data.schema import IMAGES, SAMPLES
from lookright.io import write_rows
from lookright.models.real_geometry import FAMILIES, build_checkpoint

# (width, height): landscape, portrait, 3:2 and 3:4, none of them square
IMAGE_SIZES = ((308, 196), (168, 252), (252, 168), (224, 308))
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 60)}
HUMAN_MAP = 16


def build_checkpoints(folder: Path, dtype: str | None = None) -> dict[str, Path]:
    """``{family: checkpoint folder}`` for every family (hub dtypes unless ``dtype``)."""
    return {f: build_checkpoint(f, Path(folder) / f, dtype=dtype) for f in FAMILIES}


def _image(size: tuple[int, int], box: list[float], color: str, seed: int) -> bytes:
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    x1, y1, x2, y2 = box
    ImageDraw.Draw(image).rectangle(
        (x1 * width, y1 * height, x2 * width - 1, y2 * height - 1), fill=COLORS[color]
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _human_map(box: list[float]) -> list[float]:
    ys, xs = np.mgrid[0:HUMAN_MAP, 0:HUMAN_MAP] + 0.5
    cx, cy = (box[0] + box[2]) / 2 * HUMAN_MAP, (box[1] + box[3]) / 2 * HUMAN_MAP
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2))
    return blob.astype(np.float32).ravel().tolist()


def _box(k: int) -> list[float]:
    """Off-centre boxes, some near the left/right edges (where LLaVA's crop cuts)."""
    boxes = (
        [0.05, 0.2, 0.3, 0.6],
        [0.55, 0.1, 0.9, 0.45],
        [0.3, 0.5, 0.7, 0.9],
        [0.7, 0.3, 0.95, 0.8],
    )
    return boxes[k % len(boxes)]


def build_data(folder: Path, per_split: dict[str, int] | None = None) -> Path:
    """A ``prepare_data`` output folder (see the module docstring)."""
    per_split = per_split or {"train": 8, "val": 4, "test": 4}
    images, samples = [], []
    names = list(COLORS)
    for index, (split, count) in enumerate(per_split.items()):
        for k in range(count):
            image_id = f"{split}-{k}"
            size, box, color = IMAGE_SIZES[k % len(IMAGE_SIZES)], _box(k), names[k % len(names)]
            images.append(
                {
                    "image_id": image_id,
                    "image_bytes": _image(size, box, color, seed=1000 * index + k),
                    "image_format": "PNG",
                    "width": size[0],
                    "height": size[1],
                }
            )
            common = {"image_id": image_id, "split": split, "subset": None, "pope_split": None}
            common |= {"human_map": None, "human_map_height": None, "human_map_width": None}
            common |= {"source": "conformance", "roles": ["sft", "rl", "eval"]}
            common |= {"objects": ["rectangle"], "object_boxes": [box]}
            common |= {"object_vocabulary": "shapes"}
            samples.append(
                {
                    **common,
                    "sample_id": f"{image_id}-vqa",
                    "task": "vqa",
                    "question": "What color is the rectangle?",
                    "answer": color,
                    "cot": f"<think>The rectangle is {color}.</think>{color}",
                    "boxes": [box],
                    "human_map": _human_map(box),
                    "human_map_height": HUMAN_MAP,
                    "human_map_width": HUMAN_MAP,
                }
            )
            if split == "test":
                samples.append(
                    {
                        **common,
                        "sample_id": f"{image_id}-pope",
                        "task": "pope",
                        "question": "Is there a rectangle in the image?",
                        "answer": "yes",
                        "cot": None,
                        "boxes": [box],
                        "pope_split": "random",
                    }
                )
                samples.append(
                    {
                        **common,
                        "sample_id": f"{image_id}-caption",
                        "task": "caption",
                        "question": "Describe the image.",
                        "answer": f"A {color} rectangle.",
                        "cot": None,
                        "boxes": [],
                    }
                )
    folder = Path(folder)
    write_rows(images, IMAGES, folder / "images.parquet")
    write_rows(samples, SAMPLES, folder / "samples.parquet")
    return folder


def boxed_image(size: tuple[int, int], box: list[float]) -> Image.Image:
    """A black image of ``size = (width, height)`` with a white normalised ``box``."""
    width, height = size
    image = Image.new("RGB", size, (0, 0, 0))
    x1, y1, x2, y2 = box
    ImageDraw.Draw(image).rectangle(
        (round(x1 * width), round(y1 * height), round(x2 * width) - 1, round(y2 * height) - 1),
        fill=(255, 255, 255),
    )
    return image


def tokens_seeing_only_the_box(loaded, image: Image.Image) -> np.ndarray:
    """``(h, w)`` bool: the visual tokens all of whose pixels, as the processor made them
    (``pixel_values``, un-normalised), are white: the tokens that see only the box of a
    :func:`boxed_image`. An independent ground truth for the token -> pixel mapping."""
    processor, adapter = loaded.processor, loaded.adapter
    encoded = adapter.encode(processor, [image], ["What is it?"])
    grid = adapter.visual_layouts(encoded.inputs, loaded.model)[0].grid
    pixels = encoded.inputs["pixel_values"].float().numpy()
    if "image_grid_thw" in encoded.inputs:  # Qwen: rows = patches, 2x2 merged groups in order
        patches = pixels.reshape(grid[0] * grid[1], 4, 3, -1)  # (token, patch, channel, t*p*p)
        values = patches * CLIP_STD[None, None, :, None] + CLIP_MEAN[None, None, :, None]
        return values.min(axis=(1, 2, 3)).reshape(grid) > 0.9
    values = pixels[0] * CLIP_STD[:, None, None] + CLIP_MEAN[:, None, None]  # (3, 336, 336)
    patch = values.shape[1] // grid[0]
    cells = values.reshape(3, grid[0], patch, grid[1], patch)
    return cells.min(axis=(0, 2, 4)) > 0.9
