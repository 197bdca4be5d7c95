"""Constants and helpers of the saliency tests (fixtures are in this folder's conftest.py)."""

from __future__ import annotations

import torch

from tests.tiny_models import FAMILIES, IMAGE_SIZE, SIZE, TEXTS  # noqa: F401  (re-exported)


def perturb_biases_and_norms(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Random init leaves biases at 0 and norm weights at 1, which hides missing terms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(noise * scale)
