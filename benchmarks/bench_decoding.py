"""Benchmark of lookright's decoding strategies (not a timed test).

Targets (LVLMs-Saliency): LocoRE adds <= 2 % latency to plain greedy decoding on the same
prompts; SGRS adds <= 25 % to plain top-K sampling (the paper reports 30-40 %: one extra
backward per step). All strategies run through ``lookright.decoding.generate`` on the same
left-padded batch, with the model's own attention (SDPA) and KV cache; end-of-sequence is
disabled so every strategy generates exactly ``--new-tokens`` tokens per sequence. Strategies
are run in interleaved rounds (robust to load drift on a shared machine); overheads are the
median of the per-round ratios. Also reported: transformers' own top-K sampling
(``hf_sample``), which ``sample`` must match.

Peak memory: ``torch.cuda.max_memory_allocated`` above the model's footprint on GPU; on CPU
the peak of torch's allocator in a separate untimed run (profiler ``profile_memory``).

    python benchmarks/bench_decoding.py --out bench_decoding.json          # tiny model, CPU
    python benchmarks/bench_decoding.py --device cuda --shape qwen2_5_vl_3b --out q3b.json
    python benchmarks/bench_decoding.py --device cuda --shape llava_7b --out llava7b.json

Shapes: ``tiny`` (config.yaml's tiny Qwen2.5-VL: hidden 128, 4 layers; 224-px images, 64 visual
tokens; Python-overhead-bound on CPU), ``small`` (hidden 512, 8 layers, intermediate 2048:
compute-bound on a CPU core), ``tiny-llava``/``small-llava`` (the same, LLaVA), ``qwen2_5_vl_3b`` (Qwen2.5-VL-3B-Instruct's
architecture, random weights, bf16, 448-px images = 256 visual tokens) and ``llava_7b``
(LLaVA-1.5-7B: CLIP ViT-L/14-336 + LLaMA-7B, random weights, bf16, 576 visual tokens).
Big shapes default to batch 8 and 128 new tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from big_shapes import llava_1_5_7b_config, qwen2_5_vl_3b_config
from PIL import Image

from lookright.decoding import STRATEGIES, generate
from lookright.models import get_adapter
from lookright.models.base import TinySize
from lookright.models.tokenizer import train_tokenizer

TEXTS = [
    "What color is the circle?",
    "Is there a star in the image?",
    "<think>The circle is at the top left. It is red.</think>red",
    "no yes blue green square triangle diamond cross purple orange",
] * 10
QUESTIONS = [
    "Is there a star in the image?",
    "Describe the image.",
    "What color is the shape at the top left of the image?",
    "Is there a red circle?",
]

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"family": "qwen2_5_vl", "image_size": 224, "batch": 8, "new_tokens": 128},
    "tiny-llava": {"family": "llava", "image_size": 224, "batch": 8, "new_tokens": 128},
    "small": {"family": "qwen2_5_vl", "image_size": 224, "batch": 8, "new_tokens": 64},
    "small-llava": {"family": "llava", "image_size": 224, "batch": 8, "new_tokens": 64},
    "qwen2_5_vl_3b": {"family": "qwen2_5_vl", "image_size": 448, "batch": 8, "new_tokens": 128},
    "llava_7b": {"family": "llava", "image_size": 336, "batch": 8, "new_tokens": 128},
}


# -- models -----------------------------------------------------------------------------------


# compute-bound on a CPU core (~0.5 GFLOP per step at batch 8), unlike the Python-bound tiny
SMALL = TinySize(
    text_hidden=512,
    text_layers=8,
    text_heads=8,
    text_kv_heads=2,
    text_intermediate=2048,
    vision_hidden=128,
    vision_layers=2,
    vision_heads=4,
    vision_intermediate=256,
)


def build(shape: str, device: str, dtype: torch.dtype):
    """(model, processor, adapter) of ``shape``; big shapes are built on ``device`` in bf16."""
    spec = SHAPES[shape]
    adapter = get_adapter(spec["family"])
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 400)
    torch.manual_seed(0)
    if shape.startswith(("tiny", "small")):
        size = TinySize() if shape.startswith("tiny") else SMALL
        model, processor = adapter.build_tiny(tokenizer, size, spec["image_size"])
        model = model.to(device=device, dtype=dtype)
    else:
        _, processor = adapter.build_tiny(tokenizer, TinySize(), spec["image_size"])
        if spec["family"] == "llava":
            from transformers import LlavaForConditionalGeneration, LlavaProcessor
            from transformers.models.llava.image_processing_pil_llava import (
                LlavaImageProcessorPil,
            )

            config, cls = llava_1_5_7b_config(tokenizer), LlavaForConditionalGeneration
            size = spec["image_size"]
            processor = LlavaProcessor(
                image_processor=LlavaImageProcessorPil(
                    size={"shortest_edge": size}, crop_size={"height": size, "width": size}
                ),
                tokenizer=tokenizer,
                patch_size=14,
                vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
                chat_template=tokenizer.chat_template,
            )
        else:
            from transformers import Qwen2_5_VLForConditionalGeneration

            config, cls = qwen2_5_vl_3b_config(tokenizer), Qwen2_5_VLForConditionalGeneration
        config._attn_implementation = "sdpa"
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = cls(config)
        finally:
            torch.set_default_dtype(default)
    model.set_attn_implementation("sdpa")
    # no end of sequence: every strategy generates exactly --new-tokens tokens
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), processor, adapter


def batch_inputs(processor, adapter, batch: int, image_size: int, device: str):
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
        for _ in range(batch)
    ]
    questions = [QUESTIONS[b % len(QUESTIONS)] for b in range(batch)]  # padding: varied lengths
    return adapter.encode(processor, images, questions).inputs.to(device)


# -- measurement ------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_peak_bytes(function) -> int:
    """Peak of torch's CPU allocator while ``function`` runs (profiler memory events)."""
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


