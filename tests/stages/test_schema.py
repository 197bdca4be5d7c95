"""The config schema is generated from the stages' dataclasses; names come from registries."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from lookright.stages import schema as schema_module
from tests.workflow_utils import copy_workflow, snakemake

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_committed_schema_is_generated_from_the_dataclasses():
    committed = yaml.safe_load(SCHEMA.read_text())
    assert committed == schema_module.config_schema(), (
        "workflow/schemas/config.schema.yaml is stale: "
        "python -m lookright.stages.schema > workflow/schemas/config.schema.yaml"
    )


def _objects(node, path=""):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and path != "data.real[]":
            yield path, node
        for key, child in (node.get("properties") or {}).items():
            yield from _objects(child, f"{path}.{key}" if path else key)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from _objects(node[key], f"{path}{'[]' if key == 'items' else '{}'}")


def test_every_object_rejects_unknown_keys():
    open_objects = [p for p, node in _objects(schema_module.config_schema())
                    if node.get("additionalProperties") is not False]  # fmt: skip
    assert open_objects == [], open_objects


def test_every_section_key_is_a_dataclass_field_and_back():
    import dataclasses

    generated = schema_module.config_schema()["properties"]
    for name, cls in schema_module.sections().items():
        keys = set((generated[name].get("additionalProperties") or generated[name])["properties"])
        fields = {f.name for f in dataclasses.fields(cls)} - {"name", "reward_set", "rewards"}
        workflow = set(schema_module.GRPO_WORKFLOW if name == "grpo" else ())
        workflow |= set(schema_module.DECODE_WORKFLOW if name == "decode" else ())
        assert keys == fields | workflow, name


def test_names_come_from_the_registries():
    from lookright.data.prepare import READERS
    from lookright.decoding.params import STRATEGIES
    from lookright.models.base import ADAPTERS, _ensure_registered
    from lookright.report.experiment import DEFAULT_METHODS
    from lookright.rewards import REWARDS
    from lookright.rewards.saliency import ALIGNMENT_METHODS
    from lookright.saliency.api import available_methods

    _ensure_registered()
    node = schema_module._node
    schema = yaml.safe_load(SCHEMA.read_text())
    assert node(schema, "evaluate.methods[]")["enum"] == available_methods()
    assert node(schema, "report.gallery_methods[]")["enum"] == available_methods()
    strategies = re.compile(node(schema, "decode.run_strategies[]")["pattern"])
    assert all(strategies.fullmatch(s) for s in STRATEGIES)
    assert strategies.fullmatch("sgrs@3") and not strategies.fullmatch("beam@3")
    assert node(schema, "grpo.reward_sets{}")["propertyNames"]["enum"] == list(REWARDS)
    assert node(schema, "models{}.family")["enum"] == sorted(ADAPTERS)
    assert node(schema, "data.real[].reader")["enum"] == list(READERS)
    assert set(ALIGNMENT_METHODS) <= set(available_methods())
    assert set(DEFAULT_METHODS) <= set(available_methods())


def test_a_misspelt_key_fails_the_dry_run_naming_it(tmp_path):
    workdir = copy_workflow(tmp_path / "workflow")
    (workdir / "typo.yaml").write_text(yaml.safe_dump({"pretrain": {"stepz": 3}}))
    result = snakemake(workdir, "--dry-run", "--configfile", "config/smoke.yaml", "typo.yaml")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "'stepz' was unexpected" in output and "pretrain" in output
