"""The experiment of EXPERIMENTS.md: its config validates and its DAG builds (not run here)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.workflow_utils import copy_workflow, planned_jobs, snakemake

EXPERIMENT = ("--configfile", "config/config.yaml", "config/experiment.yaml")
SHORTCUT = (*EXPERIMENT, "config/experiment-shortcut.yaml")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("experiment"))


@pytest.mark.parametrize("configs", [EXPERIMENT, SHORTCUT], ids=["mild", "shortcut"])
def test_experiment_dag_has_every_arm_and_seed(workdir: Path, configs) -> None:
    jobs = planned_jobs(workdir, *configs)
    assert jobs == {
        "prepare_data": 1,
        "pretrain": 1,
        "sft": 1,  # one SFT checkpoint shared by every arm and seed
        "grpo": 19,  # 3 arms x 5 seeds + 4 single-seed arms
        "evaluate_saliency": 20,  # SFT + every GRPO branch
        "decode": 14,  # SFT model: 4 strategies once, sample and sgrs x 5 seeds (question 3)
        "evaluate_answers": 14,
        "report": 1,
    }


def test_the_shortcut_experiment_trains_on_a_shortcut(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run", "--printshellcmds", *SHORTCUT)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"lookright prepare-data --config-json '(\{.*?\})'", result.stdout)
    bias = json.loads(match.group(1))["data"]["shapes"]["bias"]
    assert bias["fraction"] >= 0.98 and (bias["shape"], bias["color"]) == ("triangle", "red")
    assert "results-experiment-shortcut/" in result.stdout


def test_seeded_branches_get_their_seed_and_their_set_options(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run", "--printshellcmds", *EXPERIMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    configs = {}
    for match in re.finditer(
        r"lookright\.launch --stage grpo .*?--config-json '(\{.*?\})'", result.stdout
    ):
        cfg = json.loads(match.group(1))
        configs[cfg["grpo"]["reward_set"]] = cfg
    assert {configs[f"acc+fmt+sal@{s}"]["seed"] for s in range(5)} == set(range(5))
    sal = configs["acc+fmt+sal@1"]["grpo"]
    assert sal["reward_options"]["saliency_alignment"]["method"] == "logit_decomposition_centered"
    cot = configs["acc+fmt+sal-cot@0"]["grpo"]
    assert cot["reward_options"]["saliency_alignment"]["method"] == "cot_bottleneck"
    rho = configs["acc+fmt+sayo-rho0.2@0"]["grpo"]["reward_options"]["region_attention"]
    assert rho["rho"] == 0.2
    assert configs["acc+fmt+sayo@2"]["grpo"]["reward_options"]["region_attention"]["rho"] == 0.3


def test_seeded_decode_branches_get_their_seed(workdir: Path) -> None:
    result = snakemake(workdir, "--dry-run", "--printshellcmds", *EXPERIMENT)
    assert result.returncode == 0, result.stderr[-3000:]
    seeds: dict[str, set[int]] = {}
    for match in re.finditer(
        r"lookright decode --config-json '(\{.*?\})' .*?--strategy (\S+) --out (\S+)",
        result.stdout,
    ):
        cfg, strategy, out = json.loads(match.group(1)), match.group(2), match.group(3)
        assert out.rstrip("'").split("/")[-1].split("@")[0] == strategy  # the base strategy runs
        seeds.setdefault(strategy, set()).add(cfg["seed"])
    assert seeds["sample"] == seeds["sgrs"] == set(range(5))  # the same seeds: paired
    assert seeds["greedy"] == {0}


def test_a_bad_seed_suffix_is_a_clear_error(workdir: Path, tmp_path: Path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text("grpo:\n  run_reward_sets: [acc+fmt@one]\n")
    result = snakemake(workdir, "--dry-run", *EXPERIMENT, str(override))
    assert result.returncode != 0
    assert "must be a seed (integer)" in result.stdout + result.stderr


def test_a_seed_on_a_deterministic_strategy_fails_the_dry_run(workdir: Path, tmp_path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text("decode:\n  run_strategies: [greedy@1]\n")
    result = snakemake(workdir, "--dry-run", *EXPERIMENT, str(override))
    assert result.returncode != 0
    assert "greedy@1" in result.stdout + result.stderr
