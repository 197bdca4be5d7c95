"""Conformance on real geometry: every stage, run as a new user would, on checkpoints with the
real processors, tokenizers and config layouts of Qwen2.5-VL, Qwen2-VL and LLaVA-1.5.

One module-scoped run (:func:`conformance`), through the stages' own CLI in-process (as the
Snakemake rules call them, a real MLflow SQLite store), on non-square images of several sizes
(:mod:`tests.real_geometry`): for each family, from a random-init checkpoint saved like a hub
download: ``explain``; ``sft`` with LoRA on cluster.yaml's target list and ``freeze_vision``;
``grpo`` from it (every reward: accuracy, format, saliency alignment, SAYO; and every
configured reward set on Qwen2.5-VL); ``decode`` with every strategy; ``evaluate-saliency``
with every method and ``evaluate-answers``. In float32, and the Qwen2.5-VL chain again in
bfloat16 (its hub dtype), LLaVA's ``explain`` in float16 (its hub dtype). The tests assert
on the outputs (issue 15): map grids equal each image's visual grid; alignment in [0, 1] and
~1 for a planted map; no vision parameter moves when frozen; batched equals single; half
precision agrees with float32.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from lookright.cli import main
from lookright.decoding.params import STRATEGIES
from lookright.metrics.localisation import alignment_score
from lookright.models import load_model
from lookright.models.geometry import ImageView
from lookright.models.real_geometry import FAMILIES, build_checkpoint
from lookright.saliency.api import available_methods, explain_batch
from lookright.train.datasets import decode_image, load_samples
from tests.real_geometry import boxed_image, build_data, tokens_seeing_only_the_box

pytestmark = pytest.mark.slow

CLUSTER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_REWARDS = "acc+fmt+sal+sayo"
REWARD_SETS = ("acc", "acc+fmt", "acc+fmt+sal", "sayo", "acc+fmt+sayo")  # config.yaml's
METHODS = available_methods()
RUNS = [(family, "float32") for family in FAMILIES] + [("qwen2_5_vl", "bfloat16")]
if os.environ.get("LOOKRIGHT_CONFORMANCE_ONLY"):  # profiling one run: family/dtype
    RUNS = [tuple(os.environ["LOOKRIGHT_CONFORMANCE_ONLY"].split("/"))]
SFT = {
    "steps": 2,
    "batch_size": 2,
    "learning_rate": 1e-4,
    "freeze_vision": True,
    "min_accuracy": 0.0,
    "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": CLUSTER_TARGETS},
    "task_mix": ["vqa"],
    "save_steps": 100,
    "eval_samples": 2,
    "max_new_tokens": 6,
    "logging_steps": 1,
}
GRPO = {
    "steps": 1,
    "batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 6,
    "save_steps": 100,
    "eval_samples": 2,
    "max_new_tokens": 6,
    "lora": {"enabled": True, "r": 4, "alpha": 8, "target_modules": CLUSTER_TARGETS},
}
DECODE = {
    "split": "test",
    "tasks": ["pope", "caption"],
    "max_samples": 2,
    "batch_size": 2,
    "max_new_tokens": {"pope": 3, "caption": 4},
    "num_beams": 2,
    "sgrs": {"top_k": 3, "max_draws": 2, "layers": [0.5, 1.0]},
}
EVALUATE = {
    "split": "test",
    "max_samples": 2,
    "batch_size": 2,
    "max_new_tokens": 6,
    "methods": METHODS,
    "gallery_samples": 2,
}


TIMINGS: dict[str, float] = {}


def _run(*argv: str) -> None:
    started = time.perf_counter()
    assert main(list(argv)) == 0, argv
    key = f"{argv[0]} {argv[argv.index('--out') + 1].split('conformance')[-1]}"
    TIMINGS[key] = time.perf_counter() - started


def _config(family: str, model_dir: Path, **sections) -> str:
    return json.dumps(
        {"seed": 0, "model": {"name": family, "family": family, "base": str(model_dir)}, **sections}
    )


def _explain(checkpoint: Path, data: Path, out: Path) -> None:
    row = load_samples(data, "test", ("vqa",)).to_pylist()[0]
    image = out.parent / f"{out.name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    decode_image(row["image_bytes"]).save(image)
    box = ",".join(f"{v:.4f}" for v in row["boxes"][0])
    _run("explain", "--model", str(checkpoint), "--image", str(image), "--question",
         row["question"], "--answer", row["cot"], "--method", ",".join(METHODS),
         "--out", str(out), "--box", box)  # fmt: skip


def _chain(family: str, checkpoint: Path, data: Path, results: Path, reward_sets) -> dict:
    """sft -> grpo (each reward set) -> decode (every strategy) -> evaluate, through the CLI."""
    common = ["--results-dir", str(results), "--data", str(data)]
    sft = results / "sft"
    _run("sft", *common, "--base", str(checkpoint), "--out", str(sft),
         "--config-json", _config(family, checkpoint, sft=SFT))  # fmt: skip
    grpo = {}
    for k, reward_set in enumerate(reward_sets):
        out = results / "grpo" / reward_set
        section = {**GRPO, "reward_set": reward_set}
        if k > 0:  # the other configured sets: their rewards and recording, one short step
            section |= {"beta": 0.0, "eval_samples": 0}
        _run("grpo", *common, "--base", str(sft / "model"), "--out", str(out),
             "--config-json", _config(family, sft / "model", grpo=section))  # fmt: skip
        grpo[reward_set] = out
    policy = grpo[reward_sets[0]] / "model"
    for strategy in STRATEGIES:
        _run("decode", *common, "--model-dir", str(policy), "--strategy", strategy,
             "--out", str(results / "decode" / strategy),
             "--config-json", _config(family, policy, decode=DECODE))  # fmt: skip
    _run("evaluate-answers", *common, "--answers",
         str(results / "decode" / "sgrs+locore" / "answers.parquet"),
         "--out", str(results / "answers"),
         "--config-json", _config(family, policy, evaluate={"split": "test"}))  # fmt: skip
    _run("evaluate-saliency", *common, "--model-dir", str(policy),
         "--out", str(results / "evaluate"),
         "--config-json", _config(family, policy, evaluate=EVALUATE))  # fmt: skip
    return {"sft": sft / "model", "grpo": grpo, "policy": policy, "results": results}


@pytest.fixture(scope="module")
def conformance(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("conformance")
    threads = torch.get_num_threads()
    data = build_data(root / "data")
    runs, seconds = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        for family, dtype in RUNS:
            started = time.perf_counter()
            checkpoint = build_checkpoint(
                family, root / dtype / "checkpoints" / family, dtype=dtype
            )
            _explain(checkpoint, data, root / dtype / "explain" / family)
            sets = (ALL_REWARDS, *REWARD_SETS) if (family, dtype) == RUNS[0] else (ALL_REWARDS,)
            chain = _chain(family, checkpoint, data, root / dtype / family, sets)
            runs[family, dtype] = {**chain, "checkpoint": checkpoint}
            seconds[family, dtype] = time.perf_counter() - started
        half = build_checkpoint("llava", root / "float16" / "checkpoints" / "llava")
        _explain(half, data, root / "float16" / "explain" / "llava")
    torch.set_num_threads(threads)
    print("conformance seconds:", {f"{f}/{d}": round(s) for (f, d), s in seconds.items()})
    print("\n".join(f"{v:7.1f} s  {k}" for k, v in TIMINGS.items()))
    return {"root": root, "data": data, "runs": runs, "half_llava": half}


def _visual_grid(loaded, image) -> tuple[int, int]:
    encoded = loaded.adapter.encode(loaded.processor, [image], ["q"])
    return loaded.adapter.visual_layouts(encoded.inputs, loaded.model)[0].grid


@pytest.mark.parametrize(("family", "dtype"), RUNS)
def test_map_grids_equal_each_images_visual_grid(conformance, family, dtype):
    run = conformance["runs"][family, dtype]
    loaded = load_model(run["policy"], dtype=torch.float32)
    rows = {
        r["sample_id"]: r for r in load_samples(conformance["data"], "test", ("vqa",)).to_pylist()
    }
    maps = pq.read_table(run["results"] / "evaluate" / "maps.parquet").to_pylist()
    assert {m["method"] for m in maps} == set(METHODS)
    sizes = set()
    for stored in maps:
        image = decode_image(rows[stored["sample_id"]]["image_bytes"])
        sizes.add(image.size)
        assert (stored["height"], stored["width"]) == _visual_grid(loaded, image)
        view = loaded.adapter.image_view(loaded.processor, image.size)
        assert ImageView.from_list(stored["view"]) == view
    assert len(sizes) > 1 and all(w != h for w, h in sizes)
    explained = pq.read_table(conformance["root"] / dtype / "explain" / family / "maps.parquet")
    assert len(set(explained["height"].to_pylist())) == 1


@pytest.mark.parametrize(("family", "dtype"), RUNS)
def test_alignment_is_a_share_and_one_for_a_planted_map(conformance, family, dtype):
    run = conformance["runs"][family, dtype]
    saliency = pq.read_table(run["results"] / "evaluate" / "saliency.parquet").to_pylist()
    values = [r["alignment"] for r in saliency if r["alignment"] is not None]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(r["has_map"] == (r["alignment"] is not None) for r in saliency)
    summary = json.loads(
        (conformance["root"] / dtype / "explain" / family / "summary.json").read_text()
    )
    assert all(v is None or 0.0 <= v <= 1.0 for v in summary["alignment"].values())
    # a map on exactly the tokens that see the box, placed by the view the stage stored
    loaded = load_model(run["policy"], dtype=torch.float32)
    stored = pq.read_table(run["results"] / "evaluate" / "maps.parquet").to_pylist()[0]
    size = (stored["image_width"], stored["image_height"])
    box = [0.3, 0.25, 0.7, 0.75]
    planted = tokens_seeing_only_the_box(loaded, boxed_image(size, box)).astype(np.float64)
    view = ImageView.from_list(stored["view"])
    assert alignment_score(planted, [box], size, view) >= 0.95


def _vision_weights(folder: Path, family: str) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "model.safetensors"))
    prefixes = ("visual.", "model.visual.") if family != "llava" else ("vision_tower.",)
    chosen = {
        k.split("visual.", 1)[-1] if family != "llava" else k.split("vision_tower.", 1)[-1]: v
        for k, v in weights.items()
        if any(p in k for p in prefixes) and "merger" not in k
    }
    assert chosen, sorted(weights)[:5]
    return chosen


@pytest.mark.parametrize(("family", "dtype"), RUNS)
def test_no_vision_parameter_moves_when_frozen(conformance, family, dtype):
    run = conformance["runs"][family, dtype]
    base = _vision_weights(run["checkpoint"], family)
    for trained in (run["sft"], *[g / "model" for g in run["grpo"].values()]):
        after = _vision_weights(trained, family)
        assert after.keys() == base.keys()
        moved = [k for k in base if not torch.equal(base[k], after[k])]
        assert moved == [], f"{trained}: {moved[:4]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_single(conformance, family):
    run = conformance["runs"][family, "float32"]
    loaded = load_model(run["policy"], dtype=torch.float32)
    rows = load_samples(conformance["data"], "test", ("vqa",)).to_pylist()[:3]
    images = [decode_image(r["image_bytes"]) for r in rows]
    questions, completions = [r["question"] for r in rows], [r["cot"] for r in rows]
    # random: seeded per batch position; occlusion batches over cells, one sample at a time
    # (its own forwards, checked against direct log-probs in tests/saliency; on LLaVA's 576
    # cells it cost 5 min here)
    methods = [m for m in METHODS if m not in ("random", "occlusion")]
    args = (loaded.model, loaded.processor)
    together = explain_batch(*args, images, questions, completions, methods, loaded.adapter)
    for k in range(len(rows)):
        alone = explain_batch(
            *args, images[k : k + 1], questions[k : k + 1], completions[k : k + 1], methods
        )
        for method in methods:
            a, b = together[method][k].response_map, alone[method][0].response_map
            assert (a is None) == (b is None), method
            if a is not None:
                scale = float(np.abs(b).max())
                np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * scale, err_msg=method)


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(np.abs(a - b).sum() / np.abs(a).sum()), float(np.corrcoef(a, b)[0, 1])


HALF_TOLERANCE = {"relative_l1": 0.05, "correlation": 0.99}  # documented in docs/saliency.md
# Not held to the bound: a difference of two forwards' log-probs per cell, which in half
# precision on these random-init models is mostly logit rounding (measured relative L1 0.31
# for Qwen2.5-VL bf16 and 0.18 for LLaVA fp16; docs/methods.md#occlusion). Printed, not asserted.
HALF_PRECISION_UNBOUNDED = {"occlusion"}


@pytest.mark.parametrize(
    ("family", "checkpoint_key"), [("qwen2_5_vl", "bfloat16"), ("llava", "float16")]
)
def test_half_precision_maps_agree_with_float32(conformance, family, checkpoint_key):
    """The hub-dtype checkpoint explained in its own dtype (``lookright explain``) and in float32."""
    if checkpoint_key == "float16":
        checkpoint = conformance["half_llava"]
    else:
        checkpoint = conformance["runs"][family, checkpoint_key]["checkpoint"]
    half = pq.read_table(
        conformance["root"] / checkpoint_key / "explain" / family / "maps.parquet"
    ).to_pylist()
    summary = json.loads(
        (conformance["root"] / checkpoint_key / "explain" / family / "summary.json").read_text()
    )
    loaded = load_model(checkpoint, dtype=torch.float32)
    row = load_samples(conformance["data"], "test", ("vqa",)).to_pylist()[0]
    full = explain_batch(loaded.model, loaded.processor, [decode_image(row["image_bytes"])],
                         [row["question"]], [summary["completion"]], METHODS)  # fmt: skip
    measured = {}
    for stored in half:
        reference = full[stored["method"]][0].response_map
        assert (stored["map"] is None) == (reference is None), stored["method"]
        if reference is None or stored["method"] == "random":
            continue
        relative, correlation = _agreement(reference, np.asarray(stored["map"]))
        measured[stored["method"]] = (round(relative, 4), round(correlation, 5))
        if stored["method"] in HALF_PRECISION_UNBOUNDED:
            continue
        assert relative <= HALF_TOLERANCE["relative_l1"], (stored["method"], relative)
        assert correlation >= HALF_TOLERANCE["correlation"], (stored["method"], correlation)
    print(f"{family} {checkpoint_key} vs float32 (relative L1, correlation): {measured}")


@pytest.mark.parametrize(("family", "dtype"), RUNS)
def test_saliency_rewards_score_cot_completions(conformance, family, dtype):
    """The GRPO rewards on the SFT policy with CoT completions of the real tokenizer (a few
    training steps from random init do not produce the format on their own)."""
    from lookright.rewards import Policy, RegionAttentionReward, SaliencyAlignmentReward

    run = conformance["runs"][family, dtype]
    loaded = load_model(run["sft"])
    policy = Policy(loaded.model, loaded.processor, loaded.adapter)
    rows = load_samples(conformance["data"], "train", ("vqa",)).to_pylist()[:3]
    kwargs = {
        "images": [[decode_image(r["image_bytes"])] for r in rows],
        "question": [r["question"] for r in rows],
        "boxes": [r["boxes"] for r in rows],
    }
    prompts = [[{"role": "user", "content": r["question"]}] for r in rows]
    completions = [[{"role": "assistant", "content": r["cot"]}] for r in rows]
    alignment = SaliencyAlignmentReward(policy, "cot_bottleneck")(prompts, completions, **kwargs)
    assert all(v is not None and 0.0 <= v <= 1.0 for v in alignment), alignment
    region = RegionAttentionReward(policy)(prompts, completions, **kwargs)
    assert all(v is not None and -1.0 <= v <= 1.0 for v in region), region


@pytest.mark.parametrize(("family", "dtype"), RUNS)
def test_every_stage_wrote_its_outputs(conformance, family, dtype):
    run = conformance["runs"][family, dtype]
    results = run["results"]
    for strategy in STRATEGIES:
        answers = pq.read_table(results / "decode" / strategy / "answers.parquet")
        assert answers.num_rows == 2 * len(DECODE["tasks"])
    assert (results / "answers" / "metrics.json").is_file()
    metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
    assert metrics["n_samples"] == 2.0
    for reward_set, folder in run["grpo"].items():
        samples = pq.read_table(folder / "samples.parquet").to_pylist()
        assert samples, reward_set
        names = [c for c in samples[0] if c.startswith("reward_")]
        assert len(names) == len(reward_set.split("+")), (reward_set, names)
