"""Typed configuration of the ``decode`` stage (config key ``decode``).

Merged over these defaults by :func:`lookright.config.load_stage_config` (unknown keys and
wrong types fail naming the key); :func:`validate` then checks ranges with errors naming the
key and its valid range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lookright.config import ConfigError, ModelSection, TrackingConfig
from lookright.decoding.params import (
    REFERENCE_SGRS_LAYERS,
    DecodingParameterError,
    LocoreParams,
    SgrsParams,
)

DECODE_TASKS = ("pope", "caption")


@dataclass
class SgrsSection:
    top_k: int = 5  # K (also the K of the ``sample`` strategy)
    max_draws: int = 3  # R
    alpha: float = 0.6
    history: int = 5  # W
    layers: list[float] = field(default_factory=lambda: list(REFERENCE_SGRS_LAYERS))


@dataclass
class LocoreSection:
    beta: float | None = None  # None: per family (llava 0.15, qwen2_vl/qwen2_5_vl 0.20)
    window: int = 5  # w_s
    layers: list[float] | None = None  # None: every decoder layer
    renormalise: bool = True


@dataclass
class DecodeSection:
    split: str = "test"
    tasks: list[str] = field(default_factory=lambda: list(DECODE_TASKS))
    max_samples: int | None = None  # per task; None = all
    batch_size: int = 8
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"pope": 64, "caption": 128})
    num_beams: int = 5  # strategy ``beam``
    token_saliency: bool = True  # also score the tokens of greedy / sample / locore
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "auto"  # auto (checkpoint's), float32, bfloat16, float16
    attn_implementation: str = "sdpa"  # sdpa or eager
    sgrs: SgrsSection = field(default_factory=SgrsSection)
    locore: LocoreSection = field(default_factory=LocoreSection)


@dataclass
class DecodeConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    decode: DecodeSection = field(default_factory=DecodeSection)


def sgrs_params(section: SgrsSection) -> SgrsParams:
    try:
        return SgrsParams(
            top_k=section.top_k,
            max_draws=section.max_draws,
            alpha=section.alpha,
            history=section.history,
            layers=tuple(section.layers),
        )
    except DecodingParameterError as error:
        raise ConfigError(f"decode.sgrs: {error}") from None


def locore_params(section: LocoreSection) -> LocoreParams:
    try:
        return LocoreParams(
            beta=section.beta,
            window=section.window,
            layers=None if section.layers is None else tuple(section.layers),
            renormalise=section.renormalise,
        )
    except DecodingParameterError as error:
        raise ConfigError(f"decode.locore: {error}") from None


def validate(cfg: DecodeConfig) -> DecodeConfig:
    """Range checks of the ``decode`` section; a :class:`ConfigError` names the key."""
    d = cfg.decode
    if d.split not in ("train", "val", "test"):
        raise ConfigError(f"decode.split must be one of train, val, test, got {d.split!r}")
    unknown = [t for t in d.tasks if t not in DECODE_TASKS]
    if unknown or not d.tasks:
        raise ConfigError(
            f"decode.tasks must be a non-empty subset of {list(DECODE_TASKS)}, got {d.tasks}"
        )
    missing = [t for t in d.tasks if t not in d.max_new_tokens]
    if missing:
        raise ConfigError(f"decode.max_new_tokens has no entry for task(s) {missing}")
    for task, value in d.max_new_tokens.items():
        if value < 1:
            raise ConfigError(f"decode.max_new_tokens.{task} must be >= 1, got {value}")
    if d.max_samples is not None and d.max_samples < 1:
        raise ConfigError(f"decode.max_samples must be >= 1 or null, got {d.max_samples}")
    if d.batch_size < 1:
        raise ConfigError(f"decode.batch_size must be >= 1, got {d.batch_size}")
    if d.num_beams < 1:
        raise ConfigError(f"decode.num_beams must be >= 1, got {d.num_beams}")
    if d.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(
            f"decode.dtype must be one of auto, float32, bfloat16, float16, got {d.dtype!r}"
        )
    if d.attn_implementation not in ("sdpa", "eager"):
        raise ConfigError(
            f"decode.attn_implementation must be sdpa or eager, got {d.attn_implementation!r}"
        )
    if d.device != "auto" and not d.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"decode.device must be auto, cpu or cuda[:N], got {d.device!r}")
    sgrs_params(d.sgrs)
    locore_params(d.locore)
    return cfg
