"""Stage ``grpo``: GRPO with Saliency-R1's saliency-alignment and SAYO's region-attention rewards.

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

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lookright.config import (
    ConfigError,
    LoraSection,
    ModelSection,
    TrackingConfig,
    load_stage_config,
)
from lookright.rewards import (
    MODEL_REWARDS,
    AccuracyReward,
    FormatReward,
    JudgeUnavailableError,
    LlmJudge,
    NonFiniteRewardError,
    Policy,
    RegionAttentionReward,
    RewardFunction,
    SaliencyAlignmentReward,
    canonical_reward,
    completion_text,
    has_think_format,
    parse_reward_set,
)
from lookright.rewards.saliency import ALIGNMENT_METHODS
from lookright.train.common import (
    PREDICTIONS,
    ConvertedCheckpointResume,
    MlflowStepLogger,
    NonFiniteLossError,
    checkpoint_step,
    greedy_answers,
    lora_config,
    master_weights,
    restore_dtype,
    resumable_checkpoint,
    run_arguments,
    train_or_restore,
)
from lookright.train.datasets import (
    RGB_IMAGE,
    STAGE_ROLE,
    decode_image,
    load_samples,
    load_subsample,
)

# -- config ------------------------------------------------------------------------------


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


@dataclass
class GrpoConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)


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


def check_grpo_config(cfg: GrpoConfig) -> dict[str, float]:
    """Validate what TRL or the rewards would reject late; returns the reward weights.

    Also normalises ``grpo.reward_options``: defaults for the rewards the branch computes
    (its set, plus the monitored alignment), None for the others.
    """
    section = cfg.grpo
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


# -- rewards -----------------------------------------------------------------------------


def build_reward(name: str, options: RewardOptions, policy: Policy | None) -> RewardFunction:
    """One reward function from its options (model rewards need the policy)."""
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
        return SaliencyAlignmentReward(policy, sal.method, sal.batch_size)
    if name == "region_attention":
        ra = options.region_attention or RegionAttentionOptions()
        return RegionAttentionReward(policy, ra.rho, ra.layers, ra.eps, ra.batch_size)
    raise ValueError(f"unknown reward {name!r}")


class SampleRecorder:
    """Wraps the reward functions of a batch and writes every rollout with its rewards.

    TRL calls the reward functions one after the other on the same batch; when the last one
    has answered, the batch's rows (step, sample, prompt, completion, each reward, the
    weighted total) go to ``folder/step-NNNNNN-rankR.parquet``. A step replayed after a
    resume overwrites its file; :meth:`merge` writes the single ``samples.parquet`` (the
    per-step files stay, so a re-run that only redoes the evaluation still has them).
    """

    def __init__(self, names: list[str], weights: list[float], folder: str | Path) -> None:
        self.names, self.weights = names, weights
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = 0  # the process index under multi-GPU training (one file per process)
        self._pending: dict[str, list[float | None]] = {}
        self._context: dict[str, Any] | None = None

    def schema(self) -> pa.Schema:
        fields = [
            ("step", pa.int64()),
            ("sample_id", pa.string()),
            ("question", pa.string()),
            ("answer", pa.string()),
            ("completion", pa.string()),
            ("completion_tokens", pa.int64()),
            ("reward", pa.float64()),
        ]
        fields += [(f"reward_{n}", pa.float64()) for n in self.names]
        return pa.schema(fields)

    def wrap(self, function: RewardFunction) -> Callable:
        recorder, name = self, function.name

        def recorded(prompts, completions, completion_ids=None, **kwargs):
            values = function(prompts, completions, completion_ids, **kwargs)
            recorder._collect(name, values, prompts, completions, completion_ids, kwargs)
            return values

        recorded.__name__ = name
        return recorded

    def _collect(self, name, values, prompts, completions, completion_ids, kwargs) -> None:
        if not self._pending:
            n = len(completions)
            state = kwargs.get("trainer_state")
            self._context = {
                "step": int(state.global_step) if state is not None else 0,
                "sample_id": list(kwargs.get("sample_id") or [None] * n),
                "question": list(kwargs.get("question") or [None] * n),
                "answer": list(kwargs.get("answer") or [None] * n),
                "completion": [completion_text(c) for c in completions],
                "completion_tokens": [
                    len(c) if c is not None else None for c in (completion_ids or [None] * n)
                ],
            }
        self._pending[name] = list(values)
        if len(self._pending) == len(self.names):
            self._flush()

    def _flush(self) -> None:
        context = self._context or {}
        columns = dict(context)
        columns["step"] = [context["step"]] * len(context["completion"])
        totals = []
        for k in range(len(context["completion"])):
            parts = [
                w * self._pending[n][k]
                for n, w in zip(self.names, self.weights, strict=True)
                if self._pending[n][k] is not None
            ]
            totals.append(float(sum(parts)) if parts else None)
        columns["reward"] = totals
        for name in self.names:
            columns[f"reward_{name}"] = self._pending[name]
        table = pa.table(columns, schema=self.schema())
        name = f"step-{context['step']:06d}-rank{self.rank}.parquet"
        pq.write_table(table, self.folder / name)
        self._pending, self._context = {}, None

    def merge(self, path: str | Path) -> int:
        """Concatenate the per-step files into ``path``; returns the number of rows."""
        parts = sorted(self.folder.glob("step-*.parquet"))
        tables = [pq.read_table(p, schema=self.schema()) for p in parts]
        table = pa.concat_tables(tables) if tables else self.schema().empty_table()
        pq.write_table(table, path)
        return table.num_rows


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
            "images": datasets.Sequence(RGB_IMAGE),
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


def grpo_args(cfg: GrpoConfig, output_dir: Path, weights: list[float]):
    from trl import GRPOConfig

    section = cfg.grpo
    return GRPOConfig(
        **run_arguments(
            output_dir,
            seed=cfg.seed,
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
        log_completions=False,
    )


@dataclass
class GrpoSetup:
    """Everything :func:`run_grpo` builds before training (exposed for tests/benchmarks)."""

    trainer: Any
    policy: Policy
    recorder: SampleRecorder
    names: list[str]
    weights: list[float]
    adapter: Any
    processor: Any


def build_trainer(
    cfg: GrpoConfig,
    model: Any,
    processor: Any,
    dataset: Any,
    out_dir: Path,
    callbacks: list | None = None,
) -> GrpoSetup:
    """The GRPO trainer of one reward set, its rewards bound to the trained policy."""
    from lookright.models.base import adapter_for

    section = cfg.grpo
    weights = check_grpo_config(cfg)
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
        args=grpo_args(cfg, out_dir / "checkpoints", values),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(section.lora, model, adapter),
        callbacks=callbacks or [],
    )
    policy.bind_trainer(trainer)
    recorder.rank = trainer.accelerator.process_index
    return GrpoSetup(trainer, policy, recorder, names, values, policy.adapter, processor)


def run_grpo(
    cfg: GrpoConfig, base: str, data_dir: str | Path, out_dir: str | Path, run: Any
) -> dict[str, Any]:
    from lookright.launch import is_main_process
    from lookright.models import load_model

    section = cfg.grpo
    out_dir = Path(out_dir)
    family = None if (Path(base) / "config.json").is_file() else cfg.model.family
    loaded = load_model(base, family=family)
    checkpoint_dtype = master_weights(loaded.model, trains_base_weights=not section.lora.enabled)
    train = grpo_prompts(data_dir, section)
    setup = build_trainer(
        cfg,
        loaded.model,
        loaded.processor,
        grpo_dataset(train),
        out_dir,
        callbacks=[MlflowStepLogger(run)],
    )
    trainer = setup.trainer
    run.log_params(
        {
            "reward_names": ",".join(setup.names),
            "reward_weights": ",".join(f"{w:g}" for w in setup.weights),
            "n_train_samples": train.num_rows,
            "n_trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        }
    )
    resume = resumable_checkpoint(
        out_dir / "checkpoints", cfg, [base, Path(data_dir) / "samples.parquet"]
    )
    started = time.perf_counter()
    train_or_restore(trainer, resume, section.steps)
    train_seconds = time.perf_counter() - started
    if not is_main_process():  # multi-process launch: rank 0 saves, merges, evaluates, logs
        return {}
    trained = trainer.model
    if section.lora.enabled:
        trained = trained.merge_and_unload()
    trained = restore_dtype(trained, checkpoint_dtype)
    model_dir = out_dir / "model"
    trained.save_pretrained(model_dir)
    loaded.processor.save_pretrained(model_dir)
    n_samples = setup.recorder.merge(out_dir / "samples.parquet")
    metrics = evaluate_grpo(cfg, trained, loaded.processor, setup.adapter, data_dir, out_dir)
    metrics |= {
        "train_seconds": train_seconds,
        "resumed_from_step": checkpoint_step(resume),
        "n_rollouts": n_samples,
        "world_size": trainer.args.world_size,
    }
    metrics |= train_reward_summary(trainer.state.log_history, setup.names)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    run.log_params({k: v for k, v in metrics.items() if isinstance(v, str)})
    return metrics


def train_reward_summary(history: list[dict], names: list[str]) -> dict[str, float]:
    """Mean of each reward over the first and last logged steps (learning at a glance)."""
    summary = {}
    for key in ["reward", *[f"rewards/{n}/mean" for n in names]]:
        values = [h[key] for h in history if isinstance(h.get(key), int | float)]
        if values:
            k = max(1, len(values) // 5)
            label = key.replace("rewards/", "").replace("/mean", "").replace("/", "_")
            summary[f"train_{label}_first"] = float(np.mean(values[:k]))
            summary[f"train_{label}_last"] = float(np.mean(values[-k:]))
    return summary


def evaluate_grpo(cfg: GrpoConfig, model, processor, adapter, data_dir, out_dir) -> dict[str, Any]:
    """Held-out VQA: accuracy, format rate and alignment score of greedy answers.

    The alignment uses the branch's ``saliency_alignment`` map (its reward's, or the
    monitored one with ``grpo.monitor_alignment``) and Saliency-R1's ``cot_bottleneck`` in
    branches without it; ``val_alignment_method`` says which.
    """
    from lookright.eval.accuracy import accuracy
    from lookright.eval.localisation import alignment_score
    from lookright.io import write_rows
    from lookright.saliency.api import explain_batch

    rows = load_subsample(
        data_dir, "val", ["vqa"], [STAGE_ROLE["grpo"]], cfg.grpo.eval_samples, cfg.seed
    ).to_pylist()
    if not rows:
        return {"n_val": 0}
    predictions = greedy_answers(
        model, processor, adapter, rows, max_new_tokens=cfg.grpo.max_new_tokens, desc="val"
    )
    options = cfg.grpo.reward_options.saliency_alignment
    method = options.method if options is not None else "cot_bottleneck"
    scores: list[float] = []
    batch = 16
    for start in range(0, len(rows), batch):
        chunk = list(range(start, min(start + batch, len(rows))))
        chunk = [k for k in chunk if rows[k]["boxes"] and predictions[k]]
        if not chunk:
            continue
        maps = explain_batch(
            model,
            processor,
            [decode_image(rows[k]["image_bytes"]) for k in chunk],
            [rows[k]["question"] for k in chunk],
            [predictions[k] for k in chunk],
            [method],
            adapter,
        )[method]
        for k, result in zip(chunk, maps, strict=True):
            if result.has_map:
                score = alignment_score(result.response_map, rows[k]["boxes"], view=result.view)
                if score is not None:
                    scores.append(score)
    records = [
        {
            "sample_id": r["sample_id"],
            "task": "vqa",
            "question": r["question"],
            "reference": r["answer"],
            "prediction": p,
            "correct": None,
        }
        for r, p in zip(rows, predictions, strict=True)
    ]
    write_rows(records, PREDICTIONS, Path(out_dir) / "val_predictions.parquet")
    return {
        "val_vqa_accuracy": accuracy(predictions, [r["answer"] for r in rows]),
        "val_format_rate": float(np.mean([has_think_format(p) for p in predictions])),
        "val_alignment": float(np.mean(scores)) if scores else None,
        "val_alignment_coverage": len(scores) / len(rows),
        "val_alignment_method": method,
        "n_val": len(rows),
    }


# -- CLI ---------------------------------------------------------------------------------


def add_grpo_arguments(parser: argparse.ArgumentParser) -> None:
    """Stage-specific arguments of ``lookright grpo`` (the common ones come from cli.py)."""
    parser.add_argument("--data", required=True, type=Path, help="prepare_data output folder")
    parser.add_argument(
        "--base", required=True, help="policy to start from: the SFT model folder (or a hub id)"
    )


def grpo_main(args: argparse.Namespace) -> int:
    from lookright.stage import data_inputs, fail_if_asked, stage_execution

    cfg = load_stage_config(GrpoConfig, *args.config, *args.config_json)
    check_grpo_config(cfg)  # config errors before the MLflow run opens
    try:
        with stage_execution(
            "grpo",
            cfg,
            out_dir=args.out,
            results_dir=args.results_dir,
            tags={"lookright.reward_set": cfg.grpo.reward_set, **dict(args.tag)},
            upstream=dict(args.upstream),
            resume=True,
            inputs=data_inputs(args.data),
        ) as run:
            fail_if_asked(args, "grpo")
            metrics = run_grpo(cfg, args.base, args.data, args.out, run)
            for name in ("metrics.json", "samples.parquet", "val_predictions.parquet"):
                if (Path(args.out) / name).exists():
                    run.log_artifact(Path(args.out) / name)
            run.set_tags({"lookright.checkpoint": str((Path(args.out) / "model").resolve())})
    except (NonFiniteRewardError, NonFiniteLossError, JudgeUnavailableError) as error:
        print(f"lookright grpo: error: {error}", file=sys.stderr)
        return 1
    from lookright.launch import is_main_process

    if not is_main_process():  # multi-process launch: rank 0 reports
        return 0
    alignment = metrics.get("val_alignment")
    print(
        f"grpo[{cfg.grpo.reward_set}]: held-out VQA accuracy {metrics.get('val_vqa_accuracy')}, "
        f"format rate {metrics.get('val_format_rate')}, alignment {alignment} -> {args.out}/model"
    )
    return 0


__all__ = [
    "MODEL_REWARDS",
    "GrpoConfig",
    "GrpoSection",
    "SampleRecorder",
    "add_grpo_arguments",
    "build_trainer",
    "grpo_dataset",
    "grpo_main",
    "reward_weights",
    "run_grpo",
]
