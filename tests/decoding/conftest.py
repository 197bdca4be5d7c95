"""Tiny random models of every family and a left-padded batch for the decoding tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
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
# Two prompts of different lengths: the first is left-padded in a batch.
QUESTIONS = ["Is there a star?", "What color is the circle at the top left of the image?"]
SIZE = TinySize(
    text_hidden=32,
    text_layers=3,
    text_heads=4,
    text_kv_heads=2,
    text_intermediate=64,
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_intermediate=64,
)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only cost (2 shared cores)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tokenizers() -> dict:
    return {f: train_tokenizer(TEXTS, get_adapter(f).chat_format, 300) for f in FAMILIES}


@pytest.fixture(scope="session")
def build_tiny(tokenizers) -> Callable:
    """``build_tiny(family, seed=0, attn="sdpa") -> (model, processor, adapter)``, eval mode."""

    def build(family: str, seed: int = 0, attn: str = "sdpa"):
        torch.manual_seed(seed)
        adapter = get_adapter(family)
        model, processor = adapter.build_tiny(tokenizers[family], SIZE, IMAGE_SIZE)
        model.set_attn_implementation(attn)
        return model.eval(), processor, adapter

    return build


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        for _ in range(2)
    ]


@pytest.fixture(scope="session")
def questions() -> list[str]:
    return list(QUESTIONS)


@pytest.fixture(scope="session")
def encode(images) -> Callable:
    """``encode(processor, adapter, rows=(0, 1)) -> BatchFeature`` of the chosen samples."""

    def run(processor, adapter, rows=(0, 1)):
        return adapter.encode(
            processor, [images[r] for r in rows], [QUESTIONS[r] for r in rows]
        ).inputs

    return run
