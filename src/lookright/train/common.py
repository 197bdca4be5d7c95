"""Pieces shared by the training stages: MLflow logging, checkpoints, held-out accuracy."""

from __future__ import annotations

import math
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTTrainer

from lookright.config import GateError, StageFailure
from lookright.models.base import VLMAdapter
from lookright.train.datasets import decode_image

# Held-out predictions written by the training stages (val_predictions.parquet).
PREDICTIONS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("task", pa.string()),
        ("question", pa.string()),
        ("reference", pa.string()),
        ("prediction", pa.string()),
        ("correct", pa.bool_()),
    ]
)


class NonFiniteLossError(StageFailure):
    """Training produced a NaN/inf loss; the last good checkpoint is kept."""


class MlflowStepLogger(TrainerCallback):
    """Send the trainer's logs to the stage's MLflow run, step by step.

    Also stops training on a non-finite loss (raising after the trainer returns would
    save a poisoned checkpoint first).
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        self.last_time = time.perf_counter()
        self.last_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        numeric = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
        now = time.perf_counter()
        if state.global_step > self.last_step:
            numeric["step_time_s"] = (now - self.last_time) / (state.global_step - self.last_step)
        self.last_time, self.last_step = now, state.global_step
        loss = numeric.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite training loss {loss} at step {state.global_step}; the last good "
                f"checkpoint in {args.output_dir} is kept (lower the learning rate?)"
            )
        self.run.log_metrics(numeric, step=state.global_step)


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder to resume from, or None."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return None
    return get_last_checkpoint(str(checkpoint_dir))


CONFIG_MARKER = "lookright-config-hash.txt"


def input_fingerprint(inputs: Sequence[str | Path]) -> list[str]:
    """What a training run starts FROM, cheaply: for a local file its size and modification
    time; for a folder (a checkpoint) those of its weight, adapter and config files; anything
    else (a hub id) as given. A retrained base or re-prepared data changes it."""
    prints = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(
                f
                for pattern in ("*.safetensors", "*.safetensors.index.json", "*.bin", "config.json")
                for f in path.glob(pattern)
            )
        elif path.is_file():
            files = [path]
        else:
            prints.append(str(item))
            continue
        stats = [(f.name, (st := f.stat()).st_size, st.st_mtime_ns) for f in files]
        prints.append(f"{path.resolve()}:{stats}")
    return prints


def resumable_checkpoint(
    checkpoint_dir: str | Path, cfg: Any, inputs: Sequence[str | Path] = ()
) -> str | None:
    """The newest checkpoint to resume from, only if it was written by the same run.

    "The same run": the same stage config (:func:`lookright.config.config_hash`, without
    ``tracking``) AND the same inputs (:func:`input_fingerprint` of the base checkpoint and
    the data). Their hash is recorded in ``lookright-config-hash.txt``. Checkpoints left by a
    run with another config or another base (the rule reran because a parameter or an
    upstream model changed), or without a record, are deleted with a warning, so the new run
    starts from scratch instead of resuming weights trained for something else (a GRPO
    LoRA adapter of the previous SFT model applied to the new one).
    """
    from lookright.config import config_hash, to_dict
    from lookright.launch import is_main_process

    checkpoint_dir = Path(checkpoint_dir)
    marker = checkpoint_dir / CONFIG_MARKER
    identity = {k: v for k, v in to_dict(cfg).items() if k != "tracking"}
    current = config_hash({**identity, "_inputs": input_fingerprint(inputs)})
    stale = sorted(checkpoint_dir.glob("checkpoint-*")) if checkpoint_dir.is_dir() else []
    recorded = marker.read_text().strip() if marker.is_file() else None
    if stale and recorded != current and is_main_process():
        warnings.warn(
            f"{checkpoint_dir}: deleting {len(stale)} checkpoint(s) written under another "
            f"config or base model (hash {recorded or 'unrecorded'}, now {current}); "
            "training starts over",
            stacklevel=2,
        )
        for folder in stale:
            shutil.rmtree(folder)
    if is_main_process():
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(current + "\n")
    return last_checkpoint(checkpoint_dir)


def run_arguments(
    output_dir: Path, *, seed: int, steps: int, save_steps: int, logging_steps: int
) -> dict[str, Any]:
    """Arguments every training stage gives its TRL config (SFTConfig / GRPOConfig).

    The step budget, checkpoints every ``save_steps`` (the last two kept: enough to resume),
    no third-party reporting (:class:`MlflowStepLogger` logs to the stage's MLflow run), and
    the device: bf16 on CUDA, the CPU otherwise.
    """
    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "save_steps": save_steps,
        "save_total_limit": 2,
        "logging_steps": logging_steps,
        "seed": seed,
        "report_to": [],
        "use_cpu": not cuda,
        "bf16": cuda,
    }


def train_or_restore(trainer: Any, resume: str | None, max_steps: int) -> None:
    """``trainer.train`` resuming from ``resume``; a checkpoint already at ``max_steps`` (a rule
    rerun after the training finished, e.g. for a code change) is only loaded: transformers'
    Trainer would run one optimizer step past ``max_steps`` before it stops.
    """
    if resume is not None and checkpoint_step(resume) >= max_steps:
        trainer._load_from_checkpoint(resume)
        return
    trainer.train(resume_from_checkpoint=resume)


def checkpoint_step(checkpoint: str | None) -> int:
    """The global step of a ``checkpoint-N`` folder (0 for None)."""
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


class ConvertedCheckpointResume:
    """Trainer mixin: resume full-model checkpoints through ``from_pretrained``'s key mapping.

    ``save_pretrained`` writes a VLM's weights in the original hub layout (Qwen2.5-VL:
    ``visual.*`` / ``model.layers.*``) while the model's own modules are named
    ``model.visual.*`` / ``model.language_model.*``. transformers' ``Trainer`` resumes with a
    plain non-strict ``load_state_dict`` of the checkpoint file, so no key matches and the
    run silently continues from the freshly initialised weights (transformers issue #43701,
    open in 5.23). Here the weights are loaded with ``from_pretrained`` (which applies the
    mapping) and copied in strictly; optimizer, scheduler, RNG and step are restored by the
    Trainer as usual. PEFT adapter checkpoints keep the Trainer's own path. Cost: a second
    copy of the model in CPU memory while resuming (full fine-tuning only).
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = self.model if model is None else model
        folder = Path(resume_from_checkpoint)
        weights = [folder / "model.safetensors", folder / "model.safetensors.index.json"]
        if hasattr(target, "peft_config") or not any(w.exists() for w in weights):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        parameter = next(target.parameters())
        restored = type(target).from_pretrained(folder, dtype=parameter.dtype)
        target.load_state_dict(restored.state_dict(), strict=True)


