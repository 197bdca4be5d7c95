"""Benchmark: the ``evaluate_saliency`` stage on the embedded default, before vs after occlusion
and token weighting (issue 17's cost bound: at most 1.5x the time before).

Both arms run :func:`lookright.stages.evaluate_saliency.run_evaluate_saliency`, in ONE process,
interleaved (before, after, before, after, ...), on the same model and data:

* ``before``: config/config.yaml's ``evaluate`` section without ``occlusion`` and with
  ``token_weightings: [uniform]`` (what the stage computed before issue 17);
* ``after``: config/config.yaml's ``evaluate`` section as it is (occlusion, its agreement
  and per-token visual dependence, the token weightings it lists, thought faithfulness).

Model: a random-init tiny Qwen2.5-VL with config.yaml's ``pretrain.tiny`` sizes and
``data.shapes.image_size``; data: config.yaml's shapes generator (test split). Generation is
replaced by the reference chain of thought of each sample (what the trained SFT model writes:
``<think>It is at the top left. The circle red.</think>red``), so every sample is "correct"
and deletion / insertion score ``evaluate.faithfulness.max_samples`` samples, as on a trained
model; the generation phase itself is identical in both arms and not timed.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_evaluate_saliency.py --repeats 2 \\
        --out bench_evaluate.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from lookright.config import load_stage_config
from lookright.data.schema import IMAGES, SAMPLES
from lookright.data.shapes import ShapesConfig, generate_split
from lookright.io import write_rows
from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer
from lookright.stages import evaluate_saliency as stage
from lookright.stages.evaluation import EvaluateConfig

REPO = Path(__file__).resolve().parent.parent


def reference_generation(model, processor, adapter, rows, *, max_new_tokens, batch_size, desc):
    """The samples' reference thoughts and answers (a trained model's completions)."""
    return [row["cot"] for row in rows]


def build_inputs(root: Path, config: dict[str, Any]) -> tuple[Path, Path]:
    shapes = dict(config["data"]["shapes"])
    shapes.update(n_train=0, n_val=0, n_test=max(60, config["evaluate"]["max_samples"] // 2))
    shapes.pop("bias", None)
    images, samples = generate_split(ShapesConfig(**shapes), "test")
    data = root / "data"
    write_rows(images, IMAGES, data / "images.parquet")
    write_rows(samples, SAMPLES, data / "samples.parquet")
    adapter = get_adapter("qwen2_5_vl")
    texts = [s["question"] for s in samples] + [s["cot"] or s["answer"] for s in samples]
    tokenizer = train_tokenizer(texts, adapter.chat_format, config["pretrain"]["vocab_size"])
    torch.manual_seed(0)
    size = TinySize(**config["pretrain"]["tiny"])
    model, processor = adapter.build_tiny(tokenizer, size, shapes["image_size"])
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model", data


def arm_configs(config: dict[str, Any]) -> dict[str, EvaluateConfig]:
    after = copy.deepcopy(config["evaluate"])
    after["device"] = "cpu"
    before = copy.deepcopy(after)
    before["methods"] = [m for m in after["methods"] if m != "occlusion"]
    before["token_weightings"] = ["uniform"]
    return {
        name: load_stage_config(EvaluateConfig, {"evaluate": section, "seed": 0})
        for name, section in (("before", before), ("after", after))
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    stage.greedy_answers = reference_generation
    timings: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data_dir = build_inputs(Path(tmp), config)
        arms = arm_configs(config)
        for repeat in range(args.repeats):
            for name, cfg in arms.items():
                out = Path(tmp) / f"{name}-{repeat}"
                started = time.perf_counter()
                metrics = stage.run_evaluate_saliency(cfg, model_dir, data_dir, out)
                total = time.perf_counter() - started
                timings[name].append(
                    {
                        "total_s": total,
                        "saliency_time_s": metrics["saliency_time_s"],
                        "faithfulness_time_s": metrics["faithfulness_time_s"],
                        "n_samples": metrics["n_samples"],
                        "n_faithfulness_samples": metrics["n_faithfulness_samples"],
                        "n_methods": len(
                            stage.evaluated_names(
                                cfg.evaluate.methods, cfg.evaluate.token_weightings
                            )
                        ),
                    }
                )
                print(name, repeat, json.dumps(timings[name][-1]), flush=True)
    medians = {
        name: {key: statistics.median(t[key] for t in runs) for key in runs[0]}
        for name, runs in timings.items()
    }
    return {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "torch": torch.__version__,
        "runs": timings,
        "median": medians,
        "ratio_total": medians["after"]["total_s"] / medians["before"]["total_s"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({"median": result["median"], "ratio_total": result["ratio_total"]}, indent=2))
    return result


if __name__ == "__main__":
    main()
