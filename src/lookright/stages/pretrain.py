"""Stage ``pretrain``: a tiny base VLM trained from scratch (the embedded default's stand-in
for a pretrained checkpoint).

    lookright pretrain --data results/data --out results/pretrain/<model>

Writes ``model/`` (``save_pretrained``), ``metrics.json`` and ``val_predictions.parquet``
(:mod:`lookright.stages.pretrain`); resumes from its last checkpoint after a kill.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from lookright.config import ModelSection, PretrainSection, TrackingConfig
from lookright.stages.base import Stage

if TYPE_CHECKING:
    import pyarrow as pa

# torch, TRL and the training code are imported by the functions that use them, so that
# ``lookright pretrain --help`` and a config error cost no heavy import.


@dataclass
class PretrainConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)


SUBJECT = re.compile(r"(\w+)\?\s*$")


def pretrain_target(row: dict, template: str) -> str:
    """The base model's target: VQA answers through ``template``, other tasks verbatim.

    ``{subject}`` is the question's last word ("What color is the star?" -> "star") and
    ``{answer}`` the reference answer.
    """
    if row["task"] != "vqa":
        return row["answer"]
    match = SUBJECT.search(row["question"])
    subject = match.group(1) if match else ""
    return template.format(subject=subject, shape=subject, answer=row["answer"])


def tokenizer_corpus(table: pa.Table, template: str) -> list[str]:
    rows = table.select(["task", "question", "answer", "cot"]).to_pylist()
    corpus = [r["question"] for r in rows] + [r["answer"] for r in rows]
    corpus += [r["cot"] for r in rows if r["cot"]]
    corpus += [pretrain_target(r, template) for r in rows if r["task"] == "vqa"]
    return corpus


def build_base(cfg: PretrainConfig, train: pa.Table, image_size: int):
    import torch

    from lookright.models import get_adapter
    from lookright.models.base import TinySize
    from lookright.models.tokenizer import train_tokenizer

    adapter = get_adapter(cfg.model.family)
    corpus = tokenizer_corpus(train, cfg.pretrain.answer_template)
    tokenizer = train_tokenizer(
        corpus, adapter.chat_format, cfg.pretrain.vocab_size, cfg.pretrain.prompt_order
    )
    size = TinySize(**vars(cfg.pretrain.tiny))
    torch.manual_seed(cfg.seed)
    model, processor = adapter.build_tiny(tokenizer, size, image_size)
    return adapter, model, processor


def run_pretrain(cfg: PretrainConfig, data_dir: str | Path, out_dir: str | Path, run: Any) -> dict:
    """Train, save ``out_dir/model`` and evaluate held-out VQA accuracy (val split)."""
    from trl import SFTConfig

    from lookright.train.common import (
        MlflowStepLogger,
        ResumableSFTTrainer,
        check_min_accuracy,
        checkpoint_step,
        freeze_vision_encoder,
        require_gate_rows,
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

    section = cfg.pretrain
    out_dir = Path(out_dir)
    role = STAGE_ROLE["pretrain"]
    n_val = count_samples(data_dir, "val", ["vqa"], [role])
    require_gate_rows("pretrain", section.min_accuracy, n_val, f"split val, task vqa, role {role}")
    train = load_samples(data_dir, "train", section.task_mix, [role])
    image_size = int(train["width"][0].as_py())
    adapter, model, processor = build_base(cfg, train, image_size)
    frozen = freeze_vision_encoder(model, adapter) if section.freeze_vision else 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.log_params(
        {
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "n_trainable": trainable,
            "n_frozen": frozen,
            "n_train_samples": train.num_rows,
        }
    )
    dataset = conversational_dataset(train, lambda r: pretrain_target(r, section.answer_template))
    checkpoints = out_dir / "checkpoints"
    args = SFTConfig(
        **run_arguments(
            checkpoints,
            seed=cfg.seed,
            steps=section.steps,
            save_steps=section.save_steps,
            logging_steps=max(1, min(20, section.steps // 10)),
        ),
        per_device_train_batch_size=section.batch_size,
        learning_rate=section.learning_rate,
        lr_scheduler_type=section.lr_scheduler,
        warmup_steps=section.warmup_steps,
        weight_decay=0.0,
        max_length=None,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
    )
    trainer = ResumableSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[MlflowStepLogger(run)],
    )
    resume = resumable_checkpoint(checkpoints, cfg, [Path(data_dir) / "samples.parquet"])
    started = time.perf_counter()
    train_or_restore(trainer, resume, section.steps)
    train_seconds = time.perf_counter() - started
    model_dir = out_dir / "model"
    trainer.model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    metrics = evaluate_base(cfg, trainer.model, processor, adapter, data_dir, out_dir)
    metrics |= {"train_seconds": train_seconds, "resumed_from_step": checkpoint_step(resume)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    check_min_accuracy(
        "pretrain",
        metrics["val_vqa_accuracy"],
        section.min_accuracy,
        "raise pretrain.steps?",
        n_val=metrics["n_val_vqa"],
    )
    return metrics


def evaluate_base(cfg, model, processor, adapter, data_dir, out_dir) -> dict[str, float]:
    """Held-out accuracy: greedy generation vs the pretrain target, exact match."""
    from lookright.io import write_rows
    from lookright.train.common import PREDICTIONS, held_out_predictions
    from lookright.train.datasets import STAGE_ROLE, load_subsample

    section = cfg.pretrain
    metrics: dict[str, float] = {"val_vqa_accuracy": math.nan, "n_val_vqa": 0}
    records = []
    for task in sorted(set(section.task_mix)):
        rows = load_subsample(
            data_dir, "val", [task], [STAGE_ROLE["pretrain"]], section.eval_samples, cfg.seed
        ).to_pylist()
        metrics[f"n_val_{task}"] = len(rows)
        if not rows:
            continue
        references = [pretrain_target(r, section.answer_template) for r in rows]
        max_new = 48 if task == "caption" else 12
        task_records, metrics[f"val_{task}_accuracy"] = held_out_predictions(
            model, processor, adapter, rows, references, task, max_new_tokens=max_new
        )
        records += task_records
    write_rows(records, PREDICTIONS, Path(out_dir) / "val_predictions.parquet")
    return metrics


# -- the stage ----------------------------------------------------------------------


class TrainingStage(Stage):
    """A stage that trains a checkpoint: resumable run, held-out predictions, model path tag."""

    resume: ClassVar[bool] = True
    outputs: ClassVar[tuple[str, ...]] = ("metrics.json", "val_predictions.parquet")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, type=Path, help="prepare_data output folder")

    def tag_checkpoint(self, run: Any, args: argparse.Namespace) -> None:
        run.set_tags({"lookright.checkpoint": str((Path(args.out) / "model").resolve())})


class Pretrain(TrainingStage):
    name: ClassVar[str] = "pretrain"
    help: ClassVar[str] = "train a tiny base VLM from scratch"

    def config_class(self) -> type:
        return PretrainConfig

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        metrics = run_pretrain(cfg, args.data, args.out, run)
        self.tag_checkpoint(run, args)
        return metrics

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"pretrain: held-out VQA accuracy {result['val_vqa_accuracy']:.3f} -> {args.out}/model"
        )


STAGE = Pretrain()
