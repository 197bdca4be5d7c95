"""Your own TRL GRPO run with lookright's saliency rewards: no lookright stage, no config file.

    python examples/grpo_with_lookright_rewards.py --model <checkpoint or hub id> \
        --data prompts.jsonl --out grpo-out [--steps 100] [--use-vllm]

prompts.jsonl: one object per line, {"image": <path>, "question": ..., "answer": ...,
"boxes": [[x1, y1, x2, y2], ...]} (boxes normalised to [0, 1], x by width, y by height).
"""

import argparse

import torch
from datasets import Dataset
from PIL import Image
from trl import GRPOConfig, GRPOTrainer

from lookright.models import load_model
from lookright.rewards import (
    AccuracyReward,
    FormatReward,
    Policy,
    RegionAttentionReward,
    SaliencyAlignmentReward,
)

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--out", default="grpo-out")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--logging-steps", type=int, default=10)
parser.add_argument("--use-vllm", action="store_true")
args = parser.parse_args()

loaded = load_model(args.model)  # model, processor (left padding) and the family adapter
dataset = Dataset.from_json(args.data).map(
    lambda row: {
        "prompt": [{"role": "user", "content": row["question"]}],
        "images": [Image.open(row["image"]).convert("RGB")],
    }
)
policy = Policy(None, loaded.processor)  # the rewards read the policy being trained
rewards = [
    AccuracyReward(),
    FormatReward(),
    SaliencyAlignmentReward(policy),  # Saliency-R1: CoT-bottleneck map inside the box
    RegionAttentionReward(policy),  # SAYO: high-entropy tokens' attention to the box
]
config = GRPOConfig(
    output_dir=args.out,
    max_steps=args.steps,
    logging_steps=args.logging_steps,
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=64,
    use_vllm=args.use_vllm,
    bf16=torch.cuda.is_available(),
    use_cpu=not torch.cuda.is_available(),
    remove_unused_columns=False,  # the rewards read the boxes, images and answers columns
    report_to="none",
)
trainer = GRPOTrainer(
    model=loaded.model,
    reward_funcs=rewards,
    args=config,
    train_dataset=dataset,
    processing_class=loaded.processor,
)
policy.bind_trainer(trainer)
trainer.train()
trainer.save_model(args.out)
