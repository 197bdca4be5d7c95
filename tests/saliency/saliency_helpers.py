"""Constants and helpers of the saliency tests (fixtures are in this folder's conftest.py)."""

from __future__ import annotations

import torch

from lookright.models.base import TinySize

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


def perturb_biases_and_norms(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Random init leaves biases at 0 and norm weights at 1, which hides missing terms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(noise * scale)
