"""Tiny random models of every family for the saliency tests (built in milliseconds)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from saliency_helpers import FAMILIES, IMAGE_SIZE, SIZE, TEXTS, perturb_biases_and_norms

from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer


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


@pytest.fixture
def perturb() -> Callable:
    return perturb_biases_and_norms
