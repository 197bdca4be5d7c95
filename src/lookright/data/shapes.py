"""The embedded default dataset: deterministic synthetic "shapes" VQA.

Each image shows 2-4 coloured shapes on a noisy background. Per image the generator emits

* one "What color is the {shape}?" question per object, with the object's box, a short
  answer ``{color}`` and a chain-of-thought target ``<think>It is at the {where}. The
  {shape} {color}.</think>{color}`` that names the shape before the colour;
* POPE-style yes/no existence questions: one positive per present shape and one negative per
  POPE split (random / popular / adversarial sampling of an absent shape);
* one caption listing the objects (CHAIR ground truth);
* a simulated human-attention map for each colour question: a Gaussian blob on the
  referenced object plus low background noise (the stand-in for VQA-HAT).

Layouts: ``grid`` (default) puts each object in its own cell of a ``grid x grid`` lattice of
``image_size / grid``-pixel cells; with 28-px cells every object is exactly one merged
Qwen2.5-VL visual token (2x2 patches of 14 px). ``free`` places objects anywhere without
overlap (harder; see config/README.md).

An optional spurious correlation (``bias``) makes one shape mostly one colour in the
training split; test questions about that shape are tagged ``bias_aligned`` or
``bias_conflicting``.

Every image is generated from its own ``numpy.random.Generator`` seeded by (seed, split,
index), so the output is identical across runs, machines and worker counts.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lookright.data.readers import ReadResult, RowSink
from lookright.data.schema import POPE_SPLITS
from lookright.data.shapes_config import COLORS, SHAPES, BiasConfig, ShapesConfig  # noqa: F401  (re-exported)
from lookright.data.validate import StoredImage

SPLIT_SEED_OFFSET = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: class, colour and normalised box [x1, y1, x2, y2]."""

    shape: str
    color: str
    box: tuple[float, float, float, float]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box_px: tuple[float, ...], rgb) -> None:
    x1, y1, x2, y2 = box_px
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
    if shape == "circle":
        draw.ellipse(box_px, fill=rgb)
    elif shape == "square":
        draw.rectangle(box_px, fill=rgb)
    elif shape == "triangle":
        draw.polygon([(cx, y1), (x2, y2), (x1, y2)], fill=rgb)
    elif shape == "diamond":
        draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=rgb)
    elif shape == "cross":
        t = r / 3
        draw.rectangle((cx - t, y1, cx + t, y2), fill=rgb)
        draw.rectangle((x1, cy - t, x2, cy + t), fill=rgb)
    elif shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=rgb)
    else:  # pragma: no cover - guarded by ShapesConfig
        raise ValueError(f"unknown shape {shape!r}")


