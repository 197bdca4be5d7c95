"""The one tiny-model builder of the test suite (random init, built in milliseconds).

``build_tiny(family, seed, size, attn)`` gives ``(model, processor, adapter)`` of a tiny
Qwen2.5-VL, Qwen2-VL or LLaVA with a tokenizer trained on :data:`TEXTS`; tests needing other
sizes pass a :class:`~lookright.models.base.TinySize`. The ``build_tiny`` and
``noise_images`` fixtures (tests/conftest.py) wrap these.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from PIL import Image

from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava")
IMAGE_SIZE = 112
TEXTS = [
    "What color is the circle?",
    "Is there a star in the image?",
    "<think>The circle is at the top left. It is red.</think>red",
    "no yes blue green square triangle",
] * 5
SIZE = TinySize(
    text_hidden=32,
    text_layers=2,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=64,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_intermediate=64,
)


@cache
def tokenizer(family: str):
    return train_tokenizer(TEXTS, get_adapter(family).chat_format, 300)


def build_tiny(
    family: str,
    seed: int = 0,
    size: TinySize = SIZE,
    attn: str = "sdpa",
    image_size: int = IMAGE_SIZE,
):
    """``(model, processor, adapter)`` of a random tiny model in eval mode."""
    torch.manual_seed(seed)
    adapter = get_adapter(family)
    model, processor = adapter.build_tiny(tokenizer(family), size, image_size)
    model.set_attn_implementation(attn)
    return model.eval(), processor, adapter


def noise_images(count: int = 4, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)) -> list:
    """Seeded random RGB images (``size`` = width, height)."""
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(count)
    ]
