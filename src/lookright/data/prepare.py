"""Stage ``prepare_data``: build the images / samples / rejected Parquet tables.

The embedded default generates the synthetic shapes dataset; on clusters ``data.source:
real`` reads the configured real datasets (``data.real``: a list of ``{reader: NAME, ...}``
entries whose other keys are the reader's arguments, see :mod:`lookright.data.readers`).
Every input row that is not kept lands in ``rejected.parquet`` with its reason; the stage
fails, after writing that table, when more than ``data.max_rejected_fraction`` of the rows
were invalid.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lookright.config import ConfigError, DataSection
from lookright.data import readers
from lookright.data.readers import ReadResult
from lookright.data.schema import IMAGES, REJECTED, SAMPLES
from lookright.data.shapes import BiasConfig, ShapesConfig, generate
from lookright.data.validate import check_rejection_rate
from lookright.io import write_rows

READERS = {
    "saliency_r1": readers.read_saliency_r1,
    "llava_conversations": readers.read_llava_conversations,
    "pope": readers.read_pope,
    "coco": readers.read_coco,
    "vqa_hat": readers.read_vqa_hat,
}


def shapes_config(section: DataSection) -> ShapesConfig:
    values = asdict(section.shapes)
    values["bias"] = BiasConfig(**values["bias"])
    return ShapesConfig(**values)


def read_real_sources(entries: list[Any]) -> ReadResult:
    """Run the configured readers and concatenate their results."""
    if not entries:
        raise ConfigError("data.source is 'real' but data.real lists no reader entries")
    result = ReadResult([], [], [])
    for k, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.pop("reader", None)
        if name not in READERS:
            raise ConfigError(
                f"data.real[{k}].reader={name!r}: valid readers are {sorted(READERS)}"
            )
        if name == "vqa_hat" and "vqa_questions" in entry:
            maps_dir = entry["maps_dir"]
            entry["questions"] = readers.vqa_v1_questions(
                entry.pop("vqa_questions"),
                entry.pop("vqa_annotations"),
                question_ids=readers.vqa_hat_question_ids(maps_dir),
            )
        try:
            result.extend(READERS[name](**entry))
        except TypeError as error:
            raise ConfigError(f"data.real[{k}] ({name}): {error}") from None
    return result


def prepare(section: DataSection, out_dir: str | Path) -> dict[str, Any]:
    """Write ``images/samples/rejected.parquet`` and ``summary.json`` under ``out_dir``.

    Returns the summary (row counts per split/task, rejection counts) that the stage logs.
    """
    out_dir = Path(out_dir)
    if section.source == "shapes":
        images, samples = generate(shapes_config(section))
        result = ReadResult(images, samples, [])
    elif section.source == "real":
        result = read_real_sources(section.real)
    else:
        raise ConfigError(f"data.source={section.source!r}: valid values are 'shapes', 'real'")
    rejected_path = out_dir / "rejected.parquet"
    write_rows(result.rejected, REJECTED, rejected_path)
    check_rejection_rate(
        len(result.samples),
        result.n_invalid,
        section.max_rejected_fraction,
        "samples",
        rejected_path=rejected_path,
    )
    write_rows(result.images, IMAGES, out_dir / "images.parquet")
    write_rows(result.samples, SAMPLES, out_dir / "samples.parquet")
    summary = summarise(result)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def summarise(result: ReadResult) -> dict[str, Any]:
    by_split_task = Counter(f"{s['split']}/{s['task']}" for s in result.samples)
    reasons = Counter(r["reason"].split(":")[0] for r in result.rejected)
    return {
        "n_images": len(result.images),
        "n_samples": len(result.samples),
        "n_rejected": len(result.rejected),
        "n_rejected_invalid": result.n_invalid,
        "n_rejected_filtered": result.n_filtered,
        "samples_by_split_task": dict(sorted(by_split_task.items())),
        "rejected_by_reason": dict(reasons.most_common()),
    }
