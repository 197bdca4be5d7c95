"""The branch configs the Snakefile builds (lookright.stages.branches): seeded decode branches."""

from __future__ import annotations

import json
import re

import pytest

from lookright.decoding.params import SEEDED_STRATEGIES, STRATEGIES
from lookright.stages import branches

CONFIG = {
    "seed": 7,
    "models": {"tiny": {"family": "qwen2_5_vl"}},
    "decode": {
        "batch_size": 8,
        "run_strategies": ["greedy"],
        "run_sources": None,
        "num_beams": 5,
        "token_saliency": True,
        "sgrs": {"top_k": 5, "layers": [0.25]},
        "locore": {"beta": None},
    },
}


def test_split_strategy() -> None:
    assert branches.split_strategy("sgrs@3") == ("sgrs", 3)
    assert branches.split_strategy("sgrs+locore") == ("sgrs+locore", None)
    with pytest.raises(ValueError, match=r"'beam@2': beam does not sample"):
        branches.split_strategy("beam@2")
    with pytest.raises(ValueError, match="must be a seed"):
        branches.split_strategy("sample@x")
    with pytest.raises(ValueError, match="not one of"):
        branches.split_strategy("nucleus@1")


def test_the_pattern_accepts_exactly_the_registry_and_seeded_samplers() -> None:
    pattern = re.compile(branches.decode_strategy_pattern())
    accepted = [s for s in STRATEGIES if pattern.fullmatch(s)]
    assert accepted == list(STRATEGIES)
    for strategy in STRATEGIES:
        seeded = pattern.fullmatch(f"{strategy}@12") is not None
        assert seeded == (strategy in SEEDED_STRATEGIES), strategy


def test_a_seeded_decode_branch_differs_from_the_unseeded_only_in_its_seed() -> None:
    plain = json.loads(branches.decode_config(CONFIG, "tiny", "sgrs"))
    seeded = json.loads(branches.decode_config(CONFIG, "tiny", "sgrs@3"))
    assert (plain["seed"], seeded["seed"]) == (7, 3)
    assert {**seeded, "seed": 7} == plain
    sample = json.loads(branches.decode_config(CONFIG, "tiny", "sample@3"))
    assert sample["decode"]["sgrs"] == {"top_k": 5, "layers": [0.25]}  # the same K as SGRS


def test_ablation_params_split_strategy_and_decode_seed() -> None:
    wildcards = {"model": "tiny", "source": "grpo-acc@1", "strategy": "sample@4"}
    assert branches.ablation_params(CONFIG, wildcards) == {
        "model": "tiny",
        "source": "grpo-acc@1",
        "reward_set": "acc",
        "grpo_seed": 1,
        "strategy": "sample",
        "decode_seed": 4,
    }
    plain = branches.ablation_params(CONFIG, {**wildcards, "source": "sft", "strategy": "beam"})
    assert (plain["strategy"], plain["decode_seed"], plain["grpo_seed"]) == ("beam", 7, 7)
