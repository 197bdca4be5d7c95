"""Where does a trained model read the object from? Three probes on VQA test questions.

    python experiments/probe_routing.py --model results/sft/tiny-qwen2.5-vl/model \
        --data results/data --samples 48 [--out probe.json]

1. **Occlusion** (ground truth of what the answer depends on): each cell of the visual-token
   grid is painted grey in turn; which cells change the greedy answer? On a model that looks
   at the object, only the object's cell does.
2. **Question-word attention**: the share of the visual attention of the question's LAST word
   (the shape name: "What color is the square?") that falls on the object's cell, per layer.
   Only meaningful when the image comes before the question (``pretrain.prompt_order:
   image_first``); with ``question_first`` the question cannot see the image (causal mask).
3. **Map alignment** of saliency methods (mass inside the box, Saliency-R1's alignment score)
   on the model's own greedy completions, against the ``random`` floor.

Prints a JSON summary (and writes it with ``--out``). Used for EXPERIMENTS.md ("routing").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookright.completion import final_answer
from lookright.metrics.accuracy import exact_match
from lookright.metrics.localisation import alignment_score
from lookright.models.base import load_model
from lookright.saliency.api import explain_batch
from lookright.train.common import greedy_answers
from lookright.train.datasets import decode_image, load_samples

METHODS = (
    "logit_decomposition",
    "logit_decomposition_centered",
    "cot_bottleneck",
    "cot_bottleneck_generating",
    "attention_gradient",
    "glimpse",
    "raw_attention",
    "rollout",
    "random",
)
GREY = 128


def boxes_of(row: dict) -> list[list[float]]:
    return [list(b) for b in row["boxes"]]  # normalised [x1, y1, x2, y2]


def object_cell(row: dict, grid: tuple[int, int]) -> int:
    x1, y1, x2, y2 = boxes_of(row)[0]
    return int((y1 + y2) / 2 * grid[0]) * grid[1] + int((x1 + x2) / 2 * grid[1])


def occlusion(loaded, row: dict, grid: tuple[int, int], max_new_tokens: int) -> list[int]:
    """Grid cells whose grey-out changes the greedy answer."""
    image = np.array(decode_image(row["image_bytes"]))
    height, width = image.shape[0] // grid[0], image.shape[1] // grid[1]
    variants = [image]
    for cell in range(grid[0] * grid[1]):
        r, c = divmod(cell, grid[1])
        copy = image.copy()
        copy[r * height : (r + 1) * height, c * width : (c + 1) * width] = GREY
        variants.append(copy)
    rows = [{"image_bytes": None, "question": row["question"]} for _ in variants]
    encoded = loaded.adapter.encode(
        loaded.processor, [Image.fromarray(v) for v in variants], [r["question"] for r in rows]
    )
    inputs = encoded.inputs.to(loaded.model.device)
    with torch.no_grad():
        output = loaded.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=loaded.processor.tokenizer.pad_token_id,
        )
    texts = loaded.processor.tokenizer.batch_decode(
        output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    answers = [final_answer(t) for t in texts]
    return [k for k, a in enumerate(answers[1:]) if a != answers[0]]


def question_word_attention(loaded, row: dict, grid: tuple[int, int]) -> list[float] | None:
    """Per layer: share of the question's last word's visual attention on the object cell."""
    model, adapter = loaded.model, loaded.adapter
    encoded = adapter.encode(
        loaded.processor, [decode_image(row["image_bytes"])], [row["question"]]
    )
    ids = encoded.inputs["input_ids"][0]
    visual = (ids == adapter.image_token_id(model)).nonzero().flatten()
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(ids)
    word = row["question"].rstrip("?").split()[-1].lower()
    after = [
        k for k, t in enumerate(tokens) if t.lower().lstrip("ġ") == word and k > int(visual[-1])
    ]
    if not after:
        return None  # the question precedes the image: it cannot attend to it
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(**encoded.inputs.to(model.device), output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")
    cell = object_cell(row, grid)
    shares = []
    for attention in out.attentions:
        to_visual = attention[0, :, after[0], visual].mean(0)
        shares.append(float(to_visual[cell] / to_visual.sum()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--samples", type=int, default=48)
    parser.add_argument("--occlusion-samples", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    loaded = load_model(args.model)
    rows = load_samples(args.data, "test", ("vqa",)).slice(0, args.samples).to_pylist()
    completions = greedy_answers(
        loaded.model,
        loaded.processor,
        loaded.adapter,
        rows,
        max_new_tokens=args.max_new_tokens,
    )
    images = [decode_image(r["image_bytes"]) for r in rows]
    maps = explain_batch(
        loaded.model,
        loaded.processor,
        images,
        [r["question"] for r in rows],
        completions,
        list(METHODS),
        loaded.adapter,
    )
    grid = next(iter(maps.values()))[0].grid
    alignment = {}
    for method, results in maps.items():
        scores = [
            alignment_score(res.response_map, boxes_of(r), (r["width"], r["height"]))
            for r, res in zip(rows, results, strict=True)
            if res.response_map is not None
        ]
        scores = [s for s in scores if s is not None]
        alignment[method] = {"mean": float(np.mean(scores)) if scores else None, "n": len(scores)}
    probed = rows[: args.occlusion_samples]
    changing = [occlusion(loaded, r, grid, args.max_new_tokens) for r in probed]
    attention = [question_word_attention(loaded, r, grid) for r in probed]
    attention = [a for a in attention if a is not None]
    summary = {
        "model": args.model,
        "n_samples": len(rows),
        "accuracy": float(
            np.mean(
                [
                    exact_match(final_answer(c), r["answer"])
                    for c, r in zip(completions, rows, strict=True)
                ]
            )
        ),
        "box_area_fraction": float(
            np.mean([(b[2] - b[0]) * (b[3] - b[1]) for r in rows for b in boxes_of(r)[:1]])
        ),
        "alignment": alignment,
        "occlusion": {
            "n": len(probed),
            "object_cell_changes_answer": sum(
                object_cell(r, grid) in c for r, c in zip(probed, changing, strict=True)
            ),
            "mean_cells_changing_answer": float(np.mean([len(c) for c in changing])),
        },
        "question_word_attention_on_object_by_layer": (
            np.mean(attention, axis=0).round(3).tolist() if attention else None
        ),
        "uniform_share": 1.0 / (grid[0] * grid[1]),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
