"""Stage ``sft``: supervised fine-tuning on the ``<think>...</think>answer`` format.

    lookright sft --data results/data --base <checkpoint or hub id> --out results/sft/<model>

Writes ``model/``, ``metrics.json`` and ``val_predictions.parquet`` (:mod:`lookright.stages.sft`);
``sft.min_accuracy`` fails the job after writing them when the held-out accuracy is below it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lookright.completion import is_well_formed
from lookright.config import ConfigError, ModelSection, SftSection, TrackingConfig
from lookright.stages.pretrain import TrainingStage

# torch, TRL and the training code are imported by the functions that use them, so that
# ``lookright sft --help`` and a config error cost no heavy import.


@dataclass
class SftConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    sft: SftSection = field(default_factory=SftSection)


def sft_target(row: dict) -> str:
    """The CoT target when the sample has one, else the plain answer."""
    return row["cot"] or row["answer"]


def run_sft(
    cfg: SftConfig, base: str, data_dir: str | Path, out_dir: str | Path, run: Any
) -> dict[str, Any]:
    from trl import SFTConfig

    from lookright.launch import is_main_process
    from lookright.models import load_model
    from lookright.train.common import (
        MlflowStepLogger,
        ResumableSFTTrainer,
        check_min_accuracy,
        checkpoint_step,
        freeze_vision_encoder,
        lora_config,
        master_weights,
        require_gate_rows,
        restore_dtype,
        resumable_checkpoint,
        run_arguments,
        train_or_restore,
    )
    from lookright.train.datasets import (
        STAGE_ROLE,
        conversational_dataset,
        count_samples,
        load_samples,
    )

    section = cfg.sft
    out_dir = Path(out_dir)
    loaded = load_model(base, family=cfg.model.family if cfg.model.base != "pretrain" else None)
    model, processor, adapter = loaded.model, loaded.processor, loaded.adapter
    checkpoint_dtype = master_weights(model, trains_base_weights=not section.lora.enabled)
    if section.freeze_vision:
        freeze_vision_encoder(model, adapter)
    role = STAGE_ROLE["sft"]
    n_val = count_samples(data_dir, "val", ["vqa"], [role])
    require_gate_rows("sft", section.min_accuracy, n_val, f"split val, task vqa, role {role}")
    train = load_samples(data_dir, "train", section.task_mix, [role])
    if train.num_rows == 0:
        raise ConfigError(
            f"sft: no train samples of tasks {section.task_mix} with role {role!r} in "
            f"{data_dir}; give the SFT cold-start reader entry roles: [{role}]"
        )
    run.log_params({"n_train_samples": train.num_rows})
    dataset = conversational_dataset(train, sft_target)
    checkpoints = out_dir / "checkpoints"
    args = SFTConfig(
        **run_arguments(
            checkpoints,
            seed=cfg.seed,
            steps=section.steps,
            save_steps=section.save_steps,
            logging_steps=section.logging_steps,
        ),
        per_device_train_batch_size=section.batch_size,
        gradient_accumulation_steps=section.gradient_accumulation_steps,
        learning_rate=section.learning_rate,
        max_length=None,
        dataloader_num_workers=0,
        gradient_checkpointing=section.gradient_checkpointing,
    )
    trainer = ResumableSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=lora_config(section.lora, model, adapter),
        callbacks=[MlflowStepLogger(run)],
    )
    resume = resumable_checkpoint(checkpoints, cfg, [base, Path(data_dir) / "samples.parquet"])
    started = time.perf_counter()
    train_or_restore(trainer, resume, section.steps)
    train_seconds = time.perf_counter() - started
    if not is_main_process():  # multi-process launch: rank 0 saves, evaluates and logs
        return {}
    trained = trainer.model
    if section.lora.enabled:
        trained = trained.merge_and_unload()
    trained = restore_dtype(trained, checkpoint_dtype)
    model_dir = out_dir / "model"
    trained.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    metrics = evaluate_sft(cfg, trained, processor, adapter, data_dir, out_dir)
    metrics |= {
        "train_seconds": train_seconds,
        "resumed_from_step": checkpoint_step(resume),
        "world_size": trainer.args.world_size,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    check_min_accuracy(
        "sft",
        metrics["val_vqa_accuracy"],
        section.min_accuracy,
        "the answer after </think> must match; see val_predictions.parquet",
        n_val=metrics["n_val"],
    )
    return metrics


def evaluate_sft(cfg: SftConfig, model, processor, adapter, data_dir, out_dir) -> dict[str, float]:
    """Held-out VQA accuracy (answer after ``</think>``) and the rate of well-formed outputs."""
    from lookright.io import write_rows
    from lookright.train.common import PREDICTIONS, held_out_predictions
    from lookright.train.datasets import STAGE_ROLE, load_subsample

    rows = load_subsample(
        data_dir, "val", ["vqa"], [STAGE_ROLE["sft"]], cfg.sft.eval_samples, cfg.seed
    ).to_pylist()
    records, accuracy = held_out_predictions(
        model, processor, adapter, rows, [r["answer"] for r in rows], "vqa",
        max_new_tokens=cfg.sft.max_new_tokens,
    )  # fmt: skip
    predictions = [r["prediction"] for r in records]
    write_rows(records, PREDICTIONS, Path(out_dir) / "val_predictions.parquet")
    formatted = [is_well_formed(p) for p in predictions]
    return {
        "val_vqa_accuracy": accuracy,
        "val_format_rate": sum(formatted) / max(1, len(formatted)),
        "n_val": len(rows),
    }


# -- the stage ----------------------------------------------------------------------


class Sft(TrainingStage):
    name: ClassVar[str] = "sft"
    help: ClassVar[str] = "supervised fine-tuning on the CoT format"

    def config_class(self) -> type:
        return SftConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--base", required=True, help="base checkpoint folder or hub id")

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        metrics = run_sft(cfg, args.base, args.data, args.out, run)
        self.tag_checkpoint(run, args)
        return metrics

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"sft: held-out VQA accuracy {result['val_vqa_accuracy']:.3f}, "
            f"format rate {result['val_format_rate']:.3f} -> {args.out}/model"
        )


STAGE = Sft()