class ResumableSFTTrainer(ConvertedCheckpointResume, SFTTrainer):
    """TRL's SFTTrainer that resumes VLM checkpoints with their weights (see the mixin)."""


def check_min_accuracy(
    stage: str, accuracy: float, minimum: float, hint: str, n_val: int | None = None
) -> None:
    """Fail the stage (after its outputs and metrics are written) below ``<stage>.min_accuracy``.

    Later stages would otherwise start from a broken checkpoint and report its numbers as
    the method's effect. A gate over no val rows (``n_val == 0``, accuracy NaN) fails too.
    """
    if minimum > 0 and (n_val == 0 or math.isnan(accuracy)):
        raise GateError(
            f"{stage}: {stage}.min_accuracy={minimum} but the held-out accuracy was measured "
            f"on {n_val if n_val is not None else 'no'} val rows ({hint})"
        )
    if accuracy < minimum:
        raise GateError(
            f"{stage}: held-out VQA accuracy {accuracy:.3f} is below "
            f"{stage}.min_accuracy={minimum} ({hint})"
        )


def require_gate_rows(stage: str, minimum: float, n_val: int, selection: str) -> None:
    """Fail BEFORE training when ``<stage>.min_accuracy`` is set but no val row exists.

    Otherwise the gate could never fire (accuracy of nothing is NaN) and hours of training
    would end in an unchecked checkpoint. ``selection`` says which rows were looked for.
    """
    if minimum > 0 and n_val == 0:
        raise GateError(
            f"{stage}: {stage}.min_accuracy={minimum} but there are no val rows to measure it "
            f"({selection}); carve a val split from a reader entry with data.real[k].val "
            f"(a fraction or a count), or set {stage}.min_accuracy: 0"
        )


def language_model_targets(
    model: torch.nn.Module, adapter: VLMAdapter, names: Sequence[str]
) -> str:
    """PEFT ``target_modules`` regex: the modules called ``names`` INSIDE the language model.

    LoRA matches ``target_modules`` given as a list by the last part of a module's name, and
    the vision encoders use the same names (Qwen2.5-VL's vision MLP has ``gate/up/down_proj``,
    LLaVA's CLIP attention ``q/k/v_proj``): adapters would go into the encoder, train it
    despite ``freeze_vision`` and be merged into the saved model. A string is matched by PEFT
    against the FULL module name (``re.fullmatch``), so the regex is anchored at the language
    model's own path (``model.language_model.`` for every supported family). Raises
    ``ValueError`` when no module of the language model has one of the names.
    """
    prefix = next(
        (name for name, module in model.named_modules() if module is adapter.text_model(model)),
        None,
    )
    if prefix is None:
        raise ValueError(f"{type(model).__name__}: the language model is not one of its modules")
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = rf"{re.escape(prefix)}\.(?:.*\.)?(?:{alternatives})"
    if not any(re.fullmatch(pattern, name) for name, _ in model.named_modules()):
        raise ValueError(
            f"lora.target_modules {list(names)}: no module of the language model "
            f"({prefix}) has one of these names"
        )
    return pattern


