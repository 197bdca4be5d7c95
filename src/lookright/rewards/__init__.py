"""GRPO rewards, as callables in TRL's reward signature.

Registry names (the keys of a reward set in ``grpo.reward_sets``):

* ``accuracy``: normalised exact match with the reference answer (optional LLM judge);
* ``format``: exactly one ``<think>``, one ``</think>``, non-empty thought and answer;
* ``saliency_alignment``: Saliency-R1, alignment of the CoT-bottleneck logit-decomposition
  map with the evidence box(es);
* ``region_attention``: SAYO, attention of the high-entropy tokens to the box region.

Short aliases name reward sets by their parts (``acc+fmt+sal``): ``acc``, ``fmt``, ``sal``,
``sayo``. Every function returns one float per completion or ``None`` ("not applicable",
skipped by TRL), never a silent 0 for something it could not compute, and raises
:class:`NonFiniteRewardError` on NaN/inf.
"""

from __future__ import annotations

from lookright.lazy import lazy_exports
from lookright.rewards.accuracy import AccuracyReward, JudgeUnavailableError, LlmJudge
from lookright.rewards.base import (
    NonFiniteRewardError,
    RewardFunction,
    check_rewards,
    completion_text,
)
from lookright.rewards.format import FormatReward

# The model-based rewards import the saliency engine; they load on first use, so importing
# the text rewards stays light.
_LAZY = {
    "Policy": "lookright.rewards.policy",
    "lora_effective_o_proj": "lookright.rewards.policy",
    "share_image_features": "lookright.rewards.policy",
    "SaliencyAlignmentReward": "lookright.rewards.saliency",
    "RegionAttentionReward": "lookright.rewards.region_attention",
    "focus_mask": "lookright.rewards.region_attention",
    "region_attention_reward": "lookright.rewards.region_attention",
    "region_rows": "lookright.rewards.region_attention",
}
REWARDS: dict[str, str] = {
    "accuracy": "AccuracyReward",
    "format": "FormatReward",
    "saliency_alignment": "SaliencyAlignmentReward",
    "region_attention": "RegionAttentionReward",
}
MODEL_REWARDS = frozenset({"saliency_alignment", "region_attention"})
ALIASES = {
    "acc": "accuracy",
    "fmt": "format",
    "sal": "saliency_alignment",
    "sayo": "region_attention",
}


__getattr__ = lazy_exports(__name__, _LAZY)


def reward_class(name: str) -> type[RewardFunction]:
    """The class of a reward by registry name or alias."""
    return globals().get(REWARDS[canonical_reward(name)]) or __getattr__(
        REWARDS[canonical_reward(name)]
    )


def canonical_reward(name: str) -> str:
    """Registry name of a reward or alias; a clear error lists the valid ones."""
    name = ALIASES.get(name, name)
    if name not in REWARDS:
        raise ValueError(
            f"unknown reward {name!r}; valid rewards: {sorted(REWARDS)} "
            f"(aliases: {', '.join(f'{k}={v}' for k, v in ALIASES.items())})"
        )
    return name


def parse_reward_set(name: str) -> dict[str, float]:
    """``"acc+fmt+sal"`` -> ``{"accuracy": 1.0, "format": 1.0, "saliency_alignment": 1.0}``."""
    parts = [p.strip() for p in name.split("+") if p.strip()]
    if not parts:
        raise ValueError(f"reward set {name!r} names no reward")
    return {canonical_reward(p): 1.0 for p in parts}


__all__ = [
    "ALIASES",
    "MODEL_REWARDS",
    "REWARDS",
    "AccuracyReward",
    "FormatReward",
    "JudgeUnavailableError",
    "LlmJudge",
    "NonFiniteRewardError",
    "Policy",
    "RegionAttentionReward",
    "RewardFunction",
    "SaliencyAlignmentReward",
    "canonical_reward",
    "check_rewards",
    "completion_text",
    "focus_mask",
    "lora_effective_o_proj",
    "parse_reward_set",
    "region_attention_reward",
    "region_rows",
    "reward_class",
    "share_image_features",
]
