"""The decoding tests' tiny models (3 decoder layers, so depth fractions pick distinct layers)
and a left-padded batch of two prompts of different lengths."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from PIL import Image

from tests.tiny_models import FAMILIES, IMAGE_SIZE, SIZE, noise_images  # noqa: F401  (FAMILIES: tests)
from tests.tiny_models import build_tiny as build_shared

# Two prompts of different lengths: the first is left-padded in a batch.
QUESTIONS = ["Is there a star?", "What color is the circle at the top left of the image?"]
DECODING_SIZE = replace(SIZE, text_layers=3)


@pytest.fixture(scope="module", autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only cost (2 shared cores)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def build_tiny() -> Callable:
    """``build_tiny(family, seed=0, attn="sdpa") -> (model, processor, adapter)``, 3 layers."""

    def build(family: str, seed: int = 0, attn: str = "sdpa"):
        return build_shared(family, seed, DECODING_SIZE, attn)

    return build


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return noise_images(2)


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
