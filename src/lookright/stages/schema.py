"""The workflow config's JSON schema, generated from the stages' config dataclasses.

    python -m lookright.stages.schema > workflow/schemas/config.schema.yaml

Every key, its type, its nesting and its default come from the section dataclasses the stages
load (:data:`SECTIONS`); every object rejects unknown keys (``additionalProperties: false``),
so a misspelt key (``pretrain: {stepz: 3}``) fails at ``snakemake -n``. Names come from their
registries (:data:`REGISTRY_ENUMS`: saliency methods, rewards, model families, readers, ...;
:data:`REGISTRY_PATTERNS`: decode branches, a strategy or ``sgrs@3``). Ranges that JSON schema can say (``minimum: 1``) are in
:data:`CONSTRAINTS`, keyed by the dotted paths of the generated schema (a test checks every
path exists). The keys that only the workflow reads (result folders, which branches to run)
are :class:`WorkflowKeys`. ``tests/stages/test_schema.py`` fails when the committed schema is
not this module's output.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import yaml


@dataclass
class DebugSection:
    fail_rules: list[str] = field(default_factory=list)


@dataclass
class ResourcesSection:
    train_gpus: int = 0
    decode_gpus: int = 0
    decode_threads: int = 2


@dataclass
class WorkflowKeys:
    """Keys the Snakefile reads itself (no stage does)."""

    results_dir: str = "results"
    logs_dir: str = "logs"
    seed: int = 0
    debug: DebugSection = field(default_factory=DebugSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    run_models: list[str] = field(default_factory=list)


# Branch keys: what the workflow turns into branches (grpo, decode), or fills in per branch.
GRPO_WORKFLOW = {
    "run_reward_sets": list[str],
    "reward_sets": dict[str, dict[str, float]],
    "reward_set_options": dict[str, dict[str, dict[str, Any]]],
}
GRPO_PER_BRANCH = ("reward_set", "rewards")
DECODE_WORKFLOW = {"run_strategies": list[str], "run_sources": list[str] | None}
REQUIRED = ("results_dir", "seed", "tracking", "data", "models", "run_models", "pretrain", "sft")


def sections() -> dict[str, type]:
    """Config key -> the dataclass of that section (imported here: light modules only)."""
    from lookright.config import (
        DataSection,
        ModelSection,
        PretrainSection,
        SftSection,
        TrackingConfig,
    )
    from lookright.report.config import ReportSection
    from lookright.stages.decode import DecodeSection
    from lookright.stages.evaluation import EvaluateSection
    from lookright.train.grpo.config import GrpoSection

    return {
        "tracking": TrackingConfig,
        "data": DataSection,
        "models": ModelSection,
        "pretrain": PretrainSection,
        "sft": SftSection,
        "grpo": GrpoSection,
        "decode": DecodeSection,
        "evaluate": EvaluateSection,
        "report": ReportSection,
    }


def _registry_enums() -> dict[str, Callable[[], list[str]]]:
    def methods() -> list[str]:
        from lookright.saliency.api import available_methods

        return available_methods()

    def rewards() -> list[str]:
        from lookright.rewards import REWARDS

        return list(REWARDS)

    def alignment_methods() -> list[str]:
        from lookright.rewards.base import ALIGNMENT_METHODS

        return list(ALIGNMENT_METHODS)

    def families() -> list[str]:
        from lookright.models.base import ADAPTERS, _ensure_registered

        _ensure_registered()
        return sorted(ADAPTERS)

    def readers() -> list[str]:
        from lookright.data.prepare import READERS

        return list(READERS)

    def constant(module: str, name: str) -> Callable[[], list[str]]:
        def load() -> list[str]:
            __import__(module)
            return list(getattr(sys.modules[module], name))

        return load

    return {
        "data.source": constant("lookright.data.prepare", "SOURCES"),
        "data.real[].reader": readers,
        "data.real[].roles[]": constant("lookright.data.schema", "ROLES"),
        "models{}.family": families,
        "grpo.reward_sets{}": rewards,  # property names
        "grpo.reward_options.saliency_alignment.method": alignment_methods,
        "grpo.task_mix[]": constant("lookright.data.schema", "TASKS"),
        "sft.task_mix[]": constant("lookright.data.schema", "TASKS"),
        "pretrain.task_mix[]": constant("lookright.data.schema", "TASKS"),
        "decode.split": constant("lookright.data.schema", "SPLITS"),
        "decode.tasks[]": constant("lookright.stages.decode", "DECODE_TASKS"),
        "evaluate.split": constant("lookright.data.schema", "SPLITS"),
        "evaluate.methods[]": methods,
        "evaluate.token_weightings[]": constant("lookright.saliency.weighting", "WEIGHTINGS"),
        "evaluate.faithfulness.baseline": constant("lookright.stages.evaluation", "BASELINES"),
        "evaluate.chair.vocabulary": constant("lookright.stages.evaluation", "VOCABULARIES"),
        "evaluate.chair.singulariser": constant("lookright.stages.evaluation", "SINGULARISERS"),
        "report.gallery_methods[]": methods,
    }


REGISTRY_ENUMS = _registry_enums()


def _decode_branch_pattern() -> str:
    from lookright.stages.branches import decode_strategy_pattern

    return f"^{decode_strategy_pattern()}$"


REGISTRY_PATTERNS: dict[str, Callable[[], str]] = {
    "decode.run_strategies[]": _decode_branch_pattern,  # the registry's strategies, sgrs@3
}

CONSTRAINTS: dict[str, dict[str, Any]] = {
    "seed": {"minimum": 0},
    "tracking.experiment": {"minLength": 1},
    "tracking.system_metrics_interval_s": {"minimum": 0},
    "resources.train_gpus": {"minimum": 0},
    "resources.decode_gpus": {"minimum": 0},
    "resources.decode_threads": {"minimum": 1},
    "data.max_rejected_fraction": {"minimum": 0, "maximum": 1},
    "data.shapes.image_size": {"minimum": 28, "multipleOf": 28},
    "data.shapes.grid": {"minimum": 1},
    "data.shapes.layout": {"enum": ["grid", "free"]},
    "data.shapes.min_objects": {"minimum": 1},
    "data.shapes.max_objects": {"minimum": 1},
    "data.shapes.n_train": {"minimum": 0},
    "data.shapes.n_val": {"minimum": 0},
    "data.shapes.n_test": {"minimum": 0},
    "data.shapes.noise_std": {"minimum": 0},
    "data.shapes.human_map_size": {"minimum": 1},
    "data.shapes.bias.fraction": {"minimum": 0, "maximum": 1},
    "data.real[].roles": {"minItems": 1},
    "data.real[].val": {"type": ["number", "null"], "minimum": 0},
    "data.real[].val_seed": {"type": "integer"},
    "data.real[].image_template": {"type": "string"},
    "models": {"minProperties": 1},
    "run_models": {"minItems": 1},
    "pretrain.steps": {"minimum": 1},
    "pretrain.batch_size": {"minimum": 1},
    "pretrain.learning_rate": {"exclusiveMinimum": 0},
    "pretrain.min_accuracy": {"minimum": 0, "maximum": 1},
    "pretrain.prompt_order": {"enum": ["image_first", "question_first"]},
    "sft.steps": {"minimum": 1},
    "sft.min_accuracy": {"minimum": 0, "maximum": 1},
    "sft.batch_size": {"minimum": 1},
    "sft.gradient_accumulation_steps": {"minimum": 1},
    "sft.learning_rate": {"exclusiveMinimum": 0},
    "sft.lora.r": {"minimum": 1},
    "sft.lora.alpha": {"minimum": 1},
    "sft.lora.dropout": {"minimum": 0, "maximum": 1},
    "sft.save_steps": {"minimum": 1},
    "sft.eval_samples": {"minimum": 0},
    "sft.max_new_tokens": {"minimum": 1},
    "sft.logging_steps": {"minimum": 1},
    "grpo.run_reward_sets": {"uniqueItems": True},
    "grpo.run_reward_sets[]": {"pattern": "^[^/]+$"},
    "grpo.reward_sets": {"minProperties": 1},
    "grpo.reward_sets{}": {"minProperties": 1},
    "grpo.reward_options.accuracy.judge.timeout_s": {"exclusiveMinimum": 0},
    "grpo.reward_options.accuracy.judge.max_retries": {"minimum": 0},
    "grpo.reward_options.saliency_alignment.batch_size": {"minimum": 1},
    "grpo.reward_options.region_attention.rho": {"exclusiveMinimum": 0, "maximum": 1},
    "grpo.reward_options.region_attention.layers": {"minItems": 1},
    "grpo.reward_options.region_attention.eps": {"exclusiveMinimum": 0},
    "grpo.reward_options.region_attention.batch_size": {"minimum": 1},
    "grpo.steps": {"minimum": 1},
    "grpo.batch_size": {"minimum": 1},
    "grpo.gradient_accumulation_steps": {"minimum": 1},
    "grpo.num_generations": {"minimum": 2},
    "grpo.max_completion_length": {"minimum": 1},
    "grpo.temperature": {"exclusiveMinimum": 0},
    "grpo.top_p": {"exclusiveMinimum": 0, "maximum": 1},
    "grpo.learning_rate": {"exclusiveMinimum": 0},
    "grpo.beta": {"minimum": 0},
    "grpo.loss_type": {
        "enum": ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]
    },
    "grpo.scale_rewards": {"enum": ["group", "batch", "none"]},
    "grpo.num_iterations": {"minimum": 1},
    "grpo.lora.r": {"minimum": 1},
    "grpo.lora.alpha": {"minimum": 1},
    "grpo.lora.dropout": {"minimum": 0, "maximum": 1},
    "grpo.task_mix": {"minItems": 1},
    "grpo.vllm_mode": {"enum": ["colocate", "server"]},
    "grpo.save_steps": {"minimum": 1},
    "grpo.logging_steps": {"minimum": 1},
    "grpo.eval_samples": {"minimum": 0},
    "grpo.max_new_tokens": {"minimum": 1},
    "decode.run_strategies": {"uniqueItems": True},
    "decode.run_sources[]": {"pattern": "^(sft|grpo-[^/]+)$"},
    "decode.tasks": {"minItems": 1},
    "decode.max_samples": {"minimum": 1},
    "decode.batch_size": {"minimum": 1},
    "decode.max_new_tokens{}": {"minimum": 1},
    "decode.num_beams": {"minimum": 1},
    "decode.device": {"pattern": "^(auto|cpu|cuda(:[0-9]+)?)$"},
    "decode.dtype": {"enum": ["auto", "float32", "bfloat16", "float16"]},
    "decode.attn_implementation": {"enum": ["sdpa", "eager"]},
    "decode.sgrs.top_k": {"minimum": 1},
    "decode.sgrs.max_draws": {"minimum": 1},
    "decode.sgrs.alpha": {"minimum": 0, "maximum": 1},
    "decode.sgrs.history": {"minimum": 1},
    "decode.sgrs.layers": {"minItems": 1},
    "decode.sgrs.layers[]": {"minimum": 0, "maximum": 1},
    "decode.locore.beta": {"minimum": 0},
    "decode.locore.window": {"minimum": 1},
    "decode.locore.layers": {"minItems": 1},
    "decode.locore.layers[]": {"minimum": 0, "maximum": 1},
    "evaluate.max_samples": {"minimum": 1},
    "evaluate.batch_size": {"minimum": 1},
    "evaluate.max_new_tokens": {"minimum": 1},
    "evaluate.methods": {"minItems": 1, "uniqueItems": True},
    "evaluate.token_weightings": {"minItems": 1, "uniqueItems": True},
    "evaluate.occlusion.cell_size": {"minimum": 1},
    "evaluate.occlusion.max_samples": {"minimum": 1},
    "evaluate.nss_percentile": {"minimum": 0, "exclusiveMaximum": 100},
    "evaluate.gallery_samples": {"minimum": 0},
    "evaluate.faithfulness.blur_radius": {"exclusiveMinimum": 0},
    "evaluate.faithfulness.deletion_fractions[]": {"exclusiveMinimum": 0, "maximum": 1},
    "evaluate.faithfulness.insertion_fractions[]": {"exclusiveMinimum": 0, "maximum": 1},
    "evaluate.faithfulness.curve_steps": {"minimum": 2},
    "evaluate.faithfulness.max_samples": {"minimum": 1},
    "report.gallery_samples": {"minimum": 0},
    "report.smooth_window": {"minimum": 1},
}

_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def type_schema(annotation: Any, hints_of: Callable[[type], dict]) -> dict[str, Any]:
    """JSON schema of a Python annotation (dataclasses, Optional, list, dict, scalars)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        inner = type_schema(kept[0], hints_of) if len(kept) == 1 else {}
        if len(args) > len(kept) and "type" in inner:
            kind = inner["type"]
            inner["type"] = [*(kind if isinstance(kind, list) else [kind]), "null"]
        return inner
    if origin in (list, tuple):
        return {"type": "array", "items": type_schema(args[0], hints_of) if args else {}}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1], hints_of)}
    if dataclasses.is_dataclass(annotation):
        return object_schema(annotation, hints_of)
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    return {}


