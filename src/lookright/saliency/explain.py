"""``lookright explain``: where does a model look when it answers one question about one image?

    lookright explain --model <dir or hub id> --image <file> --question "..." \\
        [--answer "..."] --method logit_decomposition,cot_bottleneck --out <dir> \\
        [--box x1,y1,x2,y2]

Generates the answer greedily (or teacher-forces ``--answer``), computes the maps, writes
``<out>/maps.parquet`` (:mod:`storage`), one PNG overlay per method (``<out>/<method>.png``)
and ``<out>/summary.json``, and prints the alignment score of each map with the box when one
is given (normalised coordinates, x by width, y by height).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from lookright.eval.localisation import alignment_score
from lookright.models.base import LoadedModel, load_model
from lookright.saliency.api import available_methods, explain_sample
from lookright.saliency.render import save_overlay
from lookright.saliency.storage import map_row, write_maps


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> validated method names (error lists the valid ones)."""
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no saliency method given; valid methods: {available_methods()}")
    unknown = [n for n in names if n not in available_methods()]
    if unknown:
        raise ValueError(
            f"unknown saliency method(s) {unknown}; valid methods: {available_methods()}"
        )
    return list(dict.fromkeys(names))


def parse_box(text: str | Sequence[float] | None) -> list[float] | None:
    """``"x1,y1,x2,y2"`` (normalised to [0, 1]) -> 4 floats; None stays None."""
    if text is None:
        return None
    values = (
        [float(v) for v in text.split(",")] if isinstance(text, str) else [float(v) for v in text]
    )
    if len(values) != 4:
        raise ValueError(f"--box needs 4 comma-separated values x1,y1,x2,y2, got {len(values)}")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(
            f"--box {values}: need 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (normalised)"
        )
    return values


def open_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB; a clear error for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {path}: no such file")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--image {path}: not a readable image ({error})") from None


def generate_answer(
    loaded: LoadedModel, image: Image.Image, question: str, max_new_tokens: int
) -> str:
    """Greedy completion of the prompt, decoded keeping ``<think>`` tags (not special tokens)."""
    encoded = loaded.adapter.encode(loaded.processor, [image], [question])
    inputs = encoded.inputs.to(next(loaded.model.parameters()).device)
    with torch.no_grad():
        output = loaded.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return loaded.processor.tokenizer.decode(new_tokens, skip_special_tokens=True)


def run_explain(
    model: str,
    image: str,
    question: str,
    answer: str | None,
    methods: list[str],
    out: str,
    box: list[float] | None = None,
    max_new_tokens: int = 64,
    family: str | None = None,
) -> dict[str, Any]:
    """Explain one answer; returns the summary (also written to ``<out>/summary.json``)."""
    names = parse_methods(methods)
    box = parse_box(box)
    picture = open_image(image)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(model, family=family, device=device)
    completion = (
        answer if answer is not None else generate_answer(loaded, picture, question, max_new_tokens)
    )
    results = explain_sample(
        loaded.model, loaded.processor, picture, question, completion, names, loaded.adapter
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, overlays, scores = [], {}, {}
    for name, result in results.items():
        score = (
            alignment_score(result.response_map, [box], picture.size, result.view)
            if box and result.has_map
            else None
        )
        scores[name] = score
        rows.append(map_row(result, "explain-0", picture.size, question, completion, score))
        overlays[name] = str(
            save_overlay(
                out_dir / f"{name}.png",
                picture,
                result.response_map,
                [box] if box else None,
                result.view,
            )
        )
    summary = {
        "model": model,
        "image": str(image),
        "question": question,
        "completion": completion,
        "generated": answer is None,
        "maps": str(write_maps(rows, out_dir / "maps.parquet")),
        "overlays": overlays,
        "no_map": {name: r.reason for name, r in results.items() if not r.has_map},
        "alignment": scores if box else None,
        "box": box,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_explain_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``lookright explain``."""
    parser.add_argument(
        "--model", required=True, help="checkpoint folder (save_pretrained) or hub id"
    )
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--question", required=True, help="question about the image")
    parser.add_argument(
        "--answer", default=None, help="teacher-force this completion instead of generating"
    )
    parser.add_argument(
        "--method",
        required=True,
        help=f"method name(s), comma-separated; valid: {','.join(available_methods())}",
    )
    parser.add_argument("--out", required=True, help="output folder (maps.parquet, <method>.png)")
    parser.add_argument("--box", default=None, help="evidence box x1,y1,x2,y2 normalised to [0, 1]")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, help="generation length (default 64)"
    )
    parser.add_argument(
        "--family",
        default=None,
        help="model family when --model is a hub id (qwen2_5_vl, qwen2_vl, llava)",
    )
    return parser


def explain_main(args: argparse.Namespace) -> int:
    """Entry point of ``lookright explain`` (arguments from :func:`add_explain_arguments`)."""
    summary = run_explain(
        model=args.model,
        image=args.image,
        question=args.question,
        answer=args.answer,
        methods=parse_methods(args.method),
        out=args.out,
        box=parse_box(args.box),
        max_new_tokens=args.max_new_tokens,
        family=args.family,
    )
    print(f"completion: {summary['completion']!r}")
    for name, path in summary["overlays"].items():
        reason = summary["no_map"].get(name)
        line = f"{name}: {path}" + (f" (no map: {reason})" if reason else "")
        if summary["alignment"] is not None:
            score = summary["alignment"][name]
            line += f"  alignment={'n/a' if score is None else f'{score:.4f}'}"
        print(line)
    print(f"maps: {summary['maps']}")
    return 0
