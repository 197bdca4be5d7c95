"""Tiny random models of every family for the saliency tests (built in milliseconds)."""

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
    "Is there a star?",
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
def tokenizers() -> dict:
    return {f: train_tokenizer(TEXTS, get_adapter(f).chat_format, 300) for f in FAMILIES}


@pytest.fixture(scope="session")
def build_tiny(tokenizers) -> Callable:
    """``build_tiny(family, seed=0, size=SIZE) -> (model, processor, adapter)`` in eval mode."""

    def build(family: str, seed: int = 0, size: TinySize = SIZE):
        torch.manual_seed(seed)
        adapter = get_adapter(family)
        model, processor = adapter.build_tiny(tokenizers[family], size, IMAGE_SIZE)
        return model.eval(), processor, adapter

    return build


@pytest.fixture(scope="session")
def noise_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        for _ in range(3)
    ]


def perturb_biases_and_norms(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Random init leaves biases at 0 and norm weights at 1, which hides missing terms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(noise * scale)


@pytest.fixture
def perturb() -> Callable:
    return perturb_biases_and_norms
