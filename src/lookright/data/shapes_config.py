"""The ``data.shapes`` config section: what the synthetic shapes generator draws.

One dataclass for the section (the generator, :mod:`lookright.data.shapes`, and the stage
config both use it); ``__post_init__`` checks the values and names the key. Imports nothing of
lookright, so the config module can use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
    "purple": (140, 40, 180),
    "orange": (245, 130, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")


@dataclass(frozen=True)
class BiasConfig:
    """A spurious shape->colour correlation in the training split (off when fraction is 0)."""

    shape: str = "triangle"
    color: str = "red"
    fraction: float = 0.0


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of the synthetic generator (see config/README.md, key ``data.shapes``)."""

    seed: int = 0
    image_size: int = 112
    grid: int = 4
    layout: str = "grid"
    min_objects: int = 2
    max_objects: int = 4
    n_train: int = 2500
    n_val: int = 200
    n_test: int = 300
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    noise_std: float = 12.0
    human_map_size: int = 28
    bias: BiasConfig = field(default_factory=BiasConfig)

    def __post_init__(self) -> None:
        if self.image_size % 28:
            raise ValueError(
                f"data.shapes.image_size={self.image_size}: must be a multiple of 28 "
                "(Qwen's 14-px patches merged 2x2)"
            )
        if self.layout not in ("grid", "free"):
            raise ValueError(f"data.shapes.layout={self.layout!r}: valid values are 'grid', 'free'")
        if not 1 <= self.min_objects <= self.max_objects <= min(len(self.shapes), self.grid**2):
            raise ValueError(
                f"data.shapes.min_objects/max_objects={self.min_objects}/{self.max_objects}: need "
                f"1 <= min <= max <= min(#shapes={len(self.shapes)}, grid^2={self.grid**2})"
            )
        unknown = set(self.shapes) - set(SHAPES) | set(self.colors) - set(COLORS)
        if unknown:
            raise ValueError(
                f"data.shapes: unknown shape/colour {sorted(unknown)}; valid shapes {list(SHAPES)}, "
                f"colours {list(COLORS)}"
            )
        if not 0.0 <= self.bias.fraction <= 1.0:
            raise ValueError(f"data.shapes.bias.fraction={self.bias.fraction}: must be in [0, 1]")
        if self.bias.fraction > 0 and (
            self.bias.shape not in self.shapes or self.bias.color not in self.colors
        ):  # a misspelt bias would silently leave the data unbiased
            raise ValueError(
                f"data.shapes.bias.shape/color={self.bias.shape!r}/{self.bias.color!r}: must be "
                f"one of the generated shapes {list(self.shapes)} and colours {list(self.colors)}"
            )
