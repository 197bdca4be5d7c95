"""Benchmark of lookright's saliency methods (not a timed test).

Measures, in ONE run, side by side:

1. ``generation``: greedy generation of a rollout batch (``--batch`` prompts, ``--new-tokens``
   forced new tokens) with the model's normal attention (SDPA);
2. ``row_pass``: logit_decomposition + cot_bottleneck on that same batch (ONE teacher-forced
   forward with hooks), and its ratio to the generation time (target <= 5 %); also the plain
   forward alone and the hooks' marginal cost (``RowPass.attached`` can ride on a forward that
   runs anyway, e.g. GRPO's log-prob forward);
3. ``reference``: the Saliency-R1 reference's way to get attention weights, generation with
   ``output_attentions=True`` on eager attention, next to plain eager and SDPA generation;
4. ``glimpse``: GLIMPSE on a ``--glimpse-tokens``-token answer with batched per-token gradients
   (``is_grads_batched``) vs one backward per token, and the speed-up;
5. ``methods``: time and peak memory of every registered method (row methods on the rollout
   batch, gradient methods on the GLIMPSE batch: full attention gradients of a whole rollout
   batch do not fit a GPU at the 3B shape). Peak memory: ``torch.cuda.max_memory_allocated``
   above the baseline on GPU; on CPU the peak of torch's allocator ("Total Allocated" in a
   ``profile_memory`` profiler trace), in a separate untimed run.

The rollout's completions get ``<think>`` as first token and ``</think>`` a few tokens before
the end (so the bottleneck has a thought and an answer); generation suppresses the image/vision
tokens and the tags so the re-encoded batch is well formed.

    python benchmarks/bench_saliency.py --out bench.json                 # tiny model, CPU
    python benchmarks/bench_saliency.py --device cuda --shape qwen2_5_vl_3b --out bench3b.json

``qwen2_5_vl_3b`` is a randomly initialised model with Qwen2.5-VL-3B-Instruct's config (text:
hidden 2048, 36 layers, 16 heads, 2 kv heads, intermediate 11008, vocab 151936, rope theta 1e6,
M-RoPE sections [16, 24, 24], tied embeddings; vision: depth 32, hidden 1280, intermediate
3420, 16 heads, window 112, full-attention blocks [7, 15, 23, 31]), bf16, images of 448 px
(16 x 16 = 256 visual tokens), batch 8, 256 new tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from big_shapes import qwen2_5_vl_3b_config
from PIL import Image

from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.qwen import Qwen25VLAdapter, _tiny_image_processor
from lookright.models.tokenizer import QWEN_FORMAT, train_tokenizer
from lookright.saliency import available_methods, get_method, run_methods
from lookright.saliency.base import METHODS, GradientMethod
from lookright.saliency.batch import prepare_batch

TEXTS = [
    "What color is the circle?",
    "Is there a star in the image?",
    "<think>The circle is at the top left. It is red.</think>red",
    "no yes blue green square triangle diamond cross purple orange",
] * 10
QUESTION = "What color is the shape at the top left of the image?"

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"image_size": 224, "batch": 8, "new_tokens": 256, "glimpse_tokens": 64, "chunk": 64},
    "qwen2_5_vl_3b": {
        "image_size": 448,
        "batch": 8,
        "new_tokens": 256,
        "glimpse_tokens": 64,
        "chunk": 16,
    },
}


# -- models -----------------------------------------------------------------------------------


def _tag_ids(tokenizer, tag: str) -> list[int]:
    """The token ids of a tag on its own (the tiny tokenizers have one token per tag)."""
    return tokenizer(tag, add_special_tokens=False)["input_ids"]


def build_tiny(family: str, image_size: int, device: str):
    adapter = get_adapter(family)
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 400)
    torch.manual_seed(0)
    model, processor = adapter.build_tiny(tokenizer, TinySize(), image_size)
    return model.to(device).eval(), processor, adapter


def build_qwen2_5_vl_3b(image_size: int, device: str):
    from transformers import Qwen2_5_VLForConditionalGeneration

    adapter = Qwen25VLAdapter()
    tokenizer = train_tokenizer(TEXTS, QWEN_FORMAT, 400)
    config = qwen2_5_vl_3b_config(tokenizer)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = adapter.processor_class(
        image_processor=_tiny_image_processor(image_size),
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template,
    )
    return model.eval(), processor, adapter


# -- measurement ------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_bytes(function: Callable[[], Any], device: str) -> int:
    """Peak memory allocated above the baseline while ``function`` runs.

    GPU: ``torch.cuda.max_memory_allocated``. CPU: torch's allocator events recorded by the
    profiler (``profile_memory=True``; the trace's "Total Allocated" counts from 0 at the
    start), so the number covers tensors only, like the GPU one. Untimed run of its own.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        function()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        function()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    totals = [e["args"].get("Total Allocated", 0) for e in events if e.get("name") == "[memory]"]
    return int(max(totals, default=0))