def attention_call_us(model, adapter, batch: int, kv_length: int, device: str, calls: int = 2000):
    """Microseconds per decoding-step attention call: the model's SDPA (no mask) vs lookright's
    function in a LocoRE layer (bias mask cached per step, as in decoding) and in an untouched
    layer. Load-independent view of LocoRE's per-layer cost (min over 3 rounds)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lookright.decoding import LocoreParams, attention_session
    from lookright.decoding.attention import lookright_attention

    module = adapter.decoder_layers(model)[0].self_attn
    heads = model.config.text_config.num_attention_heads
    kv_heads = model.config.text_config.num_key_value_heads
    head_dim = module.head_dim
    dtype = next(model.parameters()).dtype
    query = torch.randn(batch, heads, 1, head_dim, device=device, dtype=dtype)
    key = torch.randn(batch, kv_heads, kv_length, head_dim, device=device, dtype=dtype)
    value = torch.randn_like(key)

    def per_call(function) -> float:
        for _ in range(50):
            function()
        _sync(device)
        start = time.perf_counter() if device.startswith("cuda") else time.process_time()
        for _ in range(calls):
            function()
        _sync(device)
        end = time.perf_counter() if device.startswith("cuda") else time.process_time()
        return (end - start) / calls * 1e6

    rounds: dict[str, list[float]] = {"sdpa": [], "locore_layer": [], "untouched_layer": []}
    for _ in range(3):
        rounds["sdpa"].append(
            per_call(lambda: sdpa_attention_forward(module, query, key, value, None))
        )
        with attention_session(model, adapter, locore=LocoreParams(beta=0.2)) as session:
            session.prompt_width = kv_length - 10

            def lookright():
                return lookright_attention(module, query, key, value, None)

            rounds["locore_layer"].append(per_call(lookright))
            session.locore_layers = frozenset()
            rounds["untouched_layer"].append(per_call(lookright))
    return {name: min(values) for name, values in rounds.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = SHAPES[args.shape]
    batch = args.batch or spec["batch"]
    new_tokens = args.new_tokens or spec["new_tokens"]
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.float32 if args.shape.startswith(("tiny", "small")) else torch.bfloat16)
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    model, processor, adapter = build(args.shape, args.device, dtype)
    inputs = batch_inputs(processor, adapter, batch, spec["image_size"], args.device)
    pad = processor.tokenizer.pad_token_id
    params = {"top_k": args.top_k, "alpha": args.alpha}

    def hf_sample():
        model.generate(
            **inputs,
            do_sample=True,
            top_k=args.top_k,
            top_p=1.0,
            temperature=1.0,
            max_new_tokens=new_tokens,
            pad_token_id=pad,
            eos_token_id=None,
        )

    def ours(strategy: str):
        def call():
            torch.manual_seed(0)
            kwargs = dict(params) if strategy in ("sgrs", "sgrs+locore") else {}
            if strategy == "sample":
                kwargs["top_k"] = args.top_k
            if "locore" in strategy and args.beta is not None:
                kwargs["beta"] = args.beta
            out = generate(
                model, inputs, strategy, max_new_tokens=new_tokens, num_beams=args.beams,
                **kwargs,
            )  # fmt: skip
            assert all(len(t) == new_tokens for t in out.tokens), "EOS must be off"

        return call

    def measure(function) -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds) of one call."""
        _sync(args.device)
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        _sync(args.device)
        return time.perf_counter() - wall, time.process_time() - cpu

    functions = {s: ours(s) for s in args.strategies}
    if args.hf_sample:
        functions["hf_sample"] = hf_sample
    for function in functions.values():  # warm-up round
        function()
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(args.repeats):  # interleaved rounds: robust to load drift
        for name, function in functions.items():
            w, c = measure(function)
            wall[name].append(w)
            cpu[name].append(c)
    memory: dict[str, int] = {}
    if not args.no_memory:
        for name, function in functions.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                function()
                torch.cuda.synchronize()
                memory[name] = int(torch.cuda.max_memory_allocated() - base)
            else:
                memory[name] = cpu_peak_bytes(function)
    tokens = batch * new_tokens
    # On CPU the process's own CPU time is the robust clock on a shared machine (one thread:
    # CPU time = compute time, other jobs' load excluded); on GPU, synchronised wall time.
    clock = "wall" if args.device.startswith("cuda") else "process_cpu"
    times = wall if clock == "wall" else cpu
    results = {
        name: {
            "median_wall_s": statistics.median(wall[name]),
            "median_cpu_s": statistics.median(cpu[name]),
            "wall_s": wall[name],
            "cpu_s": cpu[name],
            "tokens_per_s": tokens / statistics.median(times[name]),
            "tokens_per_s_wall": tokens / statistics.median(wall[name]),
            "peak_memory_bytes": memory.get(name),
        }
        for name in functions
    }

    def overhead(a: str, b: str, clock_times) -> float | None:
        if a not in clock_times or b not in clock_times:
            return None
        pairs = zip(clock_times[a], clock_times[b], strict=True)
        return statistics.median(x / y for x, y in pairs) - 1

    pairs = {
        "locore_vs_greedy": ("locore", "greedy"),
        "sgrs_vs_sample": ("sgrs", "sample"),
        "sgrs+locore_vs_sample": ("sgrs+locore", "sample"),
        "sample_vs_hf_sample": ("sample", "hf_sample"),
    }
    micro = attention_call_us(
        model, adapter, batch, int(inputs["input_ids"].shape[1]) + new_tokens // 2, args.device
    )
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    return {
        "shape": args.shape,
        "device": args.device,
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
        "dtype": str(dtype),
        "batch": batch,
        "new_tokens": new_tokens,
        "prompt_width": int(inputs["input_ids"].shape[1]),
        "n_decoder_layers": len(adapter.decoder_layers(model)),
        "repeats": args.repeats,
        "params": {**params, "beta": args.beta, "num_beams": args.beams},
        "clock": clock,
        "results": results,
        "overhead": {k: overhead(a, b, times) for k, (a, b) in pairs.items()},
        "overhead_wall": {k: overhead(a, b, wall) for k, (a, b) in pairs.items()},
        "attention_call_us": micro,
        # LocoRE's extra cost per decoding step from the per-call numbers (every layer a
        # LocoRE layer), relative to a greedy step: a load-independent estimate
        "locore_call_overhead_vs_greedy_step": (
            len(adapter.decoder_layers(model))
            * (micro["locore_layer"] - micro["sdpa"])
            * 1e-6
            / (statistics.median(times["greedy"]) / new_tokens)
            if "greedy" in times
            else None
        ),
        "targets": {"locore_vs_greedy": 0.02, "sgrs_vs_sample": 0.25},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--dtype", default=None, help="default: float32 tiny, bfloat16 big")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--strategies",
        type=lambda s: s.split(","),
        default=["greedy", "locore", "sample", "sgrs", "sgrs+locore"],
        help=f"comma-separated, from {','.join(STRATEGIES)}",
    )
    parser.add_argument("--hf-sample", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.6)
    parser.add_argument("--beta", type=float, default=None, help="default: the family's")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--out", type=Path, default=None, help="JSON report")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
