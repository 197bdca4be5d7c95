"""POPE: JSON Lines of yes/no object questions on COCO val2014 images (three splits).

See :mod:`lookright.data.readers.common` for the conventions every reader follows.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lookright.data.jsonstream import (
    BadLine,
    iter_json_records,
)
from lookright.data.readers.common import (
    DEFAULT_ROLES,
    RowSink,
    _Collector,
    _resolve_image,
)
from lookright.data.schema import POPE_SPLITS
from lookright.data.validate import (
    InvalidRecord,
    require_fields,
    require_str,
)

SplitSpec = str | Callable[[str], str]


# --------------------------------------------------------------------------- POPE


_POPE_NAME = re.compile(r"pope_(random|popular|adversarial)")


def _pope_files(
    files: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str],
) -> list[tuple[str, Path]]:
    if isinstance(files, Mapping):
        items = [(str(k), Path(v)) for k, v in files.items()]
    else:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        items = []
        for f in files:
            match = _POPE_NAME.search(Path(f).name)
            if match is None:
                raise ValueError(
                    f"{f}: cannot tell the POPE split from the file name "
                    f"(expected coco_pope_{{random,popular,adversarial}}.json); pass a dict"
                )
            items.append((match.group(1), Path(f)))
    for pope_split, _ in items:
        if pope_split not in POPE_SPLITS:
            raise ValueError(f"POPE split {pope_split!r} is not one of {POPE_SPLITS}")
    return items


def read_pope(
    files: Mapping[str, Any] | Sequence[Any] | str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: SplitSpec = "test",
    roles: Iterable[str] = DEFAULT_ROLES["pope"],
    source_name: str = "pope",
    sink: RowSink | None = None,
) -> Any:
    """Read POPE question files (JSON Lines ``{question_id, image, text, label}``).

    ``files``: ``{"random": path, ...}`` or paths named ``coco_pope_{random,popular,
    adversarial}.json`` (a JSON array file is accepted too). Task ``pope``, question = text,
    answer = label lowercased (anything but yes/no is rejected), pope_split from the dict key
    or file name. ``image`` is relative to ``image_root`` (COCO val2014). Sample ids
    ``{source_name}-{pope_split}-{question_id}`` (duplicates rejected). Returns the sink.
    """
    col = _Collector(source_name, split, roles, sink)
    for pope_split, path in _pope_files(files):
        for lineno, record in iter_json_records(path):
            try:
                if isinstance(record, BadLine):
                    raise InvalidRecord(record.reason)
                require_fields(record, ["question_id", "image", "text", "label"])
                question = require_str(record, "text")
                label = require_str(record, "label").lower()
                if label not in ("yes", "no"):
                    raise InvalidRecord(f"label {record['label']!r} is not yes/no")
                sample_id = f"{source_name}-{pope_split}-{record['question_id']}"
                img_path, name = _resolve_image(image_root, record["image"])
                col.check_sample_id(sample_id)
                image_id = col.image(str(img_path), img_path, name)
            except InvalidRecord as err:
                col.reject(path, lineno, record, str(err))
                continue
            col.add_sample(sample_id, image_id, "pope", question, label, pope_split=pope_split)
    return col.sink
