"""Typed stage configurations (OmegaConf structured configs).

The Snakemake config (``config/config.yaml``, documented key by key in ``config/README.md``)
holds one section per stage. Each rule hands its stage the sections it reads as JSON; the CLI
merges that over the dataclass defaults below, so a misspelt key or a wrong type fails with
a message naming the key, before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lookright.data.shapes_config import ShapesConfig

T = TypeVar("T")


class ConfigError(ValueError):
    """A stage configuration is invalid; the message names the key and what is valid."""


class StageFailure(RuntimeError):
    """A stage ran and stopped on a check of its own (its outputs so far are kept, its MLflow
    run is FAILED); the CLI prints it in one line and exits 1."""


class GateError(StageFailure):
    """A stage ran but its result fails a threshold of its config (e.g. ``sft.min_accuracy``)."""


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "lookright"
    system_metrics_interval_s: float = 10.0


@dataclass
class DataSection:
    source: str = "shapes"
    max_rejected_fraction: float = 0.05
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    real: list[Any] = field(default_factory=list)


@dataclass
class TinyModelSection:
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 512
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 128


@dataclass
class ModelSection:
    name: str = "model"
    family: str = "qwen2_5_vl"
    base: str = "pretrain"


@dataclass
class PretrainSection:
    tiny: TinyModelSection = field(default_factory=TinyModelSection)
    vocab_size: int = 512
    freeze_vision: bool = True
    steps: int = 1200
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_scheduler: str = "cosine"
    warmup_steps: int = 20
    answer_template: str = "The {subject} {answer}"
    prompt_order: str = "image_first"  # or question_first (tiny models' chat template)
    task_mix: list[str] = field(default_factory=lambda: ["vqa"])
    eval_samples: int = 200
    min_accuracy: float = 0.0
    save_steps: int = 200


@dataclass
class LoraSection:
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


@dataclass
class SftSection:
    steps: int = 1200
    freeze_vision: bool = True
    min_accuracy: float = 0.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    learning_rate: float = 5e-4
    lora: LoraSection = field(default_factory=LoraSection)
    task_mix: list[str] = field(default_factory=lambda: ["vqa", "pope", "caption"])
    save_steps: int = 50
    eval_samples: int = 200
    max_new_tokens: int = 48
    logging_steps: int = 10


def load_stage_config(schema: type[T], *sources: str | Path | dict | None) -> T:
    """Merge JSON strings, YAML files or dicts over ``schema``'s defaults; validate.

    Unknown keys and wrong types raise :class:`ConfigError` naming the key.
    """
    merged: DictConfig = OmegaConf.structured(schema)
    for source in sources:
        if source is None:
            continue
        if isinstance(source, dict):
            layer = OmegaConf.create(source)
        elif isinstance(source, Path) or (
            isinstance(source, str) and not source.lstrip().startswith("{")
        ):
            layer = OmegaConf.load(source)
        else:
            layer = OmegaConf.create(json.loads(source))
        try:
            merged = OmegaConf.merge(merged, layer)
        except OmegaConfBaseException as error:
            raise ConfigError(f"{schema.__name__}: {error}".replace("\n", "; ")) from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except ValueError as error:  # a section's own checks (e.g. data.shapes' __post_init__)
        raise ConfigError(str(error)) from None


def to_dict(config: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)  # type: ignore[return-value]


def config_hash(config: Any) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``config`` (a config
    dataclass or a plain mapping: the same config hashes the same either way). The one hash
    of a stage's config: run.json, the MLflow tag, checkpoint markers."""
    data = to_dict(config) if dataclasses.is_dataclass(config) else plain(config)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plain(value: Any) -> Any:
    """Mappings -> dicts with str keys, non-string sequences -> lists, recursively."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value
