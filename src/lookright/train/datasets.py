"""Trainer datasets built straight from the ``prepare_data`` Parquet tables.

Images stay encoded bytes in Arrow (the original JPEG/PNG files, see
:mod:`lookright.data.schema`) and are decoded lazily, as RGB, by ``datasets.Image`` when a
batch is collated: building a ``datasets.Dataset`` from thousands of PIL images is slow (~47 s
for 8,000), from Arrow bytes it is instant. Only the images of the selected samples are read
from ``images.parquet``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from lookright.data.schema import IMAGES, ROLES, SAMPLES
from lookright.io import SchemaError, read_table

IMAGE_COLUMNS = ("image_bytes", "width", "height")
"""Columns of ``images.parquet`` that :func:`join_images` appends to each sample."""


def load_samples(
    data_dir: str | Path,
    split: str,
    tasks: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
) -> pa.Table:
    """Samples of one split (optionally of some tasks, and with one of ``roles``), joined
    with their image bytes, sorted by ``sample_id``."""
    data_dir = Path(data_dir)
    samples = select_samples(read_table(data_dir / "samples.parquet", SAMPLES), split, tasks, roles)
    return join_images(samples, data_dir / "images.parquet").sort_by("sample_id")


STAGE_ROLE = {
    "pretrain": "sft",
    "sft": "sft",
    "grpo": "rl",
    "decode": "eval",
    "evaluate": "eval",
}
"""The role (``samples.roles``) whose rows each stage reads: SFT (and the tiny base's
pretraining) the cold-start targets, GRPO the prompts with boxes, decode and evaluate the
evaluation rows. Which rows have which role is set per reader entry (``data.real[k].roles``)."""


def load_subsample(
    data_dir: str | Path,
    split: str,
    tasks: Iterable[str] | None,
    roles: Iterable[str] | None,
    n: int | None,
    seed: int,
) -> pa.Table:
    """Like :func:`load_samples`, then at most ``n`` rows chosen by
    :func:`lookright.data.subsample.stratified_subsample` (seeded, stratified by task,
    source, POPE split x label and subset); only their images are read."""
    from lookright.data.subsample import stratified_subsample

    data_dir = Path(data_dir)
    samples = select_samples(read_table(data_dir / "samples.parquet", SAMPLES), split, tasks, roles)
    chosen = stratified_subsample(samples, n, seed)
    return join_images(chosen, data_dir / "images.parquet")


def count_samples(
    data_dir: str | Path,
    split: str,
    tasks: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
) -> int:
    """How many samples :func:`load_samples` would return (no image is read)."""
    samples = read_table(Path(data_dir) / "samples.parquet", SAMPLES)
    return select_samples(samples, split, tasks, roles).num_rows


def select_samples(
    samples: pa.Table,
    split: str,
    tasks: Iterable[str] | None = None,
    roles: Iterable[str] | None = None,
) -> pa.Table:
    """The rows of ``samples`` in ``split``, of ``tasks`` and having any of ``roles``."""
    samples = samples.filter(pc.equal(samples["split"], split))
    tasks = list(tasks or ())
    if tasks:
        samples = samples.filter(pc.is_in(samples["task"], pa.array(tasks)))
    roles = list(roles or ())
    if roles:
        unknown = sorted(set(roles) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}; valid roles are {list(ROLES)}")
        keep = [any(r in roles for r in row) for row in samples["roles"].to_pylist()]
        samples = samples.filter(pa.array(keep, pa.bool_()))
    return samples


def join_images(samples: pa.Table, images: str | Path | pa.Table) -> pa.Table:
    """Append the image columns (``IMAGE_COLUMNS``) to each sample.

    ``images``: the ``images.parquet`` path (only the rows the samples use are read) or a
    table. Acero's join cannot carry nested lists, hence the explicit take.
    """
    wanted = sorted(set(samples["image_id"].to_pylist()))
    if not isinstance(images, pa.Table):
        images = _read_images(Path(images), wanted)
    row_of = {image_id: k for k, image_id in enumerate(images["image_id"].to_pylist())}
    missing = [i for i in wanted if i not in row_of]
    if missing:
        raise KeyError(f"samples reference image_id(s) not in images.parquet: {missing[:5]}")
    rows = [row_of[i] for i in samples["image_id"].to_pylist()]
    taken = images.take(pa.array(rows, type=pa.int64()))
    for name in IMAGE_COLUMNS:
        samples = samples.append_column(name, taken[name])
    return samples


def _read_images(path: Path, image_ids: list[str]) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Parquet file")
    names = pq.read_schema(path).names
    missing = [n for n in IMAGES.names if n not in names]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; expected columns {IMAGES.names}")
    columns = ["image_id", *IMAGE_COLUMNS]
    if not image_ids:
        return IMAGES.empty_table().select(columns)
    table = pq.read_table(path, columns=columns, filters=[("image_id", "in", image_ids)])
    return table.cast(pa.schema([IMAGES.field(n) for n in columns]))


def decode_image(data: bytes) -> Image.Image:
    """An image of ``images.parquet`` (any format Pillow reads), converted to RGB."""
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def rgb_image_feature():
    """The ``datasets`` feature of an image column: decoded lazily and converted to RGB (the
    stored files may be CMYK, palette or grayscale)."""
    import datasets

    return datasets.Image(mode="RGB")


def conversational_dataset(table: pa.Table, completion_of: Callable[[dict], str]) -> Any:
    """A TRL prompt-completion conversational dataset with lazily decoded images.

    ``completion_of(row)`` gives the assistant's target text for a sample row.
    """
    import datasets

    rows = table.select(["sample_id", "question", "answer", "cot", "task"]).to_pylist()
    prompts = [
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r["question"]}]}]
        for r in rows
    ]
    completions = [
        [{"role": "assistant", "content": [{"type": "text", "text": completion_of(r)}]}]
        for r in rows
    ]
    images = [[{"bytes": b, "path": None}] for b in table["image_bytes"].to_pylist()]
    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "images": datasets.Sequence(rgb_image_feature()),
            "prompt": [
                {
                    "role": datasets.Value("string"),
                    "content": [
                        {"type": datasets.Value("string"), "text": datasets.Value("string")}
                    ],
                }
            ],
            "completion": [
                {
                    "role": datasets.Value("string"),
                    "content": [
                        {"type": datasets.Value("string"), "text": datasets.Value("string")}
                    ],
                }
            ],
        }
    )
    return datasets.Dataset.from_dict(
        {
            "sample_id": [r["sample_id"] for r in rows],
            "images": images,
            "prompt": prompts,
            "completion": completions,
        },
        features=features,
    )
