"""Tiny random Qwen2.5-VL models and images for the reward tests (built in milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer

IMAGE_SIZE = 112
TEXTS = [
    "What color is the circle?",
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


@pytest.fixture(scope="session")
def tiny():
    """``(model, processor, adapter)``: a random tiny Qwen2.5-VL in eval mode."""
    adapter = get_adapter("qwen2_5_vl")
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 300)
    torch.manual_seed(0)
    model, processor = adapter.build_tiny(tokenizer, SIZE, IMAGE_SIZE)
    return model.eval(), processor, adapter


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        for _ in range(4)
    ]
