"""The Vision-R1 cold start: LLaVA-CoT and Mulberry conversation files.

See :mod:`lookright.data.readers.common` for the conventions every reader follows.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lookright.data.jsonstream import (
    check_file,
    iter_json_array,
)
from lookright.data.readers.common import (
    DEFAULT_ROLES,
    RowSink,
    _Collector,
    _resolve_image,
    split_think,
)
from lookright.data.validate import (
    InvalidRecord,
    require_fields,
)

SplitSpec = str | Callable[[str], str]


# --------------------------------------------------------------------------- LLaVA / Mulberry


_HUMAN = ("human", "user")
_GPT = ("gpt", "assistant")


def _first_pair(conversations: Any) -> tuple[str, str]:
    """The first human/user turn and the first gpt/assistant turn after it (later turns are
    ignored)."""
    if not isinstance(conversations, list):
        raise InvalidRecord(
            f"field 'conversations' is a {type(conversations).__name__}, expected a list"
        )
    human = None
    for turn in conversations:
        if not isinstance(turn, Mapping):
            raise InvalidRecord("a turn of 'conversations' is not an object")
        role = str(turn.get("from", "")).lower()
        if human is None and role in _HUMAN:
            human = turn.get("value")
        elif human is not None and role in _GPT:
            gpt = turn.get("value")
            if not isinstance(human, str) or not isinstance(gpt, str):
                raise InvalidRecord("a turn of 'conversations' has no string 'value'")
            return human, gpt
    raise InvalidRecord("no human turn followed by a gpt turn in 'conversations'")


def _conversation_image(record: Any) -> Any:
    """The one image path of a LLaVA-CoT (``image``) or Mulberry (``images: [...]``) record."""
    if not isinstance(record, Mapping):
        raise InvalidRecord(f"record is a {type(record).__name__}, expected a JSON object")
    if record.get("image") is not None:
        image = record["image"]
        if isinstance(image, list):
            raise InvalidRecord("field 'image' is a list; multi-image records not supported")
        return image
    images = record.get("images")
    if images is None:
        raise InvalidRecord("missing field 'image' (LLaVA-CoT) or 'images' (Mulberry)")
    if not isinstance(images, list) or len(images) != 1:
        count = len(images) if isinstance(images, list) else type(images).__name__
        raise InvalidRecord(f"field 'images' holds {count} entries; exactly 1 is supported")
    return images[0]


def read_llava_conversations(
    json_path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    *,
    split: SplitSpec = "train",
    roles: Iterable[str] = DEFAULT_ROLES["llava_conversations"],
    source_name: str = "sft-cold-start",
    sink: RowSink | None = None,
) -> Any:
    """Read a conversation JSON list: both files of the Vision-R1 cold start.

    LLaVA-CoT records ``{"id", "image": relative path, "conversations": [{"from": "human",
    "value": "<image>\\n..."}, {"from": "gpt", "value": "<think>...</think>..."}]}`` and
    Mulberry records ``{"images": [relative path], "conversations": [{"from": "user", ...},
    {"from": "assistant", ...}]}``. Only the FIRST human/user turn and the first
    gpt/assistant turn after it are used (later turns are ignored); a record without such a
    pair is rejected, as is one with several images. question = the human value without
    ``<image>`` placeholders, stripped; answer/cot from :func:`split_think` on the reply
    (cot = the reply when it has think tags, else null). Task ``vqa``, no boxes. Sample ids
    ``{source_name}-{id}``, or ``{source_name}-{file name without extension}-{index:06d}``
    (0-based record index) for records without ``id``. Returns the sink.
    """
    path = check_file(json_path)
    col = _Collector(source_name, split, roles, sink)
    for index, record in enumerate(iter_json_array(path)):
        try:
            rel = _conversation_image(record)
            require_fields(record, ["conversations"])
            human, gpt = _first_pair(record["conversations"])
            question = human.replace("<image>", "").strip()
            if not question:
                raise InvalidRecord("empty question after removing '<image>'")
            answer, cot = split_think(gpt, "gpt reply")
            rid = record.get("id")
            key = rid if rid is not None else f"{path.stem}-{index:06d}"
            sample_id = f"{source_name}-{key}"
            img_path, name = _resolve_image(image_root, rel)
            col.check_sample_id(sample_id)
            image_id = col.image(str(img_path), img_path, name)
        except InvalidRecord as err:
            col.reject(path, index, record, str(err))
            continue
        col.add_sample(sample_id, image_id, "vqa", question, answer, cot=cot)
    return col.sink
