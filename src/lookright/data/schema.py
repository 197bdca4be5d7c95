"""The Parquet tables written by the ``prepare_data`` stage.

Three tables, one file each under the stage's output folder:

``images.parquet`` (``IMAGES``), one row per image
    image_id      unique id (str)
    split         "train" | "val" | "test"
    source        dataset name ("shapes", "saliency-r1-8k", "coco", ...)
    image_png     PNG bytes of the RGB image
    width, height pixel size
    objects       object class names present in the image (CHAIR ground truth; may be empty)
    object_boxes  one normalised [x1, y1, x2, y2] box per entry of ``objects`` (may be empty)

``samples.parquet`` (``SAMPLES``), one row per question/prompt about an image
    sample_id     unique id (str)
    image_id      key into ``images``
    split         copied from the image
    task          "vqa" (short answer), "pope" (yes/no existence) or "caption"
    question      the user prompt (without the image placeholder)
    answer        the short reference answer ("red", "yes", a caption ...)
    cot           the chain-of-thought target ``<think>...</think>answer`` (null when unknown)
    boxes         normalised [x1, y1, x2, y2] boxes of the evidence region (empty = no box)
    pope_split    "random" | "popular" | "adversarial" for POPE questions, else null
    subset        a named evaluation subset ("bias_aligned", "bias_conflicting", ...) or null
    human_map     flattened row-major human-attention map (float32), or null
    human_map_height, human_map_width   its shape (null when no map)

``rejected.parquet`` (``REJECTED``): every input row that was not kept, with why
    source, source_file, source_row, record (the offending record as JSON), reason

Boxes are normalised to [0, 1], x by image WIDTH and y by image HEIGHT, with x1 < x2, y1 < y2.
"""

from __future__ import annotations

import pyarrow as pa

BOX = pa.list_(pa.float32(), 4)

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("image_png", pa.binary(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("objects", pa.list_(pa.string()), nullable=False),
        pa.field("object_boxes", pa.list_(BOX), nullable=False),
    ]
)

SAMPLES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("cot", pa.string()),
        pa.field("boxes", pa.list_(BOX), nullable=False),
        pa.field("pope_split", pa.string()),
        pa.field("subset", pa.string()),
        pa.field("human_map", pa.list_(pa.float32())),
        pa.field("human_map_height", pa.int32()),
        pa.field("human_map_width", pa.int32()),
    ]
)

REJECTED = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64()),
        pa.field("record", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)

SPLITS = ("train", "val", "test")
TASKS = ("vqa", "pope", "caption")
POPE_SPLITS = ("random", "popular", "adversarial")
