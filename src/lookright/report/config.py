"""Typed configuration of the ``report`` stage (config key ``report``).

Merged over these defaults by :func:`lookright.config.load_stage_config` (unknown keys and
wrong types fail naming the key); :func:`validate` then checks ranges with errors naming the
key and what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lookright.config import ConfigError, TrackingConfig, load_stage_config
from lookright.eval.config import ALL_METHODS


@dataclass
class ReportSection:
    gallery_samples: int = 4  # samples (rows) of the saliency gallery; 0 = no gallery
    gallery_methods: list[str] | None = None  # columns per source; None = every method found
    smooth_window: int = 5  # trailing moving average (steps) of the GRPO reward curves; 1 = raw


@dataclass
class ReportConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportSection = field(default_factory=ReportSection)


def validate(cfg: ReportConfig) -> ReportConfig:
    """Range checks of the ``report`` section; a :class:`ConfigError` names the key."""
    r = cfg.report
    if r.gallery_samples < 0:
        raise ConfigError(f"report.gallery_samples must be >= 0, got {r.gallery_samples}")
    if r.smooth_window < 1:
        raise ConfigError(f"report.smooth_window must be >= 1, got {r.smooth_window}")
    if r.gallery_methods is not None:
        methods = r.gallery_methods
        if not methods or any(not m.strip() for m in methods):
            raise ConfigError(
                f"report.gallery_methods must be null (all methods) or a non-empty list of "
                f"method names, got {methods}"
            )
        duplicates = sorted({m for m in methods if methods.count(m) > 1})
        if duplicates:
            raise ConfigError(f"report.gallery_methods lists {duplicates} more than once")
        unknown = [m for m in methods if m not in ALL_METHODS]
        if unknown:
            raise ConfigError(
                f"report.gallery_methods: unknown method(s) {unknown}; valid: {list(ALL_METHODS)}"
            )
    return cfg


def load_report_config(*sources: str | Path | dict | None) -> ReportConfig:
    """Defaults, merged with ``sources`` (YAML paths, JSON strings, dicts), validated."""
    return validate(load_stage_config(ReportConfig, *sources))