def lora_config(lora: Any, model: torch.nn.Module, adapter: VLMAdapter) -> Any:
    """The PEFT LoRA config of a ``lora`` section (sft.lora / grpo.lora), or None if disabled.

    Adapters go into the language model only (:func:`language_model_targets`).
    """
    from peft import LoraConfig

    if not lora.enabled:
        return None
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=language_model_targets(model, adapter, lora.target_modules),
        task_type="CAUSAL_LM",
    )


HALF_PRECISION = (torch.bfloat16, torch.float16)


def master_weights(model: torch.nn.Module, trains_base_weights: bool) -> torch.dtype:
    """Train a half-precision checkpoint's own weights in float32; returns the checkpoint's dtype.

    Real checkpoints load in bf16/fp16 (``torch_dtype``). AdamW applied to half-precision
    weights loses every update smaller than half a unit in the last place (bf16: about
    weight * 2^-9): at a fine-tuning learning rate of 1e-5 most weights never move, silently.
    Full fine-tuning therefore upcasts to float32 master weights (on a GPU the trainer's
    ``bf16`` autocast still computes in bf16); LoRA keeps the frozen base in half precision
    (PEFT creates the adapters in float32). Save with :func:`restore_dtype`.
    """
    dtype = next(model.parameters()).dtype
    if trains_base_weights and dtype in HALF_PRECISION:
        model.float()
    return dtype


def restore_dtype(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The trained model back in the checkpoint's dtype (saved like the checkpoint it came from)."""
    return model.to(dtype)


def freeze_vision_encoder(model: torch.nn.Module, adapter: VLMAdapter) -> int:
    """Freeze the vision encoder (patch embedding + blocks), keep the merger/projector.

    Returns the number of frozen parameters. At random init the encoder's features already
    separate shape and colour; training them on the shapes task destroyed shape information.
    """
    tower = adapter.vision_tower(model)
    frozen = 0
    for name, parameter in tower.named_parameters():
        if not name.startswith("merger."):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module,
    processor: Any,
    adapter: VLMAdapter,
    rows: Sequence[dict],
    *,
    max_new_tokens: int,
    batch_size: int = 64,
    desc: str = "generate",
) -> list[str]:
    """Greedy completions for rows with ``image_bytes`` and ``question``.

    Through :func:`lookright.decoding.plain.plain_generate` (the decode stage's ``greedy``):
    a checkpoint's own sampling/penalty settings (Qwen2.5-VL ships repetition_penalty 1.05)
    do not change the held-out answers.
    """
    from lookright.decoding.plain import plain_generate

    model.eval()
    tokenizer = processor.tokenizer
    answers: list[str] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, leave=False):
        batch = rows[start : start + batch_size]
        encoded = adapter.encode(
            processor,
            [decode_image(r["image_bytes"]) for r in batch],
            [r["question"] for r in batch],
        )
        inputs = encoded.inputs.to(model.device)
        output = plain_generate(model, inputs, "greedy", max_new_tokens=max_new_tokens)
        answers += [
            t.strip() for t in tokenizer.batch_decode(output.tokens, skip_special_tokens=True)
        ]
    return answers


def held_out_predictions(
    model: torch.nn.Module,
    processor: Any,
    adapter: VLMAdapter,
    rows: Sequence[dict],
    references: Sequence[str],
    task: str,
    *,
    max_new_tokens: int,
) -> tuple[list[dict[str, Any]], float]:
    """Greedy answers of held-out rows scored by normalised exact match with ``references``:
    the rows of ``val_predictions.parquet`` (:data:`PREDICTIONS`) and the accuracy (NaN for
    no rows). The one held-out accuracy of every training stage (pretrain, sft, grpo)."""
    from lookright.metrics.accuracy import exact_match

    predictions = greedy_answers(
        model, processor, adapter, rows, max_new_tokens=max_new_tokens, desc=f"val {task}"
    )
    records = [
        {
            "sample_id": row["sample_id"],
            "task": task,
            "question": row["question"],
            "reference": reference,
            "prediction": prediction,
            "correct": exact_match(prediction, reference),
        }
        for row, reference, prediction in zip(rows, references, predictions, strict=True)
    ]
    correct = [r["correct"] for r in records]
    return records, (sum(correct) / len(correct) if correct else math.nan)
