"""Stage ``grpo``: GRPO from the SFT checkpoint with one reward set (one branch per set).

    lookright grpo --data results/data --base results/sft/<model>/model \
        --out results/grpo/<model>/<reward_set>

Trains with TRL's GRPOTrainer and lookright's rewards (:mod:`lookright.train.grpo`), writes
``model/`` (LoRA merged), ``samples.parquet`` (every rollout with its rewards),
``metrics.json`` and ``val_predictions.parquet``; resumes after a kill.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lookright.completion import is_well_formed
from lookright.config import ModelSection, TrackingConfig
from lookright.stages.pretrain import TrainingStage
from lookright.train.grpo.config import GrpoSection, check_grpo_section

# torch, TRL and the training code are imported by the functions that use them, so that
# ``lookright grpo --help`` and a config error cost no heavy import.


@dataclass
class GrpoConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)


def run_grpo(
    cfg: GrpoConfig, base: str, data_dir: str | Path, out_dir: str | Path, run: Any
) -> dict[str, Any]:
    from lookright.launch import is_main_process
    from lookright.models import load_model
    from lookright.train.common import (
        MlflowStepLogger,
        checkpoint_step,
        master_weights,
        restore_dtype,
        resumable_checkpoint,
        train_or_restore,
    )
    from lookright.train.grpo import CompletionTables, build_trainer, grpo_dataset, grpo_prompts

    section = cfg.grpo
    out_dir = Path(out_dir)
    family = None if (Path(base) / "config.json").is_file() else cfg.model.family
    loaded = load_model(base, family=family)
    checkpoint_dtype = master_weights(loaded.model, trains_base_weights=not section.lora.enabled)
    train = grpo_prompts(data_dir, section)
    setup = build_trainer(
        section,
        cfg.seed,
        loaded.model,
        loaded.processor,
        grpo_dataset(train),
        out_dir,
        callbacks=[
            MlflowStepLogger(run),
            CompletionTables(run, out_dir / "checkpoints" / "completions"),
        ],
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
    from lookright.io import write_rows
    from lookright.metrics.localisation import alignment_score
    from lookright.saliency.api import explain_batch
    from lookright.train.common import PREDICTIONS, held_out_predictions
    from lookright.train.datasets import STAGE_ROLE, decode_image, load_subsample

    rows = load_subsample(
        data_dir, "val", ["vqa"], [STAGE_ROLE["grpo"]], cfg.grpo.eval_samples, cfg.seed
    ).to_pylist()
    if not rows:
        return {"n_val": 0}
    records, accuracy = held_out_predictions(
        model, processor, adapter, rows, [r["answer"] for r in rows], "vqa",
        max_new_tokens=cfg.grpo.max_new_tokens,
    )  # fmt: skip
    predictions = [r["prediction"] for r in records]
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
    write_rows(records, PREDICTIONS, Path(out_dir) / "val_predictions.parquet")
    return {
        "val_vqa_accuracy": accuracy,
        "val_format_rate": float(np.mean([is_well_formed(p) for p in predictions])),
        "val_alignment": float(np.mean(scores)) if scores else None,
        "val_alignment_coverage": len(scores) / len(rows),
        "val_alignment_method": method,
        "n_val": len(rows),
    }


class Grpo(TrainingStage):
    name: ClassVar[str] = "grpo"
    help: ClassVar[str] = "GRPO with saliency / region-attention rewards"
    outputs: ClassVar[tuple[str, ...]] = (
        "metrics.json",
        "samples.parquet",
        "val_predictions.parquet",
    )

    def config_class(self) -> type:
        return GrpoConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--base", required=True, help="policy to start from: the SFT model folder (or a hub id)"
        )

    def check(self, cfg: Any, args: argparse.Namespace) -> None:
        check_grpo_section(cfg.grpo)

    def tags(self, cfg: Any, args: argparse.Namespace) -> dict[str, str]:
        return {"lookright.reward_set": cfg.grpo.reward_set, **dict(args.tag)}

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        metrics = run_grpo(cfg, args.base, args.data, args.out, run)
        self.tag_checkpoint(run, args)
        return metrics

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"grpo: held-out VQA accuracy {result.get('val_vqa_accuracy')}, format rate "
            f"{result.get('val_format_rate')}, alignment {result.get('val_alignment')} "
            f"-> {args.out}/model"
        )


STAGE = Grpo()
