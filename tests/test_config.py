"""Typed stage configs (merging, errors naming the key, hashing) and the workflow config schema."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

from lookright.config import ConfigError, config_hash, load_stage_config, to_dict
from lookright.stages.prepare_data import PrepareDataConfig
from lookright.stages.pretrain import PretrainConfig
from lookright.stages.sft import SftConfig
from lookright.tracking import config_hash as tracking_config_hash

REPO = Path(__file__).resolve().parent.parent
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def _yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.fixture
def full_config() -> dict:
    return _yaml("config.yaml")


@pytest.fixture
def smoke_merged() -> dict:
    """config.yaml with config/smoke.yaml on top, as ``--configfile config/smoke.yaml`` does."""
    merged = _yaml("config.yaml")
    update_config(merged, _yaml("smoke.yaml"))
    return merged


# --------------------------------------------------------------------------- merging


def test_defaults_without_sources():
    cfg = load_stage_config(PretrainConfig)
    assert cfg == PretrainConfig()
    assert cfg.pretrain.steps == 1200 and cfg.model.family == "qwen2_5_vl"
    assert load_stage_config(SftConfig, None).sft.lora.enabled is False


def test_sources_merge_in_order_over_defaults(tmp_path):
    layer = tmp_path / "layer.yaml"
    layer.write_text(
        "seed: 5\npretrain:\n  steps: 7\n  batch_size: 3\n  tiny:\n    text_layers: 1\n"
    )
    cfg = load_stage_config(
        PretrainConfig,
        layer,  # a Path
        json.dumps({"pretrain": {"steps": 9}}),  # JSON (as the Snakemake rules pass it)
        {"model": {"family": "llava"}},  # a dict
        None,  # skipped
    )
    assert isinstance(cfg, PretrainConfig)
    assert cfg.seed == 5
    assert cfg.pretrain.steps == 9  # later source wins
    assert cfg.pretrain.batch_size == 3  # earlier source kept where not overridden
    assert cfg.pretrain.tiny.text_layers == 1 and cfg.pretrain.tiny.text_hidden == 128
    assert cfg.model.family == "llava" and cfg.model.base == "pretrain"
    assert cfg.pretrain.task_mix == ["vqa"]  # default kept
    from_str_path = load_stage_config(PretrainConfig, str(layer))
    assert from_str_path.pretrain.steps == 7


def test_lists_and_real_entries_are_plain_python(tmp_path):
    entry = {"reader": "pope", "files": ["a.json", "b.json"], "image_root": "/img"}
    cfg = load_stage_config(
        PrepareDataConfig, {"data": {"source": "real", "real": [entry]}}, {"seed": 1}
    )
    assert cfg.data.real == [entry] and type(cfg.data.real[0]) is dict
    assert cfg.data.shapes.bias.color == "red"
    sft = load_stage_config(SftConfig, {"sft": {"lora": {"target_modules": ["q_proj"]}}})
    assert sft.sft.lora.target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("schema", "source", "key"),
    [
        (PretrainConfig, {"pretrain": {"stepz": 3}}, "pretrain.stepz"),
        (PretrainConfig, {"pretrain": {"tiny": {"text_hiden": 3}}}, "pretrain.tiny.text_hiden"),
        (SftConfig, {"sft": {"lora": {"rank": 3}}}, "sft.lora.rank"),
        (PrepareDataConfig, {"data": {"shapes": {"bias": {"frac": 0.5}}}}, "data.shapes.bias.frac"),
        (SftConfig, {"pretrain": {"steps": 3}}, "pretrain"),
    ],
)
def test_unknown_key_names_the_full_key(schema, source, key):
    with pytest.raises(ConfigError) as caught:
        load_stage_config(schema, source)
    message = str(caught.value)
    assert f"full_key: {key}" in message
    assert message.startswith(f"{schema.__name__}: ")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("source", "key", "value"),
    [
        ('{"pretrain": {"steps": "many"}}', "pretrain.steps", "many"),
        ('{"pretrain": {"freeze_vision": "perhaps"}}', "pretrain.freeze_vision", "perhaps"),
        ('{"pretrain": {"learning_rate": "fast"}}', "pretrain.learning_rate", "fast"),
        ('{"model": {"family": [1, 2]}}', "model.family", None),
    ],
)
def test_wrong_type_names_the_full_key(source, key, value):
    with pytest.raises(ConfigError) as caught:
        load_stage_config(PretrainConfig, source)
    assert f"full_key: {key}" in str(caught.value)
    if value is not None:
        assert repr(value) in str(caught.value)


def test_wrong_type_in_a_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  batch_size: sixteen\n")
    with pytest.raises(ConfigError, match="full_key: sft.batch_size"):
        load_stage_config(SftConfig, bad)


# --------------------------------------------------------------------------- hashing


def test_config_hash_ignores_key_order_and_tracks_values():
    a = load_stage_config(SftConfig, {"seed": 1, "sft": {"steps": 5, "batch_size": 2}})
    b = load_stage_config(SftConfig, {"sft": {"batch_size": 2, "steps": 5}, "seed": 1})
    c = load_stage_config(SftConfig, {"seed": 1, "sft": {"steps": 6, "batch_size": 2}})
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(c)
    assert config_hash(a) != config_hash(load_stage_config(SftConfig, {"seed": 2}))
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    # run.json (the dataclass) and the MLflow tag (its flattened dict) hash the same
    assert tracking_config_hash is config_hash and config_hash(to_dict(a)) == config_hash(a)
    assert config_hash(a) == config_hash(copy.deepcopy(a))


# --------------------------------------------------------------------------- workflow schema


def test_config_files_validate_against_the_schema(full_config, smoke_merged):
    validate(full_config, SCHEMA)
    validate(smoke_merged, SCHEMA)
    assert (
        smoke_merged["pretrain"]["steps"] == 4
        and smoke_merged["pretrain"]["tiny"]["text_layers"] == 2
    )
    assert smoke_merged["pretrain"]["answer_template"] == full_config["pretrain"]["answer_template"]
    assert smoke_merged["data"]["shapes"]["image_size"] == 112


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "cluster.yaml"])
def test_config_sections_load_into_the_stage_configs(name):
    """Each stage's sections (as the rules pass them) pass the typed configs."""
    merged = _yaml("config.yaml")
    if name != "config.yaml":
        update_config(merged, _yaml(name))
    prepare = load_stage_config(PrepareDataConfig, {"seed": merged["seed"], "data": merged["data"]})
    assert prepare.data.shapes.n_train == merged["data"]["shapes"]["n_train"]
    for model_name, model in merged["models"].items():
        common = {"seed": merged["seed"], "model": {**model, "name": model_name}}
        pretrain = load_stage_config(PretrainConfig, {**common, "pretrain": merged["pretrain"]})
        assert pretrain.pretrain.steps == merged["pretrain"]["steps"]
        assert pretrain.model.family == model["family"]
        sft = load_stage_config(SftConfig, {**common, "sft": merged["sft"]})
        assert sft.sft.steps == merged["sft"]["steps"]


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("data", "shapes", "image_size"), 100, ["image_size", "multiple of 28"]),
        (("models", "tiny-qwen2.5-vl", "family"), "gpt2", ["family", "gpt2"]),
        (("data", "source"), "web", ["source", "web"]),
        (("sft", "steps"), 0, ["steps"]),
        (("data", "shapes", "bias", "fraction"), 1.5, ["fraction"]),
        (("data", "shapes", "sizes"), 3, ["sizes"]),
    ],
)
def test_broken_config_fails_validation_naming_the_key(full_config, path, value, words):
    broken = copy.deepcopy(full_config)
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(WorkflowError) as caught:
        validate(broken, SCHEMA)
    message = str(caught.value)
    for word in words:
        assert word in message


