"""Benchmark: GRPO step time with the saliency reward vs the same step without it.

ONE TRL ``GRPOTrainer`` run (PEFT LoRA, KL beta 0.001, HF generate) whose reward list holds
accuracy + format + a *switchable* model reward. Steps rotate through three kinds (the
order rotates every round), so they are measured side by side, on the same model, under the
same machine load:

* ``off``: accuracy + format only (the model reward answers None at once);
* ``saliency_alignment``: + Saliency-R1's reward (CoT-bottleneck map, one teacher-forced
  forward with the row pass);
* ``region_attention``: + SAYO's reward (entropies + last-layer attention rows, one forward).

Reported: median step time of each kind, the ratio to ``off`` (target <= 1.10 for the saliency
reward), and the time spent inside the reward itself (its share of an ``off`` step).

Rollouts have exactly the shape's number of new tokens (``min_new_tokens``; image/vision,
end-of-turn and out-of-tokenizer ids suppressed). A randomly initialised model never writes ``<think>...</think>``, so the timed
reward sees each completion with ``<think>`` prepended and ``</think>`` inserted 4 tokens before
its end (same length + 2): the CoT-bottleneck path is the one measured.

    python benchmarks/bench_grpo.py --out bench_grpo.json                   # tiny, CPU
    python benchmarks/bench_grpo.py --device cuda --shape qwen2_5_vl_3b --out bench_grpo_3b.json

``tiny`` is the embedded default's model size (text 128 x 4 layers, vision 64 x 2, 112-px images:
16 visual tokens), 2 prompts x 4 generations, 48 new tokens. ``qwen2_5_vl_3b`` is a randomly
initialised Qwen2.5-VL-3B (bench_saliency.py's config), bf16, 448-px images (256 visual
tokens), 1 prompt x 8 generations, 256 new tokens.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lookright.config import load_stage_config  # noqa: E402
from lookright.models import get_adapter  # noqa: E402
from lookright.models.base import TinySize  # noqa: E402
from lookright.models.tokenizer import train_tokenizer  # noqa: E402
from lookright.rewards import Policy, RewardFunction  # noqa: E402
from lookright.stages.grpo import GrpoConfig  # noqa: E402
from lookright.train.common import lora_config  # noqa: E402
from lookright.train.grpo import (  # noqa: E402
    RegionAttentionOptions,
    SaliencyAlignmentOptions,
    build_reward,
    grpo_args,
    grpo_dataset,
)
from lookright.train.grpo.trainer import _trainer_class  # noqa: E402

TEXTS = [
    "What color is the circle?",
    "<think>The circle is at the top left. It is red.</think>red",
    "no yes blue green square triangle diamond cross purple orange",
] * 10
QUESTION = "What color is the circle?"
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"image_size": 112, "prompts": 2, "generations": 4, "new_tokens": 48},
    "qwen2_5_vl_3b": {"image_size": 448, "prompts": 1, "generations": 8, "new_tokens": 256},
}
KINDS = ("off", "saliency_alignment", "region_attention")


class Switchable(RewardFunction):
    """One of the model rewards, or None at once when the current step is ``off``.

    Completions are made well formed (``<think>`` first, ``</think>`` 4 tokens before the end)
    before the timed reward runs; its time is recorded per call.
    """

    name = "model_reward"

    def __init__(self, rewards: dict[str, RewardFunction], open_ids, close_ids):
        super().__init__()
        self.rewards = rewards
        self.open_ids, self.close_ids = list(open_ids), list(close_ids)
        self.kind = "off"
        self.seconds: list[tuple[int, str, float]] = []

    def score(self, prompts, completions, completion_ids=None, **kwargs):
        if self.kind == "off":
            return [None] * len(completions)
        formed = [self.open_ids + ids[:-4] + self.close_ids + ids[-4:] for ids in completion_ids]
        started = time.perf_counter()
        values = self.rewards[self.kind](prompts, completions, formed, **kwargs)
        step = kwargs["trainer_state"].global_step
        self.seconds.append((step, self.kind, time.perf_counter() - started))
        return values


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, and the reward kind of the NEXT step set up front."""

    def __init__(self, switch: Switchable, device: str, schedule: list[str]):
        self.switch, self.device, self.schedule = switch, device, schedule
        self.times: list[tuple[int, str, float]] = []
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.switch.kind = self.schedule[state.global_step]
        _sync(self.device)
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync(self.device)
        elapsed = time.perf_counter() - self._started
        self.times.append((state.global_step - 1, self.switch.kind, elapsed))


def _tag_ids(tokenizer, tag: str) -> list[int]:
    """The token ids of a tag on its own (the tiny tokenizers have one token per tag)."""
    return tokenizer(tag, add_special_tokens=False)["input_ids"]


