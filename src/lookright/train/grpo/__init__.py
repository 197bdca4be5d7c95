"""GRPO with Saliency-R1's saliency-alignment and SAYO's region-attention rewards.

Starts from the SFT checkpoint and trains a PEFT LoRA adapter (merged into the saved model)
with TRL's ``GRPOTrainer``; the rewards of one *reward set* (``acc``, ``acc+fmt``,
``acc+fmt+sal``, ``sayo``, ``acc+fmt+sayo``, ...) are callables in TRL's reward signature
(:mod:`lookright.rewards`). Each reward set is its own branch of the DAG:
``results/grpo/{model}/{reward_set}/``.

Why any rollout engine works: the model-based rewards read the CURRENT policy through one
teacher-forced forward over prompt + the rollout's completion token ids (the saliency
engine's row pass), not through attention matrices returned by generation. TRL's HF
``generate`` path (here) and its vLLM modes (``grpo.use_vllm``, on clusters) are therefore
interchangeable: vLLM only has to return the token ids it sampled.

Tracking: TRL's per-step logs (``rewards/<name>/mean|std``, ``reward``, ``kl``,
``completions/mean_length``, ``step_time``, ...) plus the rewards' own metrics
(``alignment_score``, ``time_saliency_alignment_s``, ``time_region_attention_s``) go to
the stage's MLflow run step by step (the tracking store writes ``a/b`` names as ``a_b``).
Every rollout (sample, question, completion, each reward, the weighted total) goes to
``samples.parquet`` (built from ``samples_by_step/``). Re-running after a kill resumes from
the newest checkpoint and continues the same MLflow run. A NaN/inf reward or loss stops the
run with a clear message before anything is saved, so the last good checkpoint is the newest
one on disk.
"""

from __future__ import annotations

from lookright.lazy import lazy_exports

# Loaded on first use: the stage's config (config.py) imports without torch, TRL or PEFT.
_LAZY = {
    "OPTION_TYPES": "lookright.train.grpo.config",
    "AccuracyOptions": "lookright.train.grpo.config",
    "GrpoSection": "lookright.train.grpo.config",
    "JudgeSection": "lookright.train.grpo.config",
    "RegionAttentionOptions": "lookright.train.grpo.config",
    "RewardOptions": "lookright.train.grpo.config",
    "SaliencyAlignmentOptions": "lookright.train.grpo.config",
    "check_grpo_section": "lookright.train.grpo.config",
    "reward_weights": "lookright.train.grpo.config",
    "CompletionTables": "lookright.train.grpo.recorder",
    "SampleRecorder": "lookright.train.grpo.recorder",
    "GrpoSetup": "lookright.train.grpo.trainer",
    "build_reward": "lookright.train.grpo.trainer",
    "build_trainer": "lookright.train.grpo.trainer",
    "grpo_args": "lookright.train.grpo.trainer",
    "grpo_dataset": "lookright.train.grpo.trainer",
    "grpo_prompts": "lookright.train.grpo.trainer",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = sorted(_LAZY)
