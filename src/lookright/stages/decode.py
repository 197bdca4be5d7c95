"""The ``decode`` stage: answer the POPE questions and caption prompts with one strategy.

    lookright decode --model-dir results/sft/<model>/model --data results/data \\
        --strategy sgrs+locore --out results/decode/<model>/sft/sgrs+locore \\
        [--config-json '{"decode": {...}, "model": {...}, "seed": 0}']

Reads the ``decode.split`` samples of ``decode.tasks`` with role ``eval`` (``samples.parquet``
+ ``images.parquet`` from ``prepare_data``; per task at most ``decode.max_samples``, a
seeded subsample stratified by source, POPE split x label and subset, see
:mod:`lookright.data.subsample`), decodes them in batches (left padding) with
:func:`lookright.decoding.generate`, and writes ``<out>/answers.parquet`` (one row per sample:
text, answer, token ids, per-token saliency, SGRS draws/fallbacks, timing), ``<out>/metrics.json``
and ``<out>/run.json``, all logged to one MLflow run. Sampling strategies draw from one random
stream per sample (seeded by ``seed`` and the sample id), so answers do not depend on batching.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from lookright.completion import final_answer
from lookright.config import ConfigError, ModelSection, TrackingConfig
from lookright.decoding.params import (
    REFERENCE_SGRS_LAYERS,
    STRATEGIES,
    DecodingParameterError,
    LocoreParams,
    SgrsParams,
)
from lookright.io import write_rows
from lookright.metrics.pope import parse_yes_no, pope_by_split
from lookright.stages.base import Stage
from lookright.train.datasets import STAGE_ROLE, decode_image, load_subsample

DECODED = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("pope_split", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("token_saliency", pa.list_(pa.float32())),
        pa.field("sgrs_draws", pa.list_(pa.int16())),
        pa.field("sgrs_fallback", pa.list_(pa.bool_())),
        pa.field("batch_index", pa.int32(), nullable=False),
        pa.field("batch_size", pa.int32(), nullable=False),
        pa.field("batch_time_s", pa.float64(), nullable=False),
        pa.field("batch_saliency_time_s", pa.float64(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
    ]
)
"""``answers.parquet``: one row per decoded sample.