def schedule(warmup: int, rounds: int) -> list[str]:
    """Warm-up steps (all kinds), then rounds of the three kinds in rotating order (each kind
    takes each position equally often, so a drift in machine speed biases none)."""
    warm = [KINDS[k % len(KINDS)] for k in range(warmup)]
    timed = [KINDS[(k + r) % len(KINDS)] for r in range(rounds) for k in range(len(KINDS))]
    return warm + timed


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(shape: str, device: str):
    if shape == "qwen2_5_vl_3b":
        from bench_saliency import build_qwen2_5_vl_3b

        model, processor, adapter = build_qwen2_5_vl_3b(SHAPES[shape]["image_size"], device)
        return model.train(), processor, adapter
    adapter = get_adapter("qwen2_5_vl")
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 400)
    torch.manual_seed(0)
    model, processor = adapter.build_tiny(tokenizer, TinySize(), SHAPES[shape]["image_size"])
    return model.to(device), processor, adapter


def dataset(n: int, image_size: int):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(n):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    table = pa.table(
        {
            "sample_id": [f"s{k}" for k in range(n)],
            "task": ["vqa"] * n,
            "question": [QUESTION] * n,
            "answer": ["red"] * n,
            "boxes": [[[0.0, 0.0, 0.5, 0.5]]] * n,
            "width": [image_size] * n,
            "height": [image_size] * n,
            "image_bytes": pngs,
        }
    )
    return grpo_dataset(table)


def run(args) -> dict[str, Any]:
    shape = SHAPES[args.shape]
    model, processor, adapter = build_model(args.shape, args.device)
    completions_per_step = shape["prompts"] * shape["generations"]
    cfg = load_stage_config(
        GrpoConfig,
        {
            "seed": 0,
            "grpo": {
                "steps": args.warmup + args.rounds * len(KINDS),
                "batch_size": completions_per_step,
                "num_generations": shape["generations"],
                "max_completion_length": shape["new_tokens"],
                "learning_rate": 1e-5,
                "beta": 0.001,
                "save_steps": 100000,
                "logging_steps": 1,
                "lora": {"enabled": True, "r": 16, "alpha": 32},
            },
        },
    )
    tokenizer = processor.tokenizer
    policy = Policy(None, processor, adapter)
    options = cfg.grpo.reward_options
    options.saliency_alignment = SaliencyAlignmentOptions(
        method=args.alignment_method, batch_size=completions_per_step
    )
    options.region_attention = RegionAttentionOptions(batch_size=completions_per_step)
    switch = Switchable(
        {n: build_reward(n, options, policy) for n in KINDS[1:]},
        _tag_ids(tokenizer, "<think>"),
        _tag_ids(tokenizer, "</think>"),
    )
    reserved = [
        int(i)
        for i in (
            model.config.image_token_id,
            getattr(model.config, "video_token_id", None),
            getattr(model.config, "vision_start_token_id", None),
            getattr(model.config, "vision_end_token_id", None),
            tokenizer.eos_token_id,
        )
        if i is not None
    ]
    # the 3B shape has Qwen's 151936-row vocabulary but a small benchmark tokenizer: keep the
    # rollouts decodable
    reserved += list(range(len(tokenizer), model.get_output_embeddings().weight.shape[0]))
    with tempfile.TemporaryDirectory() as folder:
        training = grpo_args(cfg.grpo, cfg.seed, Path(folder), [1.0, 1.0, 1.0])
        training.generation_kwargs = {
            "min_new_tokens": shape["new_tokens"],
            "suppress_tokens": reserved,
        }
        if args.device == "cpu":
            training.use_cpu = True
        timer = StepTimer(switch, args.device, schedule(args.warmup, args.rounds))
        trainer = _trainer_class()(
            model=model,
            reward_funcs=[
                build_reward("accuracy", options, None),
                build_reward("format", options, None),
                switch,
            ],
            args=training,
            train_dataset=dataset(max(8, shape["prompts"] * 4), shape["image_size"]),
            processing_class=processor,
            peft_config=lora_config(cfg.grpo.lora, model, adapter),
            callbacks=[timer],
        )
        policy.bind_trainer(trainer)
        trainer.train()
    by_kind = {
        k: [t for s, kind, t in timer.times if kind == k and s >= args.warmup] for k in KINDS
    }
    reward_time = {
        k: [t for s, kind, t in switch.seconds if kind == k and s >= args.warmup] for k in KINDS[1:]
    }
    off = statistics.median(by_kind["off"])
    result: dict[str, Any] = {
        "shape": args.shape,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "completions_per_step": completions_per_step,
        "new_tokens": shape["new_tokens"],
        "rounds": args.rounds,
        "median_step_s": {k: statistics.median(v) for k, v in by_kind.items()},
        "step_s": by_kind,
    }
    result["ratio_to_off"] = {k: statistics.median(by_kind[k]) / off for k in KINDS[1:]}
    result["reward_s_median"] = {k: statistics.median(v) for k, v in reward_time.items() if v}
    result["reward_share_of_off_step"] = {k: v / off for k, v in result["reward_s_median"].items()}
    result["alignment_method"] = args.alignment_method
    result["target_ratio"] = 1.10
    result["meets_target"] = result["ratio_to_off"]["saliency_alignment"] <= 1.10
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=8, help="off/sal/sayo step triples timed")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: stable on shared cores)"
    )
    parser.add_argument(
        "--alignment-method",
        default="cot_bottleneck",
        help="map of the saliency reward (cot_bottleneck: paper; logit_decomposition_centered: "
        "the embedded default's)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "step_s"}, indent=2))
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
