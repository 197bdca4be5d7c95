"""The workflow's branches and what each one's job reads: its config (a rule's rerun trigger).

The Snakefile asks this module, at parse time, for the stage config of every job: exactly the
config sections its stage reads (plus the model entry and the seed), as canonical JSON. A
rule takes that JSON as a param, so changing a key reruns the jobs that read it and no other.
GRPO branches are reward sets (optionally seeded, ``"acc+fmt+sal@2"``); decode branches are
(model, source, strategy), the strategy optionally seeded too (``"sgrs@3"``: its own decode
with seed 3, for the strategies that sample), and a decode branch's JSON holds only the keys
its strategy uses.

Only the standard library at import (the Snakefile imports this before any job runs); the
decode strategies' names come from :mod:`lookright.decoding.params` (no torch) when asked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

GRPO_SHARED_KEYS = ("reward_sets", "run_reward_sets", "reward_options", "reward_set_options")
DECODE_SHARED_KEYS = ("run_strategies", "run_sources", "sgrs", "locore", "num_beams")
EVALUATE_ANSWERS_KEYS = ("chair",)
MODEL_REWARDS = ("saliency_alignment", "region_attention")
REWARD_MODULES = {
    "accuracy": "lookright.rewards.accuracy",
    "format": "lookright.rewards.format",
    "saliency_alignment": "lookright.rewards.saliency",
    "region_attention": "lookright.rewards.region_attention",
}
"""The module of each reward (the rewards' registry loads them by name at run time)."""


def canonical(config: Mapping[str, Any]) -> str:
    """Canonical JSON: sorted keys, no spaces (equal configs give equal strings)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def model_entry(config: Mapping[str, Any], model: str) -> dict[str, Any]:
    """One entry of ``models`` with its name, as the ``model`` section of a stage."""
    if model not in config["models"]:
        raise ValueError(
            f"model {model!r} is not defined under 'models'; defined: {sorted(config['models'])}"
        )
    return {**config["models"][model], "name": model}


def stage_config(config: Mapping[str, Any], *sections: str, model: str | None = None) -> str:
    """The seed, the named sections and (given ``model``) its entry, as canonical JSON."""
    chosen: dict[str, Any] = {name: config[name] for name in ("seed", *sections)}
    if model is not None:
        chosen["model"] = model_entry(config, model)
    return canonical(chosen)


def split_seeded(branch: str, kind: str = "reward set") -> tuple[str, int | None]:
    """``"acc+fmt+sal@2"`` -> ``("acc+fmt+sal", 2)``: a branch of that reward set (or decode
    strategy) with seed 2, its own run from the same checkpoint; without ``@N`` the global
    seed applies."""
    name, sep, seed = branch.rpartition("@")
    if not sep:
        return branch, None
    if not seed.isdigit():
        raise ValueError(f"{kind} branch {branch!r}: the part after '@' must be a seed (integer)")
    return name, int(seed)


def split_strategy(branch: str) -> tuple[str, int | None]:
    """A decode branch ``"sgrs@3"`` -> ``("sgrs", 3)``; only a strategy that samples takes a
    seed (a seed would change nothing in the others' output)."""
    from lookright.decoding.params import SEEDED_STRATEGIES, STRATEGIES

    strategy, seed = split_seeded(branch, "decode strategy")
    if strategy not in STRATEGIES:
        raise ValueError(f"decode strategy {branch!r}: not one of {list(STRATEGIES)}")
    if seed is not None and strategy not in SEEDED_STRATEGIES:
        raise ValueError(
            f"decode strategy {branch!r}: {strategy} does not sample, a seed changes nothing; "
            f"seeded branches are for {list(SEEDED_STRATEGIES)}"
        )
    return strategy, seed


def grpo_rewards_used(config: Mapping[str, Any], reward_set: str) -> list[str]:
    """Reward names a branch computes: its set, plus the monitored alignment if enabled."""
    base = split_seeded(reward_set)[0]
    section = config["grpo"]
    if base not in section["reward_sets"]:
        raise ValueError(
            f"reward set {base!r} is not defined under grpo.reward_sets; "
            f"defined: {sorted(section['reward_sets'])}"
        )
    used = list(section["reward_sets"][base])
    if section.get("monitor_alignment") and "saliency_alignment" not in used:
        used.append("saliency_alignment")
    return used


def grpo_config(config: Mapping[str, Any], model: str, reward_set: str) -> str:
    """A GRPO branch's stage config: its own reward set and only the options it uses."""
    section = config["grpo"]
    base, seed = split_seeded(reward_set)
    branch = {k: v for k, v in section.items() if k not in GRPO_SHARED_KEYS}
    branch["reward_set"] = reward_set
    branch["rewards"] = dict(section["reward_sets"][base])
    options = section.get("reward_options", {})
    overrides = section.get("reward_set_options", {}).get(base, {})
    branch["reward_options"] = {
        name: {**options.get(name, {}), **overrides.get(name, {})}
        for name in grpo_rewards_used(config, reward_set)
        if name in options or name in overrides
    }
    chosen = {
        "seed": config["seed"] if seed is None else seed,
        "model": model_entry(config, model),
        "grpo": branch,
    }
    return canonical(chosen)


def grpo_modules(config: Mapping[str, Any], reward_set: str) -> list[str]:
    """The modules a GRPO branch runs beyond its stage's imports: its rewards'."""
    return [REWARD_MODULES[name] for name in grpo_rewards_used(config, reward_set)]


def decode_config(config: Mapping[str, Any], model: str, branch: str) -> str:
    """A decode branch's stage config: the shared keys, those of its strategy only, and its
    seed (``"sample@2"``: 2; else the global seed)."""
    strategy, seed = split_strategy(branch)
    section = config["decode"]
    branch = {k: v for k, v in section.items() if k not in DECODE_SHARED_KEYS}
    scored = section.get("token_saliency", True) and strategy != "beam"
    if strategy == "beam":
        branch["num_beams"] = section["num_beams"]
        branch.pop("token_saliency", None)
    sgrs = section.get("sgrs", {})
    if strategy in ("sgrs", "sgrs+locore"):
        branch["sgrs"] = sgrs
    else:
        picked = {}
        if strategy == "sample" and "top_k" in sgrs:
            picked["top_k"] = sgrs["top_k"]
        if scored and "layers" in sgrs:  # the layers that score the baselines' tokens
            picked["layers"] = sgrs["layers"]
        if picked:
            branch["sgrs"] = picked
    if strategy in ("locore", "sgrs+locore"):
        branch["locore"] = section.get("locore", {})
    chosen = {
        "seed": config["seed"] if seed is None else seed,
        "model": model_entry(config, model),
        "decode": branch,
    }
    return canonical(chosen)


def evaluate_config(config: Mapping[str, Any], model: str, keys: Iterable[str], keep: bool) -> str:
    """The ``evaluate`` keys an evaluation reads: ``keys`` (``keep``) or all but them."""
    keys = set(keys)
    section = {k: v for k, v in config.get("evaluate", {}).items() if (k in keys) == keep}
    chosen = {"seed": config["seed"], "model": model_entry(config, model), "evaluate": section}
    return canonical(chosen)


def evaluate_saliency_config(config: Mapping[str, Any], model: str) -> str:
    return evaluate_config(config, model, EVALUATE_ANSWERS_KEYS, keep=False)


def evaluate_answers_config(config: Mapping[str, Any], model: str) -> str:
    return evaluate_config(config, model, EVALUATE_ANSWERS_KEYS, keep=True)


def decode_strategies() -> tuple[str, ...]:
    """The decoding strategies' names, from the decoding package's registry."""
    from lookright.decoding.params import STRATEGIES

    return STRATEGIES


def decode_strategy_pattern() -> str:
    """The regular expression of a decode branch: a strategy, ``@<seed>`` for one that samples
    (the ``strategy`` wildcard's constraint and the config schema's pattern)."""
    from lookright.decoding.params import SEEDED_STRATEGIES

    fixed = [s for s in decode_strategies() if s not in SEEDED_STRATEGIES]
    seeded = [re.escape(s) for s in SEEDED_STRATEGIES]
    return f"(?:{'|'.join(map(re.escape, fixed))}|(?:{'|'.join(seeded)})(?:@[0-9]+)?)"


def decode_sources(config: Mapping[str, Any]) -> list[str]:
    """``sft`` and ``grpo-<reward set>`` of every GRPO branch (or ``decode.run_sources``)."""
    sources = config["decode"].get("run_sources")
    if sources is None:
        sources = ["sft"] + [f"grpo-{r}" for r in config["grpo"].get("run_reward_sets", [])]
    return list(sources)


def ablation_params(config: Mapping[str, Any], wildcards: Mapping[str, str]) -> dict[str, Any]:
    """The values that line the ablations up in MLflow: model, source, reward set, GRPO seed,
    strategy and decode seed (when the job has a strategy)."""
    source = wildcards["source"]
    reward_set, seed = ("none", None) if source == "sft" else split_seeded(source[len("grpo-") :])
    pairs: dict[str, Any] = {
        "model": wildcards["model"],
        "source": source,
        "reward_set": reward_set,
        "grpo_seed": config["seed"] if seed is None else seed,
    }
    if "strategy" in wildcards:
        strategy, decode_seed = split_strategy(wildcards["strategy"])
        pairs["strategy"] = strategy
        pairs["decode_seed"] = config["seed"] if decode_seed is None else decode_seed
    return pairs