def object_schema(cls: type, hints_of: Callable[[type], dict], skip=()) -> dict[str, Any]:
    hints = hints_of(cls)
    properties = {
        f.name: type_schema(hints[f.name], hints_of)
        for f in dataclasses.fields(cls)
        if f.name not in skip
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules[cls.__module__]
    return typing.get_type_hints(cls, vars(module))


def _node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at a dotted path (``a.b``, ``a[]`` items, ``a{}`` mapping values)."""
    node = schema
    for part in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


def config_schema() -> dict[str, Any]:
    """The whole workflow config schema (see the module docstring)."""
    properties = object_schema(WorkflowKeys, _hints)["properties"]
    found = sections()
    for name, cls in found.items():
        skip = ("name",) if name == "models" else GRPO_PER_BRANCH if name == "grpo" else ()
        section = object_schema(cls, _hints, skip)
        if name == "models":
            section = {"type": "object", "additionalProperties": section}
            section["additionalProperties"]["required"] = ["family", "base"]
        properties[name] = section
    for key, annotation in GRPO_WORKFLOW.items():
        properties["grpo"]["properties"][key] = type_schema(annotation, _hints)
    for key, annotation in DECODE_WORKFLOW.items():
        properties["decode"]["properties"][key] = type_schema(annotation, _hints)
    properties["data"]["properties"]["real"]["items"] = {  # free-form per reader
        "type": "object",
        "required": ["reader"],
        "properties": {
            "reader": {},
            "roles": {"type": "array", "items": {}},
            **{key: {} for key in ("val", "val_seed", "image_template")},
        },
    }
    properties["grpo"]["required"] = ["run_reward_sets", "reward_sets"]
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "lookright pipeline configuration (every key is documented in "
        "config/README.md). GENERATED by `python -m lookright.stages.schema`: do not edit.",
        "type": "object",
        "required": list(REQUIRED),
        "properties": properties,
        "additionalProperties": False,
    }
    for path, names in REGISTRY_ENUMS.items():
        node = _node(schema, path)
        if path.endswith("{}"):
            node["propertyNames"] = {"enum": names()}
        else:
            node["enum"] = names()
    for path, pattern in REGISTRY_PATTERNS.items():
        _node(schema, path)["pattern"] = pattern()
    for path, extra in CONSTRAINTS.items():
        _node(schema, path).update(extra)
    return schema


def main() -> int:
    yaml.safe_dump(config_schema(), sys.stdout, sort_keys=False, width=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