text: the decoded completion (special tokens skipped); answer: the text after the last
``</think>`` (the whole text without one), stripped. token_ids: generated ids up to and
including the end token. token_saliency: S of each token (LVLMs-Saliency, null for beam
search or ``token_saliency: false``). sgrs_draws / sgrs_fallback: per token, for the SGRS
strategies (null otherwise). batch_*: the batch the sample was decoded in; time_s: the batch's
wall time divided by its size.
"""


# -- config --------------------------------------------------------------------------------

DECODE_TASKS = ("pope", "caption")


@dataclass
class SgrsSection:
    top_k: int = 5  # K (also the K of the ``sample`` strategy)
    max_draws: int = 3  # R
    alpha: float = 0.6
    history: int = 5  # W
    layers: list[float] = field(default_factory=lambda: list(REFERENCE_SGRS_LAYERS))


@dataclass
class LocoreSection:
    beta: float | None = None  # None: per family (llava 0.15, qwen2_vl/qwen2_5_vl 0.20)
    window: int = 5  # w_s
    layers: list[float] | None = None  # None: every decoder layer
    renormalise: bool = True


@dataclass
class DecodeSection:
    split: str = "test"
    tasks: list[str] = field(default_factory=lambda: list(DECODE_TASKS))
    max_samples: int | None = None  # per task; None = all
    batch_size: int = 8
    max_new_tokens: dict[str, int] = field(default_factory=lambda: {"pope": 64, "caption": 128})
    num_beams: int = 5  # strategy ``beam``
    token_saliency: bool = True  # also score the tokens of greedy / sample / locore
    device: str = "auto"  # auto = cuda if available, else cpu
    dtype: str = "auto"  # auto (checkpoint's), float32, bfloat16, float16
    attn_implementation: str = "sdpa"  # sdpa or eager
    sgrs: SgrsSection = field(default_factory=SgrsSection)
    locore: LocoreSection = field(default_factory=LocoreSection)


@dataclass
class DecodeConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    decode: DecodeSection = field(default_factory=DecodeSection)


def sgrs_params(section: SgrsSection) -> SgrsParams:
    try:
        return SgrsParams(
            top_k=section.top_k,
            max_draws=section.max_draws,
            alpha=section.alpha,
            history=section.history,
            layers=tuple(section.layers),
        )
    except DecodingParameterError as error:
        raise ConfigError(f"decode.sgrs: {error}") from None


def locore_params(section: LocoreSection) -> LocoreParams:
    try:
        return LocoreParams(
            beta=section.beta,
            window=section.window,
            layers=None if section.layers is None else tuple(section.layers),
            renormalise=section.renormalise,
        )
    except DecodingParameterError as error:
        raise ConfigError(f"decode.locore: {error}") from None


def validate(cfg: DecodeConfig) -> DecodeConfig:
    """Range checks of the ``decode`` section; a :class:`ConfigError` names the key."""
    d = cfg.decode
    if d.split not in ("train", "val", "test"):
        raise ConfigError(f"decode.split must be one of train, val, test, got {d.split!r}")
    unknown = [t for t in d.tasks if t not in DECODE_TASKS]
    if unknown or not d.tasks:
        raise ConfigError(
            f"decode.tasks must be a non-empty subset of {list(DECODE_TASKS)}, got {d.tasks}"
        )
    missing = [t for t in d.tasks if t not in d.max_new_tokens]
    if missing:
        raise ConfigError(f"decode.max_new_tokens has no entry for task(s) {missing}")
    for task, value in d.max_new_tokens.items():
        if value < 1:
            raise ConfigError(f"decode.max_new_tokens.{task} must be >= 1, got {value}")
    if d.max_samples is not None and d.max_samples < 1:
        raise ConfigError(f"decode.max_samples must be >= 1 or null, got {d.max_samples}")
    if d.batch_size < 1:
        raise ConfigError(f"decode.batch_size must be >= 1, got {d.batch_size}")
    if d.num_beams < 1:
        raise ConfigError(f"decode.num_beams must be >= 1, got {d.num_beams}")
    if d.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ConfigError(
            f"decode.dtype must be one of auto, float32, bfloat16, float16, got {d.dtype!r}"
        )
    if d.attn_implementation not in ("sdpa", "eager"):
        raise ConfigError(
            f"decode.attn_implementation must be sdpa or eager, got {d.attn_implementation!r}"
        )
    if d.device != "auto" and not d.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"decode.device must be auto, cpu or cuda[:N], got {d.device!r}")
    sgrs_params(d.sgrs)
    locore_params(d.locore)
    return cfg


# -- the run --------------------------------------------------------------------------------


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str) -> Any:
    import torch

    return "auto" if name == "auto" else getattr(torch, name)


def _load(cfg: DecodeConfig, model_dir: str | Path):
    from lookright.models.base import load_model

    d = cfg.decode
    family = None if (Path(model_dir) / "config.json").exists() else cfg.model.family
    return load_model(
        model_dir,
        family=family,
        dtype=_dtype(d.dtype),
        attn_implementation=d.attn_implementation,
        device=_device(d.device),
    )


def run_decode(
    cfg: DecodeConfig,
    model_dir: str | Path,
    data_dir: str | Path,
    strategy: str,
    out_dir: str | Path,
    run: Any = None,
) -> dict[str, float]:
    """Decode the configured samples with ``strategy``; write answers.parquet + metrics.json."""
    import torch
    from tqdm.auto import tqdm

    from lookright.decoding.strategies import generate, question_key_mask, sample_generator

    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    validate(cfg)
    d = cfg.decode
    sgrs, locore = sgrs_params(d.sgrs), locore_params(d.locore)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    loaded = _load(cfg, model_dir)
    model, processor, adapter = loaded.model, loaded.processor, loaded.adapter
    model.eval()
    device = next(model.parameters()).device
    tokenizer = processor.tokenizer
    image_token = adapter.image_token_id(model)
    rows_out: list[dict[str, Any]] = []
    batch_index = 0
    for task in d.tasks:
        rows = load_subsample(
            data_dir, d.split, [task], [STAGE_ROLE["decode"]], d.max_samples, cfg.seed
        ).to_pylist()
        starts = range(0, len(rows), d.batch_size)
        for start in tqdm(starts, desc=f"decode {strategy} {task}", leave=False):
            batch = rows[start : start + d.batch_size]
            questions = [r["question"] for r in batch]
            encoded = adapter.encode(
                processor, [decode_image(r["image_bytes"]) for r in batch], questions
            )
            inputs = encoded.inputs.to(device)
            generators = [sample_generator(cfg.seed, r["sample_id"], device) for r in batch]
            output = generate(
                model,
                inputs,
                strategy,
                adapter=adapter,
                max_new_tokens=d.max_new_tokens[task],
                sgrs=sgrs,
                locore=locore,
                num_beams=d.num_beams,
                question_keys=question_key_mask(processor, inputs, questions, image_token),
                generators=generators,
                token_saliency=d.token_saliency,
            )
            texts = tokenizer.batch_decode(output.tokens, skip_special_tokens=True)
            for b, row in enumerate(batch):
                rows_out.append(
                    {
                        "sample_id": row["sample_id"],
                        "image_id": row["image_id"],
                        "task": task,
                        "pope_split": row["pope_split"],
                        "question": row["question"],
                        "reference": row["answer"],
                        "strategy": strategy,
                        "model": cfg.model.name,
                        "text": texts[b].strip(),
                        "answer": final_answer(texts[b]),
                        "token_ids": output.tokens[b],
                        "n_tokens": len(output.tokens[b]),
                        "token_saliency": None
                        if output.token_saliency is None
                        else output.token_saliency[b],
                        "sgrs_draws": None if output.draws is None else output.draws[b],
                        "sgrs_fallback": None if output.fallback is None else output.fallback[b],
                        "batch_index": batch_index,
                        "batch_size": len(batch),
                        "batch_time_s": output.time_s,
                        "batch_saliency_time_s": output.saliency_time_s,
                        "time_s": output.time_s / len(batch),
                    }
                )
            batch_index += 1
    write_rows(rows_out, DECODED, out_dir / "answers.parquet")
    metrics = decode_metrics(rows_out)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if run is not None:
        run.log_metrics(metrics)
        run.set_tags({"lookright.strategy": strategy, "lookright.model_dir": str(model_dir)})
    return metrics


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def decode_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Throughput, saliency and SGRS statistics, and POPE metrics of the decoded rows."""
    batches = {r["batch_index"]: r for r in rows}
    total_time = sum(r["batch_time_s"] for r in batches.values())
    saliency_time = sum(r["batch_saliency_time_s"] for r in batches.values())
    tokens = sum(r["n_tokens"] for r in rows)
    metrics: dict[str, float] = {
        "n_samples": float(len(rows)),
        "n_tokens": float(tokens),
        "decode_time_s": total_time,
        "saliency_time_s": saliency_time,
        "tokens_per_s": tokens / total_time if total_time > 0 else math.nan,
        "samples_per_s": len(rows) / total_time if total_time > 0 else math.nan,
    }
    saliency = [s for r in rows for s in (r["token_saliency"] or [])]
    if saliency:
        metrics["mean_token_saliency"] = _mean(saliency)
    draws = [n for r in rows for n in (r["sgrs_draws"] or [])]
    if draws:
        fallbacks = [f for r in rows for f in (r["sgrs_fallback"] or [])]
        metrics["sgrs_mean_draws"] = sum(draws) / len(draws)
        metrics["sgrs_rejection_rate"] = sum(
            n > 1 or f for n, f in zip(draws, fallbacks, strict=True)
        ) / len(draws)
        metrics["sgrs_fallback_rate"] = sum(fallbacks) / len(fallbacks)
    for task in sorted({r["task"] for r in rows}):
        of_task = [r for r in rows if r["task"] == task]
        metrics[f"{task}_mean_tokens"] = _mean([r["n_tokens"] for r in of_task])
    pope = [
        {
            "pope_split": r["pope_split"],
            "prediction": parse_yes_no(r["answer"]),
            "label": r["reference"],
        }
        for r in rows
        if r["task"] == "pope" and r["pope_split"] and r["reference"] in ("yes", "no")
    ]
    if pope:
        for split, values in pope_by_split(pope).items():
            for name in ("accuracy", "f1", "yes_ratio", "n"):
                value = values.get(name)
                if value is not None:
                    metrics[f"pope_{split}_{name}"] = float(value)
    return metrics


