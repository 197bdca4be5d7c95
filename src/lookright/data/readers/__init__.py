"""Readers of the real dataset formats, one module per format (docs/data-formats.md).

:mod:`.saliency_r1` (saliency-r1-8k), :mod:`.llava` (the Vision-R1 cold start: LLaVA-CoT and
Mulberry files), :mod:`.pope`, :mod:`.coco` (captions and instances), :mod:`.vqa_hat`; what they
share (sinks, splits, the think-tag text, image collection, roles) is :mod:`.common`.
"""

from __future__ import annotations

from lookright.data.readers.coco import read_coco
from lookright.data.readers.common import (
    COCO_CAPTION_QUESTION,
    DEFAULT_ROLES,
    FILTERED_PREFIX,
    VQA_HAT_VAL_IMAGES,
    ReadResult,
    RowSink,
    check_roles,
    hashed_split,
    split_think,
)
from lookright.data.readers.llava import read_llava_conversations
from lookright.data.readers.pope import read_pope
from lookright.data.readers.saliency_r1 import read_saliency_r1, reference_holdout
from lookright.data.readers.vqa_hat import (
    load_attention_map,
    read_vqa_hat,
    vqa_hat_question_ids,
    vqa_v1_questions,
)

__all__ = [
    "COCO_CAPTION_QUESTION",
    "DEFAULT_ROLES",
    "FILTERED_PREFIX",
    "VQA_HAT_VAL_IMAGES",
    "ReadResult",
    "RowSink",
    "check_roles",
    "hashed_split",
    "load_attention_map",
    "read_coco",
    "read_llava_conversations",
    "read_pope",
    "read_saliency_r1",
    "read_vqa_hat",
    "reference_holdout",
    "split_think",
    "vqa_hat_question_ids",
    "vqa_v1_questions",
]
