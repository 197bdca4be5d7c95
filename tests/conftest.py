"""Fixtures shared by the whole suite: tiny models, images, the smoke config, real-geometry
checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def build_tiny():
    """``build_tiny(family, seed=0, size=SIZE, attn="sdpa")`` (:mod:`tests.tiny_models`)."""
    from tests.tiny_models import build_tiny

    return build_tiny


@pytest.fixture(scope="session")
def noise_images() -> list:
    """Four seeded random 112 x 112 RGB images."""
    from tests.tiny_models import noise_images

    return noise_images(4)


@pytest.fixture(scope="session")
def smoke_config() -> dict[str, Any]:
    """config/smoke.yaml as a dict (the tiny model sizes and step counts used by CI)."""
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


@pytest.fixture(scope="session")
def real_geometry_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """``{family: folder}``: random-init checkpoints with the real processor geometry, tokenizer
    conventions and hub file layout of Qwen2.5-VL, Qwen2-VL and LLaVA-1.5 (hub dtypes), built
    once per session (a few seconds; :mod:`lookright.models.real_geometry`)."""
    from tests.real_geometry import build_checkpoints

    return build_checkpoints(tmp_path_factory.mktemp("real-geometry"))


@pytest.fixture(scope="session")
def real_geometry_data(tmp_path_factory) -> Path:
    """A ``prepare_data``-format folder of non-square images of several sizes
    (:func:`tests.real_geometry.build_data`)."""
    from tests.real_geometry import build_data

    return build_data(tmp_path_factory.mktemp("real-geometry-data"))