def _place_boxes(rng: np.random.Generator, cfg: ShapesConfig, n: int) -> list[tuple[float, ...]]:
    """Pixel boxes for ``n`` objects: one per grid cell, or free non-overlapping placement."""
    size = cfg.image_size
    if cfg.layout == "grid":
        cell = size / cfg.grid
        cells = rng.choice(cfg.grid**2, size=n, replace=False)
        margin = cell * 0.1
        return [
            (
                (c % cfg.grid) * cell + margin,
                (c // cfg.grid) * cell + margin,
                (c % cfg.grid + 1) * cell - margin,
                (c // cfg.grid + 1) * cell - margin,
            )
            for c in cells
        ]
    boxes: list[tuple[float, ...]] = []
    while len(boxes) < n:
        side = rng.uniform(0.18, 0.3) * size
        x1, y1 = rng.uniform(0, size - side, size=2)
        candidate = (x1, y1, x1 + side, y1 + side)
        if all(
            candidate[2] <= b[0]
            or b[2] <= candidate[0]
            or candidate[3] <= b[1]
            or b[3] <= candidate[1]
            for b in boxes
        ):
            boxes.append(candidate)
    return boxes


def _pick_colors(
    rng: np.random.Generator, cfg: ShapesConfig, shapes: list[str], split: str
) -> list[str]:
    colors = list(rng.choice(cfg.colors, size=len(shapes), replace=False))
    bias = cfg.bias
    if split == "train" and bias.fraction > 0 and bias.shape in shapes:
        k = shapes.index(bias.shape)
        if rng.random() < bias.fraction:
            if bias.color in colors:
                colors[colors.index(bias.color)] = colors[k]
            colors[k] = bias.color
        elif colors[k] == bias.color:
            others = [c for c in cfg.colors if c not in colors]
            colors[k] = str(rng.choice(others))
    return [str(c) for c in colors]


def render_image(rng: np.random.Generator, cfg: ShapesConfig, split: str):
    """Draw one image; returns (PIL image, objects)."""
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    shapes = [str(s) for s in rng.choice(cfg.shapes, size=n, replace=False)]
    colors = _pick_colors(rng, cfg, shapes, split)
    size = cfg.image_size
    background = rng.normal(128, cfg.noise_std, size=(size, size, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects = []
    for shape, color, box in zip(shapes, colors, _place_boxes(rng, cfg, n), strict=True):
        _draw_shape(draw, shape, box, COLORS[color])
        objects.append(ShapeObject(shape, color, tuple(float(v) / size for v in box)))
    return image, objects


def simulated_human_map(
    rng: np.random.Generator, box: tuple[float, ...], size: int, noise: float = 0.05
) -> np.ndarray:
    """A human-attention stand-in: an isotropic Gaussian on the box centre plus uniform noise."""
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    cx, cy = (x1 + x2) / 2 * size, (y1 + y2) / 2 * size
    sigma = max((x2 - x1), (y2 - y1)) * size / 2.5
    blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    field_ = blob + noise * rng.random((size, size))
    return (field_ / field_.max()).astype(np.float32)


def cot_target(obj: ShapeObject) -> str:
    """The chain-of-thought target: where the shape is, then ``The {shape} {color}``.

    The thought ends with the base model's own answer ``The {shape} {color}`` (the colour
    token directly after the shape's name, where the base learned to look), and the final
    answer repeats the colour two tokens later. Measured with the default SFT (600 steps):
    this order reached 0.785 held-out accuracy; the colour at the start of the thought
    (position words after it) 0.345, the position first with ``It is {color}`` last 0.11.
    """
    x = "left" if obj.box[0] + obj.box[2] < 1 else "right"
    y = "top" if obj.box[1] + obj.box[3] < 1 else "bottom"
    return f"<think>It is at the {y} {x}. The {obj.shape} {obj.color}.</think>{obj.color}"


@dataclass(frozen=True)
class ThoughtClaims:
    """What a shapes thought claims: ``location`` ("top left", ...), ``shape`` and ``color``
    (each ``None`` when the thought does not say it)."""

    location: str | None
    shape: str | None
    color: str | None


_LOCATION = re.compile(r"\b(top|bottom) (left|right)\b")


def thought_claims(thought: str) -> ThoughtClaims:
    """The claims of a thought written in :func:`cot_target`'s template (or close to it): the
    first "top/bottom left/right", the first shape name and the LAST colour name (the
    template names the colour last, after the shape)."""
    words = re.findall(r"[a-z]+", thought.lower())
    location = _LOCATION.search(thought.lower())
    shapes = [w for w in words if w in SHAPES]
    colors = [w for w in words if w in COLORS]
    return ThoughtClaims(
        location=" ".join(location.groups()) if location else None,
        shape=shapes[0] if shapes else None,
        color=colors[-1] if colors else None,
    )


def caption_for(objects: list[ShapeObject]) -> str:
    parts = [f"a {o.color} {o.shape}" for o in objects]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"There is {body}."


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _pope_negatives(
    rng: np.random.Generator,
    present: list[str],
    cfg: ShapesConfig,
    frequency: Counter,
    cooccurrence: dict[str, Counter],
) -> dict[str, str]:
    """One absent shape per POPE split: random, most frequent (popular), most co-occurring."""
    absent = [s for s in cfg.shapes if s not in present]
    if not absent:
        return {}
    popular = max(absent, key=lambda s: (frequency[s], -cfg.shapes.index(s)))
    co = Counter()
    for s in present:
        co.update(cooccurrence[s])
    adversarial = max(absent, key=lambda s: (co[s], -cfg.shapes.index(s)))
    return {"random": str(rng.choice(absent)), "popular": popular, "adversarial": adversarial}


def _base_statistics(cfg: ShapesConfig) -> tuple[Counter, dict[str, Counter]]:
    """Shape frequencies and co-occurrences, estimated from a fixed sample of training images.

    POPE builds popular/adversarial negatives from the dataset's statistics; in the synthetic
    data they are near-uniform, so this mostly fixes a deterministic tie order.
    """
    frequency: Counter = Counter()
    cooccurrence: dict[str, Counter] = {s: Counter() for s in cfg.shapes}
    rng = np.random.default_rng([cfg.seed, 99])
    for _ in range(200):
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        shapes = [str(s) for s in rng.choice(cfg.shapes, size=n, replace=False)]
        frequency.update(shapes)
        for s in shapes:
            cooccurrence[s].update(t for t in shapes if t != s)
    return frequency, cooccurrence


def _subset(cfg: ShapesConfig, obj: ShapeObject) -> str | None:
    if cfg.bias.fraction <= 0 or obj.shape != cfg.bias.shape:
        return None
    return "bias_aligned" if obj.color == cfg.bias.color else "bias_conflicting"


SHAPES_ROLES = ("sft", "rl", "eval")
"""The synthetic data serves every stage: SFT and GRPO train on its train split, decode
and evaluate read its test split."""


def generate_split(cfg: ShapesConfig, split: str) -> tuple[list[dict], list[dict]]:
    """Images and samples (rows of schema.IMAGES / schema.SAMPLES) of one split."""
    result = ReadResult()
    _generate_split_into(cfg, split, result)
    return result.images, result.samples


def _generate_split_into(cfg: ShapesConfig, split: str, sink: RowSink) -> None:
    count = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[split]
    frequency, cooccurrence = _base_statistics(cfg)
    for index in range(count):
        rng = np.random.default_rng([cfg.seed, SPLIT_SEED_OFFSET[split], index])
        image, objects = render_image(rng, cfg, split)
        stored = StoredImage(_png_bytes(image), "PNG", cfg.image_size, cfg.image_size)
        sink.add_image(stored)
        key = f"shapes-{split}-{index:06d}"
        common = {
            "image_id": stored.image_id,
            "split": split,
            "source": "shapes",
            "roles": list(SHAPES_ROLES),
            "cot": None,
            "pope_split": None,
            "subset": None,
            "human_map": None,
            "human_map_height": None,
            "human_map_width": None,
            "objects": [o.shape for o in objects],
            "object_boxes": [list(o.box) for o in objects],
            "object_vocabulary": "shapes",
        }
        for k, obj in enumerate(objects):
            human = simulated_human_map(rng, obj.box, cfg.human_map_size)
            sink.add_sample(
                {
                    **common,
                    "sample_id": f"{key}-vqa{k}",
                    "task": "vqa",
                    "question": f"What color is the {obj.shape}?",
                    "answer": obj.color,
                    "cot": cot_target(obj),
                    "boxes": [list(obj.box)],
                    "subset": _subset(cfg, obj),
                    "human_map": human.ravel().tolist(),
                    "human_map_height": cfg.human_map_size,
                    "human_map_width": cfg.human_map_size,
                }
            )
        present = [o.shape for o in objects]
        negatives = _pope_negatives(rng, present, cfg, frequency, cooccurrence)
        for pope_split in POPE_SPLITS:
            positive = objects[int(rng.integers(len(objects)))]
            pairs = [("yes", positive.shape, [list(positive.box)])]
            if pope_split in negatives:
                pairs.append(("no", negatives[pope_split], []))
            for label, shape, boxes in pairs:
                sink.add_sample(
                    {
                        **common,
                        "sample_id": f"{key}-pope-{pope_split}-{label}",
                        "task": "pope",
                        "question": f"Is there a {shape} in the image?",
                        "answer": label,
                        "boxes": boxes,
                        "pope_split": pope_split,
                    }
                )
        sink.add_sample(
            {
                **common,
                "sample_id": f"{key}-caption",
                "task": "caption",
                "question": "Describe the image.",
                "answer": caption_for(objects),
                "boxes": [],
            }
        )


def generate_into(cfg: ShapesConfig, sink: RowSink) -> RowSink:
    """All splits (train, val, test) into ``sink``; images are keyed by their PNG's SHA-256."""
    for split in ("train", "val", "test"):
        _generate_split_into(cfg, split, sink)
    return sink


def generate(cfg: ShapesConfig) -> tuple[list[dict], list[dict]]:
    """All splits, in memory: (images, samples)."""
    result = generate_into(cfg, ReadResult())
    return result.images, result.samples