# -- CLI ----------------------------------------------------------------------------------


# -- the stage ------------------------------------------------------------------------------


class Decode(Stage):
    name: ClassVar[str] = "decode"
    help: ClassVar[str] = "decode POPE/caption prompts with one strategy"
    input_context: ClassVar[str] = "inference"
    outputs: ClassVar[tuple[str, ...]] = ("answers.parquet", "metrics.json")

    def config_class(self) -> type:
        return DecodeConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--model-dir", required=True, type=Path, help="checkpoint folder (save_pretrained)"
        )
        parser.add_argument("--data", required=True, type=Path, help="prepare_data output folder")
        parser.add_argument(
            "--strategy", required=True, help=f"decoding strategy: {', '.join(STRATEGIES)}"
        )

    def check(self, cfg: Any, args: argparse.Namespace) -> None:
        if args.strategy not in STRATEGIES:
            raise ConfigError(
                f"--strategy must be one of {list(STRATEGIES)}, got {args.strategy!r}"
            )
        if not (Path(args.model_dir) / "config.json").exists():
            raise FileNotFoundError(
                f"--model-dir {args.model_dir}: no config.json (not a checkpoint)"
            )
        validate(cfg)

    def tags(self, cfg: Any, args: argparse.Namespace) -> dict[str, str]:
        return {**dict(args.tag), "lookright.strategy": args.strategy}

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        started = time.perf_counter()
        metrics = run_decode(cfg, args.model_dir, args.data, args.strategy, args.out, run)
        return {**metrics, "wall_s": time.perf_counter() - started}

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"decode {args.strategy}: {int(result['n_samples'])} samples, "
            f"{result['tokens_per_s']:.1f} tokens/s ({result['wall_s']:.1f} s) "
            f"-> {args.out}/answers.parquet"
        )


STAGE = Decode()
