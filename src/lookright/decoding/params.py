"""Parameters of the decoding strategies, validated once with errors that name the parameter.

SGRS and LocoRE follow "Hallucination Begins Where Saliency Drops" (LVLMs-Saliency, ICLR
2026, arXiv 2601.20279; docs/methods.md#sgrs, #locore). Target layers are given as fractions of the
decoder depth, so one setting serves every model size: fraction ``f`` of a model with ``L``
decoder layers is layer ``min(L - 1, floor(f * L))`` (0-based). The SGRS default
``(0.1875, 0.21875, 0.25)`` gives the reference's layers ``[6, 7, 8]`` on LLaVA-1.5-7B (L = 32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from lookright.config import ConfigError

STRATEGIES: tuple[str, ...] = ("greedy", "beam", "sample", "locore", "sgrs", "sgrs+locore")
SEEDED_STRATEGIES: tuple[str, ...] = ("sample", "sgrs", "sgrs+locore")
"""The strategies that sample (top-K), so that their output depends on the seed."""

# LocoRE's beta per family (the paper: 0.15 for LLaVA-1.5, 0.20 for Qwen2-VL; Qwen2.5-VL
# takes Qwen2-VL's value).
FAMILY_BETA: dict[str, float] = {"llava": 0.15, "qwen2_vl": 0.20, "qwen2_5_vl": 0.20}
DEFAULT_BETA = 0.15

REFERENCE_SGRS_LAYERS: tuple[float, ...] = (0.1875, 0.21875, 0.25)


class DecodingParameterError(ConfigError):
    """A decoding parameter is out of its valid range (the message names both)."""


def _require(ok: bool, name: str, valid: str, value: Any) -> None:
    if not ok:
        raise DecodingParameterError(f"{name} must be {valid}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_fractions(name: str, layers: Sequence[float] | None, allow_none: bool) -> None:
    if layers is None:
        _require(allow_none, name, "a non-empty list of depth fractions in [0, 1]", layers)
        return
    _require(
        isinstance(layers, Sequence) and not isinstance(layers, str) and len(layers) > 0,
        name,
        "a non-empty list of depth fractions in [0, 1]",
        layers,
    )
    for value in layers:
        _require(
            _is_number(value) and 0.0 <= value <= 1.0,
            name,
            "a list of depth fractions in [0, 1] (layer = floor(f * n_layers))",
            list(layers),
        )


def layer_indices(fractions: Sequence[float] | None, n_layers: int) -> list[int]:
    """Sorted distinct 0-based layer indices of depth ``fractions`` (None = every layer)."""
    if fractions is None:
        return list(range(n_layers))
    return sorted({min(n_layers - 1, math.floor(float(f) * n_layers)) for f in fractions})


@dataclass(frozen=True)
class SgrsParams:
    """Saliency-guided rejection sampling (arXiv 2601.20279; docs/methods.md#sgrs).

    top_k: K candidates per step (>= 1). max_draws: R draws at most (>= 1). alpha: threshold
    factor in [0, 1]; tau = alpha * mean saliency of the last ``history`` accepted tokens of
    the sequence (tau = 0 without history). history: W (>= 1). layers: target layers as depth
    fractions (default: the reference's [6, 7, 8] of 32).
    """

    top_k: int = 5
    max_draws: int = 3
    alpha: float = 0.6
    history: int = 5
    layers: tuple[float, ...] = REFERENCE_SGRS_LAYERS

    def __post_init__(self) -> None:
        _require(
            _is_int(self.top_k) and self.top_k >= 1, "top_k (K)", "an integer >= 1", self.top_k
        )
        _require(
            _is_int(self.max_draws) and self.max_draws >= 1,
            "max_draws (R)",
            "an integer >= 1",
            self.max_draws,
        )
        _require(
            _is_number(self.alpha) and 0.0 <= self.alpha <= 1.0,
            "alpha",
            "a number in [0, 1]",
            self.alpha,
        )
        _require(
            _is_int(self.history) and self.history >= 1,
            "history (W)",
            "an integer >= 1",
            self.history,
        )
        _check_fractions("sgrs layers", self.layers, allow_none=False)
        object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))


@dataclass(frozen=True)
class LocoreParams:
    """Local coherence reinforcement (arXiv 2601.20279; docs/methods.md#locore).

    At every decoding step the current query's attention to the last ``window`` (w_s)
    GENERATED tokens (its own key included; prompt tokens never) is multiplied by
    ``1 + beta`` in ``layers`` (depth fractions; None = every decoder layer). The paper's
    indicator ``[P - j <= w_s]`` read literally covers w_s + 1 keys; lookright's window is the
    last w_s generated keys. ``renormalise=True`` (default) adds ``log(1 + beta)`` to those
    keys' scores before the softmax, which is exactly multiply-then-renormalise and runs in the
    model's own attention kernel (SDPA/eager); ``renormalise=False`` multiplies the
    post-softmax weights without renormalising (rows then sum to more than 1), computed
    explicitly for the one query row. beta None = the family default (:data:`FAMILY_BETA`).
    """

    beta: float | None = None
    window: int = 5
    layers: tuple[float, ...] | None = None
    renormalise: bool = True

    def __post_init__(self) -> None:
        if self.beta is not None:
            _require(
                _is_number(self.beta) and self.beta >= 0.0,
                "beta",
                "a number >= 0 (0 = no reinforcement)",
                self.beta,
            )
        _require(
            _is_int(self.window) and self.window >= 1,
            "locore window (w_s)",
            "an integer >= 1",
            self.window,
        )
        _check_fractions("locore layers", self.layers, allow_none=True)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(float(f) for f in self.layers))
        _require(
            isinstance(self.renormalise, bool), "renormalise", "true or false", self.renormalise
        )

    def resolved_beta(self, family: str | None) -> float:
        if self.beta is not None:
            return float(self.beta)
        return FAMILY_BETA.get(family or "", DEFAULT_BETA)


def check_strategy(strategy: str) -> str:
    """The strategy name, or an error listing the valid ones."""
    if strategy not in STRATEGIES:
        raise DecodingParameterError(
            f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}"
        )
    return strategy


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    _require(_is_int(value) and value >= minimum, name, f"an integer >= {minimum}", value)
    return int(value)


# Flat keyword names accepted by ``lookright.decoding.generate(**params)``.
SGRS_KEYS = {
    "top_k": "top_k",
    "max_draws": "max_draws",
    "alpha": "alpha",
    "history": "history",
    "sgrs_layers": "layers",
}
LOCORE_KEYS = {
    "beta": "beta",
    "locore_window": "window",
    "locore_layers": "layers",
    "renormalise": "renormalise",
}


def split_flat_params(
    params: Mapping[str, Any], sgrs: SgrsParams, locore: LocoreParams
) -> tuple[SgrsParams, LocoreParams]:
    """Apply flat keyword parameters over ``sgrs``/``locore``; unknown names are an error."""
    unknown = sorted(set(params) - set(SGRS_KEYS) - set(LOCORE_KEYS))
    if unknown:
        raise DecodingParameterError(
            f"unknown decoding parameter(s) {unknown}; valid: {sorted([*SGRS_KEYS, *LOCORE_KEYS])}"
        )
    sgrs_changes = {SGRS_KEYS[k]: v for k, v in params.items() if k in SGRS_KEYS}
    locore_changes = {LOCORE_KEYS[k]: v for k, v in params.items() if k in LOCORE_KEYS}
    return replace(sgrs, **sgrs_changes), replace(locore, **locore_changes)


def as_params(cls: type, value: Any) -> Any:
    """``cls`` instance from None (defaults), a mapping of its fields, or an instance."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise DecodingParameterError(
                f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(names)}"
            )
        return cls(**value)
    raise DecodingParameterError(f"expected {cls.__name__}, a mapping or None, got {value!r}")
