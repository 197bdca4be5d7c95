"""The ``grpo`` config section: the reward set of a branch, the rewards' options, TRL's knobs.

One dataclass per section, merged over these defaults by the ``grpo`` stage
(:class:`lookright.stages.grpo.GrpoConfig`); :func:`check_grpo_section` rejects, before any
work, what TRL or the rewards would reject late. Reward names come from the rewards'
registry (:mod:`lookright.rewards`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lookright.config import ConfigError, LoraSection
from lookright.rewards import canonical_reward, parse_reward_set
from lookright.rewards.base import ALIGNMENT_METHODS


@dataclass
class JudgeSection:
    """Optional LLM judge for the accuracy reward (paper: GPT-4o-mini, score 1..5)."""

    enabled: bool = False
    url: str | None = None
    model: str = "gpt-4o-mini"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 2


@dataclass
class AccuracyOptions:
    judge: JudgeSection = field(default_factory=JudgeSection)


@dataclass
class SaliencyAlignmentOptions:
    """Saliency-R1: ``method`` cot_bottleneck (paper) or logit_decomposition (ablation)."""

    method: str = "cot_bottleneck"
    batch_size: int = 16


@dataclass
class RegionAttentionOptions:
    """SAYO: top-``rho`` entropy tokens, attention of ``layers`` (reference: last only)."""

    rho: float = 0.3
    layers: list[int] = field(default_factory=lambda: [-1])
    eps: float = 1e-8
    batch_size: int = 16


@dataclass
class RewardOptions:
    """Options of each reward; only those of the branch's own rewards are set (others None).

    :func:`check_grpo_config` fills in the defaults of the rewards a branch uses and clears
    the others, so a run's logged config holds exactly its reward set's options.
    """

    accuracy: AccuracyOptions | None = None
    saliency_alignment: SaliencyAlignmentOptions | None = None
    region_attention: RegionAttentionOptions | None = None


OPTION_TYPES = {
    "accuracy": AccuracyOptions,
    "saliency_alignment": SaliencyAlignmentOptions,
    "region_attention": RegionAttentionOptions,
}


@dataclass
class GrpoSection:
    """Config section ``grpo`` of ONE branch (one reward set).

    The defaults make the tiny embedded model learn in minutes on CPU; the paper's values
    (Saliency-R1: 8 generations, batch 64, KL beta 0.001, LoRA r16, lr 1e-5) are in
    config/cluster.yaml. ``rewards`` maps reward names (or aliases) to weights; empty: every
    part of ``reward_set``'s name (``acc+fmt+sal``) with weight 1.
    """

    reward_set: str = "acc+fmt+sal"
    rewards: dict[str, float] = field(default_factory=dict)
    reward_options: RewardOptions = field(default_factory=RewardOptions)
    monitor_alignment: bool = False
    steps: int = 100
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    num_generations: int = 4
    max_completion_length: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "constant"
    beta: float = 0.001
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    lora: LoraSection = field(default_factory=lambda: LoraSection(enabled=True))
    task_mix: list[str] = field(default_factory=lambda: ["vqa"])
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    save_steps: int = 25
    logging_steps: int = 1
    eval_samples: int = 100
    max_new_tokens: int = 48


def reward_weights(section: GrpoSection) -> dict[str, float]:
    """Canonical reward name -> weight of the branch (ConfigError on unknown names)."""
    try:
        if section.rewards:
            weights = {canonical_reward(k): float(v) for k, v in section.rewards.items()}
        else:
            weights = parse_reward_set(section.reward_set)
    except ValueError as error:
        raise ConfigError(f"grpo.rewards / grpo.reward_set: {error}") from None
    if not weights:
        raise ConfigError(f"grpo: reward set {section.reward_set!r} has no reward")
    bad = {k: v for k, v in weights.items() if not math.isfinite(v)}
    if bad:
        raise ConfigError(f"grpo.rewards: weights must be finite, got {bad}")
    return weights


def check_grpo_section(section: GrpoSection) -> dict[str, float]:
    """Validate what TRL or the rewards would reject late; returns the reward weights.

    Also normalises ``grpo.reward_options``: defaults for the rewards the branch computes
    (its set, plus the monitored alignment), None for the others.
    """
    weights = reward_weights(section)
    used = set(weights) | ({"saliency_alignment"} if section.monitor_alignment else set())
    for name, option_type in OPTION_TYPES.items():
        current = getattr(section.reward_options, name)
        setattr(section.reward_options, name, (current or option_type()) if name in used else None)
    generated = section.batch_size * section.gradient_accumulation_steps
    if section.num_generations < 2 or generated % section.num_generations:
        raise ConfigError(
            f"grpo.num_generations={section.num_generations} must be >= 2 and divide "
            f"grpo.batch_size x gradient_accumulation_steps = {generated}"
        )
    options = section.reward_options
    saliency, region = options.saliency_alignment, options.region_attention
    if saliency is not None and saliency.method not in ALIGNMENT_METHODS:
        raise ConfigError(
            f"grpo.reward_options.saliency_alignment.method={saliency.method!r}; "
            f"valid: {list(ALIGNMENT_METHODS)}"
        )
    if region is not None and not 0 < region.rho <= 1:
        raise ConfigError(
            f"grpo.reward_options.region_attention.rho={region.rho} must be in (0, 1]"
        )
    if region is not None and not region.layers:
        raise ConfigError("grpo.reward_options.region_attention.layers is empty")
    return weights
