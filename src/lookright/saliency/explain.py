"""``lookright explain``: where does a model look when it answers one question about one image?

    lookright explain --model <dir or hub id> --image <file> --question "..." \\
        [--answer "..."] --method logit_decomposition,cot_bottleneck --out <dir> \\
        [--box x1,y1,x2,y2]

Generates the answer greedily (or teacher-forces ``--answer``), computes the maps, writes
``<out>/maps.parquet`` (:mod:`storage`), one PNG overlay per method (``<out>/<method>.png``),
a side-by-side panel of all methods (``<out>/panel.png``) and ``<out>/summary.json``, and
prints the alignment score of each map with the box when one is given (normalised
coordinates, x by width, y by height).

From Python, :func:`explain` does the same on a loaded model and returns an
:class:`Explanation` (``lookright.explain``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from lookright.config import ConfigError
from lookright.metrics.localisation import alignment_score
from lookright.models.base import LoadedModel, load_model
from lookright.saliency.api import available_methods, explain_sample
from lookright.saliency.render import overlay, panel, save_overlay
from lookright.saliency.storage import map_row, write_maps
from lookright.saliency.types import SaliencyResult


def parse_methods(text: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> validated method names (error lists the valid ones)."""
    items = [text] if isinstance(text, str) else list(text)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"no saliency method given; valid methods: {available_methods()}")
    unknown = [n for n in names if n not in available_methods()]
    if unknown:
        raise ConfigError(
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
        raise ConfigError(f"--box needs 4 comma-separated values x1,y1,x2,y2, got {len(values)}")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ConfigError(
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
        raise ConfigError(f"--image {path}: not a readable image ({error})") from None


def generate_answer(
    loaded: LoadedModel, image: Image.Image, question: str, max_new_tokens: int
) -> str:
    """Greedy completion of the prompt, decoded keeping ``<think>`` tags (not special tokens)."""
    from lookright.decoding.plain import plain_generate

    encoded = loaded.adapter.encode(loaded.processor, [image], [question])
    inputs = encoded.inputs.to(next(loaded.model.parameters()).device)
    output = plain_generate(loaded.model, inputs, "greedy", max_new_tokens=max_new_tokens)
    return loaded.processor.tokenizer.decode(output.tokens[0], skip_special_tokens=True)


@dataclass
class Explanation:
    """Where a model looked when it gave ``completion`` to ``question`` about ``image``.

    ``maps[method]`` is that method's :class:`SaliencyResult` (``response_map`` on the model's
    visual-token grid, or ``None`` with a ``reason``); ``generated`` says whether the
    completion was generated (greedy) or given.
    """

    image: Image.Image
    question: str
    completion: str
    generated: bool
    maps: dict[str, SaliencyResult]

    def overlay(self, method: str, boxes: Sequence[Sequence[float]] | None = None) -> Image.Image:
        """The image with ``method``'s map blended over it (and normalised boxes drawn)."""
        return overlay(self.image, self.maps[method].response_map, boxes)

    def panel(self, boxes: Sequence[Sequence[float]] | None = None) -> Image.Image:
        """The image and every method's overlay side by side."""
        return panel(self.image, {k: r.response_map for k, r in self.maps.items()}, boxes)


def explain(
    model: Any,
    processor: Any,
    image: Image.Image,
    question: str,
    answer: str | None = None,
    methods: Sequence[str] = ("logit_decomposition",),
    *,
    max_new_tokens: int = 64,
) -> Explanation:
    """Saliency maps of one answer about one image, from every method in ``methods``.

    ``model``/``processor``: a supported VLM (Qwen2.5-VL, Qwen2-VL, LLaVA-1.5) as loaded by
    ``from_pretrained`` (or :func:`lookright.models.load_model`); ``answer``: the completion
    to explain, teacher-forced; None generates it greedily (up to ``max_new_tokens``).
    Methods: :func:`lookright.saliency.available_methods` (e.g. ``logit_decomposition``,
    ``cot_bottleneck`` of Saliency-R1, ``attention_gradient`` of LVLMs-Saliency, ``glimpse``).
    """
    from lookright.models.base import adapter_for

    names = parse_methods(methods)
    adapter = adapter_for(model)
    loaded = LoadedModel(model, processor, adapter)
    picture = image.convert("RGB")
    completion = (
        answer if answer is not None else generate_answer(loaded, picture, question, max_new_tokens)
    )
    maps = explain_sample(model, processor, picture, question, completion, names, adapter)
    return Explanation(picture, question, completion, answer is None, maps)


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
    explanation = explain(
        loaded.model, loaded.processor, picture, question, answer, names,
        max_new_tokens=max_new_tokens,
    )  # fmt: skip
    results, completion = explanation.maps, explanation.completion
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
    boxes = [box] if box else None
    explanation.panel(boxes).save(out_dir / "panel.png", format="PNG")
    summary = {
        "model": model,
        "image": str(image),
        "question": question,
        "completion": completion,
        "generated": answer is None,
        "maps": str(write_maps(rows, out_dir / "maps.parquet")),
        "overlays": overlays,
        "panel": str(out_dir / "panel.png"),
        "no_map": {name: r.reason for name, r in results.items() if not r.has_map},
        "alignment": scores if box else None,
        "box": box,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
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


def cli_main(args: argparse.Namespace) -> int:
    """Entry point of ``lookright explain`` (arguments from :func:`add_cli_arguments`)."""
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
