"""The reward tests' tiny Qwen2.5-VL and images (the suite's shared builder)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.tiny_models import build_tiny, noise_images


@pytest.fixture(scope="session")
def tiny():
    """``(model, processor, adapter)``: a random tiny Qwen2.5-VL in eval mode."""
    return build_tiny("qwen2_5_vl")


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    return noise_images(4)