def timed(function: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` runs after one warm-up run; returns (seconds, last output)."""
    output = function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        output = function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), output


def interleaved(
    functions: dict[str, Callable[[], Any]], device: str, repeats: int
) -> dict[str, list[float]]:
    """Wall times of several functions run in turn, ``repeats`` rounds after a warm-up round.

    On a shared machine the load drifts; ratios taken within a round are robust to that. The
    process CPU times are kept too, under ``"<name>_cpu"`` (less sensitive to other users of
    a shared CPU machine; meaningless for GPU work).
    """
    for function in functions.values():
        function()
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, function in functions.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            function()
            synchronize(device)
            times.setdefault(name, []).append(time.perf_counter() - wall)
            times.setdefault(f"{name}_cpu", []).append(time.process_time() - cpu)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def measured(function: Callable[[], Any], device: str, repeats: int) -> tuple[float, int, Any]:
    """(median seconds, peak bytes, output): timed runs, then one untimed memory run."""
    seconds, output = timed(function, device, repeats)
    return seconds, peak_memory_bytes(function, device), output


# -- the benchmark ------------------------------------------------------------------------------


def make_images(count: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(count)
    ]


def suppressed_ids(model, processor) -> list[int]:
    """Ids generation must not emit: vision placeholders, think tags, pad/eos."""
    config, tokenizer = model.config, processor.tokenizer
    ids = {tokenizer.pad_token_id, tokenizer.eos_token_id}
    for name in (
        "image_token_id",
        "video_token_id",
        "vision_start_token_id",
        "vision_end_token_id",
    ):
        ids.add(getattr(config, name, None))
    for tag in ("<think>", "</think>"):
        ids.update(_tag_ids(tokenizer, tag))
    return sorted(i for i in ids if i is not None)


def generate(model, inputs, new_tokens: int, suppress: list[int], **extra):
    with torch.no_grad():
        return model.generate(
            **inputs,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            suppress_tokens=suppress,
            **extra,
        )


def with_think_tags(generated: torch.Tensor, tokenizer, answer_tokens: int = 6) -> list[list[int]]:
    """Rollout ids with ``<think>`` first and ``</think>`` ``answer_tokens`` before the end."""
    open_ids, close_ids = _tag_ids(tokenizer, "<think>"), _tag_ids(tokenizer, "</think>")
    completions = []
    for row in generated.tolist():
        ids = list(row)
        ids[: len(open_ids)] = open_ids
        cut = len(ids) - answer_tokens - len(close_ids)
        ids[cut : cut + len(close_ids)] = close_ids
        completions.append(ids)
    return completions


def run(args: argparse.Namespace) -> dict[str, Any]:
    shape = dict(SHAPES[args.shape])
    for key in ("batch", "new_tokens", "glimpse_tokens", "image_size", "chunk"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    device = args.device
    if args.shape == "tiny":
        model, processor, adapter = build_tiny(args.family, shape["image_size"], device)
    else:
        model, processor, adapter = build_qwen2_5_vl_3b(shape["image_size"], device)
    images = make_images(shape["batch"], shape["image_size"])
    questions = [QUESTION] * shape["batch"]
    prompts = adapter.encode(processor, images, questions).inputs.to(device)
    suppress = suppressed_ids(model, processor)
    report: dict[str, Any] = {
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "shape": args.shape,
        "family": adapter.family,
        "dtype": str(next(model.parameters()).dtype),
        "parameters": sum(p.numel() for p in model.parameters()),
        **shape,
    }

    # 1-2. generation of the rollout batch (SDPA) and logit decomposition + CoT bottleneck on
    # the same batch (ONE teacher-forced forward), timed in alternation
    def rollout(**extra):
        return generate(model, prompts, shape["new_tokens"], suppress, **extra)

    generated = rollout()
    new_tokens = generated[:, prompts["input_ids"].shape[1] :]
    completion_ids = with_think_tags(new_tokens, processor.tokenizer)
    batch = prepare_batch(
        model, processor, adapter, images, questions, completion_ids=completion_ids
    ).to(device)
    report["sequence_length"] = int(batch.input_ids.shape[1])
    report["visual_tokens"] = len(batch.samples[0].visual)
    pair = [get_method("logit_decomposition"), get_method("cot_bottleneck")]

    def plain_forward():
        with torch.no_grad():
            model.model(**batch.inputs, use_cache=False)

    times = interleaved(
        {
            "generation": rollout,
            "row_pass": lambda: run_methods(model, adapter, batch, pair),
            "plain_forward": plain_forward,
        },
        device,
        args.repeats,
    )
    report["generation_s"] = statistics.median(times["generation"])
    report["row_pass_s"] = statistics.median(times["row_pass"])
    report["row_pass_ratio_to_generation"] = median_ratio(times["row_pass"], times["generation"])
    report["row_pass_ratio_to_generation_cpu_time"] = median_ratio(
        times["row_pass_cpu"], times["generation_cpu"]
    )
    hooks_only = [r - f for r, f in zip(times["row_pass"], times["plain_forward"], strict=True)]
    report["plain_forward_s"] = statistics.median(times["plain_forward"])
    report["hooks_only_ratio_to_generation"] = median_ratio(hooks_only, times["generation"])
    report["rounds"] = {name: [round(t, 4) for t in values] for name, values in times.items()}
    report["row_pass_peak_bytes"] = peak_memory_bytes(
        lambda: run_methods(model, adapter, batch, pair), device
    )
    results = run_methods(model, adapter, batch, pair)
    report["cot_maps"] = sum(r.has_map for r in results["cot_bottleneck"])

    # 3. the reference: generate with output_attentions=True on eager attention
    if not args.skip_reference:
        model.set_attn_implementation("eager")
        reference = interleaved(
            {
                "eager": rollout,
                "eager_attentions": lambda: rollout(
                    output_attentions=True, return_dict_in_generate=True
                ),
            },
            device,
            args.repeats,
        )
        peak = peak_memory_bytes(
            lambda: rollout(output_attentions=True, return_dict_in_generate=True), device
        )
        model.set_attn_implementation("sdpa")
        seconds = statistics.median(reference["eager_attentions"])
        report["reference"] = {
            "generation_eager_s": statistics.median(reference["eager"]),
            "generation_eager_output_attentions_s": seconds,
            "output_attentions_overhead_vs_eager": median_ratio(
                reference["eager_attentions"], reference["eager"]
            )
            - 1.0,
            "peak_bytes": peak,
            "lookright_total_over_reference": (report["generation_s"] + report["row_pass_s"])
            / seconds,
        }

    # 4. GLIMPSE: batched vs looped per-token gradients on a glimpse_tokens-token answer
    count = args.glimpse_batch
    glimpse_ids = [ids[: shape["glimpse_tokens"]] for ids in completion_ids[:count]]
    glimpse_batch = prepare_batch(
        model, processor, adapter, images[:count], questions[:count], completion_ids=glimpse_ids
    ).to(device)
    modes = {
        mode: get_method("glimpse", batched=batched, chunk=shape["chunk"])
        for mode, batched in (("batched", True), ("loop", False))
    }
    runs = {
        mode: (lambda method=method: run_methods(model, adapter, glimpse_batch, [method]))
        for mode, method in modes.items()
    }
    times = interleaved(runs, device, args.repeats)
    glimpse = {f"{mode}_s": statistics.median(times[mode]) for mode in runs}
    glimpse.update(
        {f"{mode}_peak_bytes": peak_memory_bytes(run, device) for mode, run in runs.items()}
    )
    glimpse["loop_over_batched"] = median_ratio(times["loop"], times["batched"])
    glimpse["loop_over_batched_cpu_time"] = median_ratio(times["loop_cpu"], times["batched_cpu"])
    report["glimpse"] = glimpse

    # 5. every method on its own: time and peak memory
    per_method = {}
    for name in available_methods():
        options = {"chunk": shape["chunk"]} if issubclass(METHODS[name], GradientMethod) else {}
        method = get_method(name, **options)
        target = glimpse_batch if isinstance(method, GradientMethod) else batch
        seconds, peak, _ = measured(
            lambda method=method, target=target: run_methods(model, adapter, target, [method]),
            device,
            args.repeats,
        )
        per_method[name] = {
            "seconds": seconds,
            "peak_bytes": peak,
            "batch": "glimpse" if target is glimpse_batch else "rollout",
        }
    report["methods"] = per_method
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--family", default="qwen2_5_vl", help="family of the tiny model")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--new-tokens", dest="new_tokens", type=int, default=None)
    parser.add_argument("--glimpse-tokens", dest="glimpse_tokens", type=int, default=None)
    parser.add_argument("--glimpse-batch", dest="glimpse_batch", type=int, default=1)
    parser.add_argument("--image-size", dest="image_size", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="tokens per batched backward")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 on CPU: OpenMP threads on an oversubscribed shared "
        "machine make timings swing 10-50x; the GPU run ignores it)",
    )
    parser.add_argument("--out", required=True, help="JSON results path")
    args = parser.parse_args(argv)
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    report = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
