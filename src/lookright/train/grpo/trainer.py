"""GRPO with lookright's rewards on TRL's GRPOTrainer: prompts, rewards, trainer.

Why any rollout engine works: the model-based rewards read the CURRENT policy through one
teacher-forced forward over prompt + the rollout's completion token ids (the saliency
engine's row pass), not through attention matrices returned by generation. TRL's HF
``generate`` path and its vLLM modes (``grpo.use_vllm``, on clusters) are therefore
interchangeable: vLLM only has to return the token ids it sampled. A NaN/inf reward or loss
stops the run with a clear message before anything is saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from lookright.config import ConfigError
from lookright.rewards import (
    MODEL_REWARDS,
    AccuracyReward,
    FormatReward,
    LlmJudge,
    Policy,
    RewardFunction,
    reward_class,
)
from lookright.train.common import (
    ConvertedCheckpointResume,
    NonFiniteLossError,
    lora_config,
    run_arguments,
)
from lookright.train.datasets import STAGE_ROLE, load_samples, rgb_image_feature
from lookright.train.grpo.config import (
    AccuracyOptions,
    GrpoSection,
    RegionAttentionOptions,
    RewardOptions,
    SaliencyAlignmentOptions,
    check_grpo_section,
    reward_weights,
)
from lookright.train.grpo.recorder import SampleRecorder


def build_reward(name: str, options: RewardOptions, policy: Policy | None) -> RewardFunction:
    """One reward function from its options (model rewards need the policy).

    Model rewards are loaded by name from the rewards' registry, so a branch imports only the
    rewards it computes (and its rule's fingerprint covers exactly those).
    """
    if name == "accuracy":
        judge_cfg = (options.accuracy or AccuracyOptions()).judge
        judge = None
        if judge_cfg.enabled:
            judge = LlmJudge(
                judge_cfg.url,
                judge_cfg.model,
                judge_cfg.api_key_env,
                judge_cfg.timeout_s,
                judge_cfg.max_retries,
            )
            judge.check()
        return AccuracyReward(judge)
    if name == "format":
        return FormatReward()
    if policy is None:
        raise ValueError(f"reward {name!r} needs the policy")
    if name == "saliency_alignment":
        sal = options.saliency_alignment or SaliencyAlignmentOptions()
        return reward_class(name)(policy, sal.method, sal.batch_size)
    if name == "region_attention":
        ra = options.region_attention or RegionAttentionOptions()
        return reward_class(name)(policy, ra.rho, ra.layers, ra.eps, ra.batch_size)
    raise ValueError(f"unknown reward {name!r}")


# -- data --------------------------------------------------------------------------------


def grpo_prompts(data_dir: str | Path, section: GrpoSection) -> pa.Table:
    """The train samples GRPO prompts with: tasks ``grpo.task_mix``, role ``rl``.

    When the branch computes a reward that needs the evidence box (Saliency-R1's
    saliency_alignment, SAYO's region_attention, also as a monitored metric), every prompt
    must have one: a prompt without a box gets no such reward (NaN), so a mix of the 8k boxed
    saliency-r1-8k rows with the 200k cold-start rows would leave most prompts unrewarded.
    """
    role = STAGE_ROLE["grpo"]
    train = load_samples(data_dir, "train", section.task_mix, [role])
    if train.num_rows == 0:
        raise ConfigError(
            f"grpo: no train samples of tasks {section.task_mix} with role {role!r} in "
            f"{data_dir}; give the reader entry of the RL prompts roles: [{role}, ...]"
        )
    used = set(reward_weights(section)) | (
        {"saliency_alignment"} if section.monitor_alignment else set()
    )
    box_rewards = sorted(used & MODEL_REWARDS)
    if box_rewards:
        no_box = [
            s
            for s, b in zip(*train.select(["sample_id", "boxes"]).to_pydict().values(), strict=True)
            if not b
        ]
        if no_box:
            raise ConfigError(
                f"grpo: {len(no_box)} of {train.num_rows} prompts (role {role!r}) have no "
                f"evidence box, which the reward(s) {box_rewards} need (e.g. {no_box[:3]}); "
                "give roles [rl] only to reader entries whose rows have boxes"
            )
    return train


def grpo_dataset(table: pa.Table) -> Any:
    """GRPO prompts with the columns the rewards read, images decoded lazily (PNG bytes).

    ``prompt`` is conversational with the question as plain text (TRL inserts the image
    placeholder); ``images`` is a ``Sequence(Image)`` of Arrow bytes; ``question``,
    ``answer``, ``boxes`` (normalised x1,y1,x2,y2), ``width``, ``height``, ``sample_id``,
    ``task`` reach the reward functions as keyword arguments.
    """
    import datasets

    rows = table.select(
        ["sample_id", "task", "question", "answer", "boxes", "width", "height"]
    ).to_pylist()
    features = datasets.Features(
        {
            "sample_id": datasets.Value("string"),
            "task": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "images": datasets.Sequence(rgb_image_feature()),
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
        }
    )
    columns = {key: [r[key] for r in rows] for key in rows[0]} if rows else {}
    columns["images"] = [[{"bytes": b, "path": None}] for b in table["image_bytes"].to_pylist()]
    columns["prompt"] = [[{"role": "user", "content": r["question"]}] for r in rows]
    return datasets.Dataset.from_dict(columns, features=features)


# -- trainer -----------------------------------------------------------------------------


def _trainer_class():
    from trl import GRPOTrainer

    class LookrightGRPOTrainer(ConvertedCheckpointResume, GRPOTrainer):
        """TRL's GRPOTrainer that stops on a non-finite loss before the optimizer step (and
        resumes full-model checkpoints with their weights, see the mixin)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            if not torch.isfinite(loss).all():
                raise NonFiniteLossError(
                    f"non-finite GRPO loss {loss.item()} at step {self.state.global_step + 1}; "
                    f"stopping before the optimizer step, the last good checkpoint in "
                    f"{self.args.output_dir} is kept (lower grpo.learning_rate?)"
                )
            return loss

    return LookrightGRPOTrainer


def grpo_args(section: GrpoSection, seed: int, output_dir: Path, weights: list[float]):
    from trl import GRPOConfig

    return GRPOConfig(
        **run_arguments(
            output_dir,
            seed=seed,
            steps=section.steps,
            save_steps=section.save_steps,
            logging_steps=section.logging_steps,
        ),
        per_device_train_batch_size=section.batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        num_generations=section.num_generations,
        max_completion_length=section.max_completion_length,
        temperature=section.temperature,
        top_p=section.top_p,
        learning_rate=section.learning_rate,
        lr_scheduler_type=section.lr_scheduler_type,
        beta=section.beta,
        loss_type=section.loss_type,
        scale_rewards=section.scale_rewards,
        num_iterations=section.num_iterations,
        reward_weights=weights,
        use_vllm=section.use_vllm,
        vllm_mode=section.vllm_mode,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        log_completions=True,  # per-step tables, logged to MLflow (recorder.CompletionTables)
        num_completions_to_print=2,
        log_multimodal=False,
    )


@dataclass
class GrpoSetup:
    """Everything :func:`build_trainer` builds before training (exposed for tests/benchmarks)."""

    trainer: Any
    policy: Policy
    recorder: SampleRecorder
    names: list[str]
    weights: list[float]
    adapter: Any
    processor: Any


def build_trainer(
    section: GrpoSection,
    seed: int,
    model: Any,
    processor: Any,
    dataset: Any,
    out_dir: Path,
    callbacks: list | None = None,
) -> GrpoSetup:
    """The GRPO trainer of one reward set, its rewards bound to the trained policy."""
    from lookright.models.base import adapter_for

    weights = check_grpo_section(section)
    adapter = adapter_for(model)
    adapter.configure_processor(processor)
    if section.monitor_alignment and "saliency_alignment" not in weights:
        weights["saliency_alignment"] = 0.0  # logged, not rewarded
    policy = Policy(None, processor)
    rewards = [build_reward(n, section.reward_options, policy) for n in weights]
    names, values = list(weights), list(weights.values())
    recorder = SampleRecorder(names, values, out_dir / "samples_by_step")
    trainer = _trainer_class()(
        model=model,
        reward_funcs=[recorder.wrap(r) for r in rewards],
        args=grpo_args(section, seed, out_dir / "checkpoints", values),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(section.lora, model, adapter),
        callbacks=callbacks or [],
    )
    policy.bind_trainer(trainer)
    recorder.rank = trainer.accelerator.process_index
    return GrpoSetup(trainer, policy, recorder, names, values, policy.adapter, processor)
