"""docs/api.md runs: every Python block, in order, in one namespace, on a tiny checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.tiny_models import build_tiny

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model, processor, _ = build_tiny("qwen2_5_vl")
    folder = tmp_path_factory.mktemp("checkpoint")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_every_example_of_the_api_page_runs(checkpoint, tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 140, 3), np.uint8))
    namespace = {"CHECKPOINT": str(checkpoint), "IMAGE": image}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"docs/api.md block {number} failed:\n{block}") from error
    assert (tmp_path / "overlay.png").is_file() and (tmp_path / "panel.png").is_file()
    assert set(namespace["explanation"].maps) == {
        "logit_decomposition", "cot_bottleneck", "attention_gradient", "glimpse"
    }  # fmt: skip
    assert namespace["sequences"].shape[0] == 1
