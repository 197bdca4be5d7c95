"""Stage ``prepare_data``: build the images / samples / rejected Parquet tables.

The embedded default generates the synthetic shapes dataset; on clusters ``data.source:
real`` reads the configured real datasets (``data.real``: a list of ``{reader: NAME, ...}``
entries, see :mod:`lookright.data.readers`). Besides the reader's own arguments an entry may
set ``roles`` (which stages use its samples; each reader has a default, see
:data:`~lookright.data.readers.DEFAULT_ROLES`), ``val`` (a fraction or a count of its train
samples moved to a ``val`` split, chosen by image with ``val_seed``, default the global
seed; see :class:`~lookright.data.store.ValCarve`).

Rows stream from the readers to disk in bounded batches (:class:`ParquetSink`). Every input
row that is not kept lands in ``rejected.parquet`` with its reason; the stage fails, after
writing that table (and a copy at ``keep_rejected``, a path outside the stage's outputs that
a failed Snakemake job does not delete), when more than ``data.max_rejected_fraction`` of the
rows were invalid.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from lookright.config import ConfigError, DataSection
from lookright.data import readers
from lookright.data.shapes import generate_into
from lookright.data.store import ParquetSink, ValCarve
from lookright.data.validate import TooManyRejected, check_rejection_rate
from lookright.io import atomic_write_text

SOURCES = ("shapes", "real")
"""Values of ``data.source``: the embedded shapes generator, or the readers of ``data.real``."""
READERS = {
    "saliency_r1": readers.read_saliency_r1,
    "llava_conversations": readers.read_llava_conversations,
    "pope": readers.read_pope,
    "coco": readers.read_coco,
    "vqa_hat": readers.read_vqa_hat,
}
ENTRY_KEYS = ("reader", "val", "val_seed")
"""Keys of a ``data.real`` entry that prepare_data handles; all others go to the reader."""
VQA_FILE_KEYS = ("vqa_questions", "vqa_annotations", "image_template")


def _reader_arguments(k: int, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The reader's keyword arguments of entry ``k`` (VQA v1 files turned into questions)."""
    arguments = {key: value for key, value in entry.items() if key not in ENTRY_KEYS}
    if name == "vqa_hat" and "vqa_questions" in arguments:
        files = {key: arguments.pop(key) for key in VQA_FILE_KEYS if key in arguments}
        template = files.get("image_template", readers.VQA_HAT_VAL_IMAGES)
        arguments["questions"] = readers.vqa_v1_questions(
            files["vqa_questions"],
            files.get("vqa_annotations"),
            question_ids=readers.vqa_hat_question_ids(arguments["maps_dir"]),
            image_template=template,
        )
    elif "image_template" in arguments:
        raise ConfigError(
            f"data.real[{k}].image_template: only a vqa_hat entry reading vqa_questions "
            "takes an image_template"
        )
    return arguments


def read_real_sources(entries: list[Any], sink: ParquetSink, seed: int) -> None:
    """Run the configured readers into ``sink`` (one entry after the other)."""
    if not entries:
        raise ConfigError("data.source is 'real' but data.real lists no reader entries")
    for k, entry in enumerate(entries):
        entry = dict(entry)
        name = entry.get("reader")
        if name not in READERS:
            raise ConfigError(
                f"data.real[{k}].reader={name!r}: valid readers are {sorted(READERS)}"
            )
        what = f"data.real[{k}] ({name})"
        try:
            carve = ValCarve.parse(entry.get("val"), int(entry.get("val_seed", seed)), what)
            arguments = _reader_arguments(k, name, entry)
            sink.begin_entry(carve)
            with tqdm(desc=f"read {what}", unit=" rows", mininterval=2.0) as bar:
                sink.on_row = bar.update
                READERS[name](**arguments, sink=sink)
            sink.on_row = None
            sink.end_entry()
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{what}: {error}") from None


def prepare(
    section: DataSection,
    out_dir: str | Path,
    *,
    seed: int = 0,
    keep_rejected: str | Path | None = None,
) -> dict[str, Any]:
    """Write ``images/samples/rejected.parquet`` and ``summary.json`` under ``out_dir``.

    Returns the summary (row counts per split/task, source and role, rejection counts) that
    the stage logs. Raises :class:`TooManyRejected` naming where the rejected rows are.
    """
    out_dir = Path(out_dir)
    if section.source not in SOURCES:
        valid = ", ".join(repr(s) for s in SOURCES)
        raise ConfigError(f"data.source={section.source!r}: valid values are {valid}")
    sink = ParquetSink(out_dir)
    try:
        if section.source == "shapes":
            generate_into(section.shapes, sink)
        else:
            read_real_sources(section.real, sink, seed)
        _check_rejections(section, sink, out_dir, keep_rejected)
        summary = sink.finish()
    except BaseException:
        sink.abort()
        raise
    if keep_rejected is not None:
        Path(keep_rejected).unlink(missing_ok=True)  # a stale copy from a failed run
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _check_rejections(
    section: DataSection, sink: ParquetSink, out_dir: Path, keep_rejected: str | Path | None
) -> None:
    try:
        check_rejection_rate(sink.n_samples, sink.n_invalid, section.max_rejected_fraction, "data")
    except TooManyRejected as error:
        published = sink.finish_rejected()
        places = [str(published)]
        if keep_rejected is not None:
            keep = Path(keep_rejected)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(published, keep)
            places.insert(0, f"{os.path.abspath(keep)} (kept when the job fails)")
        raise TooManyRejected(
            f"{error} The rejected rows and their reasons are in {' and '.join(places)}.",
            rejected_path=published,
        ) from None
