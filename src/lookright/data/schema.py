"""The Parquet tables written by the ``prepare_data`` stage.

Three tables, one file each under the stage's output folder:

``images.parquet`` (``IMAGES``), one row per distinct image
    image_id      the SHA-256 (hex) of ``image_bytes`` for real data, so an image that
                  several datasets use (a COCO image in POPE, COCO captions and VQA-HAT) is
                  stored once; the shapes generator's own unique ids for synthetic data
    image_bytes   the ORIGINAL encoded file (a JPEG stays JPEG); decode and convert to RGB
                  only when feeding a processor (:func:`lookright.train.datasets.decode_image`)
    image_format  the file format Pillow reads it as ("JPEG", "PNG", ...)
    width, height pixel size of the stored image (EXIF orientation not applied)

``samples.parquet`` (``SAMPLES``), one row per question/prompt about an image
    sample_id     unique id (str)
    image_id      key into ``images``
    split         "train" | "val" | "test" (a property of the sample, not of its image)
    source        the dataset it was read from ("shapes", "saliency-r1-8k", "pope", ...)
    roles         which stages use it: "sft" (SFT target), "rl" (GRPO prompt),
                  "eval" (evaluation); set per reader entry (``data.real[k].roles``)
    task          "vqa" (short answer), "pope" (yes/no existence) or "caption"
    question      the user prompt (without the image placeholder)
    answer        the short reference answer ("red", "yes", a caption ...)
    cot           the chain-of-thought target ``<think>...</think>answer`` (null when unknown)
    boxes         normalised [x1, y1, x2, y2] boxes of the evidence region (empty = no box)
    pope_split    "random" | "popular" | "adversarial" for POPE questions, else null
    subset        a named evaluation subset ("bias_aligned", "bias_conflicting", ...) or null
    human_map     flattened row-major human-attention map (float32), or null
    human_map_height, human_map_width   its shape (null when no map)
    objects       object class names present in the image (CHAIR ground truth; may be empty)
    object_boxes  one normalised [x1, y1, x2, y2] box per entry of ``objects``
    object_vocabulary  the class vocabulary ``objects`` are named in ("shapes", "coco"), or
                  null when the sample carries no object annotation; CHAIR follows it

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
        pa.field("image_bytes", pa.binary(), nullable=False),
        pa.field("image_format", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)

SAMPLES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("roles", pa.list_(pa.string()), nullable=False),
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
        pa.field("objects", pa.list_(pa.string()), nullable=False),
        pa.field("object_boxes", pa.list_(BOX), nullable=False),
        pa.field("object_vocabulary", pa.string()),
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
ROLES = ("sft", "rl", "eval")
"""What a sample is for: ``sft`` (an SFT cold-start target, with ``<think>``), ``rl`` (a GRPO
prompt; the saliency rewards need its ``boxes``), ``eval`` (decode / evaluate)."""
VOCABULARIES = ("shapes", "coco")
"""Object vocabularies of ``object_vocabulary`` (and of ``evaluate.chair.vocabulary``)."""