def test_missing_required_section_fails_validation(full_config):
    del full_config["run_models"]
    with pytest.raises(WorkflowError, match="run_models"):
        validate(full_config, SCHEMA)


def test_cluster_config_validates_and_names_real_models_and_readers(full_config):
    """config/cluster.yaml (what a cluster user copies) is valid over the defaults."""
    merged = _yaml("config.yaml")
    update_config(merged, _yaml("cluster.yaml"))
    validate(merged, SCHEMA)
    assert merged["data"]["source"] == "real"
    readers = {entry["reader"] for entry in merged["data"]["real"]}
    assert readers == {"saliency_r1", "llava_conversations", "pope", "coco", "vqa_hat"}
    for name in merged["run_models"]:
        assert merged["models"][name]["base"] != "pretrain"


def _leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """``{"a.b.c": value}`` of every non-dict value of a nested dict."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{path}.")
        else:
            out[path] = value
    return out


TINY_MODEL_KEYS = (
    # values the embedded default picks for the tiny CPU model; a real run must set its own
    "grpo.learning_rate",  # 5e-4 for the tiny model; the paper's 1e-5 for 3B/7B
    "grpo.steps",
    "grpo.batch_size",
    "grpo.gradient_accumulation_steps",
    "grpo.num_generations",
    "grpo.max_completion_length",
    "grpo.max_new_tokens",
    "grpo.eval_samples",
    "grpo.save_steps",
    "grpo.reward_options.saliency_alignment.method",
    "grpo.reward_options.saliency_alignment.batch_size",
    "grpo.reward_options.region_attention.batch_size",
    "decode.max_samples",  # 60 keeps 36 CPU branches short; POPE has 3 x 3,000 questions
    "decode.max_new_tokens.pope",
    "decode.max_new_tokens.caption",
    "decode.batch_size",
    "evaluate.max_samples",
    "evaluate.max_new_tokens",
    "evaluate.batch_size",
    "evaluate.faithfulness.max_samples",
    "evaluate.faithfulness.curve_steps",
    "evaluate.chair.vocabulary",  # was inherited as "shapes": CHAIR 0 on COCO
    "sft.steps",
    "sft.learning_rate",
    "sft.batch_size",
    "sft.gradient_accumulation_steps",
    "sft.gradient_checkpointing",
    "sft.lora.enabled",
    "sft.min_accuracy",  # 0.8 is the tiny model's recipe
    "sft.max_new_tokens",
    "sft.eval_samples",
    "resources.train_gpus",
    "resources.decode_gpus",
    "resources.decode_threads",
    "tracking.uri",
    "results_dir",
    "logs_dir",
    "data.source",
    "run_models",
)
"""Keys of config/config.yaml that config/cluster.yaml must set itself (never inherit)."""
INHERITED_ON_PURPOSE = {
    "data.shapes.": "the synthetic generator: not read when data.source is real",
    "pretrain.": "only for models with base: pretrain; the cluster models have real bases",
    "models.tiny-qwen2.5-vl.": "a catalogue entry; run_models does not name it",
}


def test_cluster_config_sets_every_tiny_model_value_itself():
    """config/cluster.yaml used to inherit grpo.learning_rate 5e-4, decode.max_samples 60 and
    evaluate.chair.vocabulary shapes from the tiny-model default, without a word."""
    default, cluster = _leaves(_yaml("config.yaml")), _leaves(_yaml("cluster.yaml"))
    missing = [key for key in TINY_MODEL_KEYS if key not in cluster]
    assert not missing, f"config/cluster.yaml inherits tiny-model values: {missing}"
    assert set(TINY_MODEL_KEYS) <= set(default)  # the list names real keys
    undecided = [
        key
        for key in default
        if key not in cluster and not key.startswith(tuple(INHERITED_ON_PURPOSE))
    ]
    assert not undecided, (
        f"config/config.yaml sets {undecided}, which config/cluster.yaml neither sets nor "
        "inherits on purpose: decide its real-run value"
    )
    assert cluster["grpo.learning_rate"] <= 1e-4 and cluster["decode.max_samples"] != 60
    assert cluster["evaluate.chair.vocabulary"] == "auto"
