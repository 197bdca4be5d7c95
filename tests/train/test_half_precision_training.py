"""Full fine-tuning of a half-precision checkpoint keeps float32 master weights (issue 15, bug 6).

Real checkpoints load in bf16 (``torch_dtype``). AdamW on bf16 weights rounds away every update
smaller than half a unit in the last place: at a fine-tuning learning rate most weights never
move, and nothing says so.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lookright.cli import main

pytestmark = pytest.mark.slow  # a real (tiny) SFT run


def _language_weights(folder) -> dict[str, torch.Tensor]:
    weights = load_file(str(folder / "model.safetensors"))
    return {k: v for k, v in weights.items() if ".layers." in k and "visual" not in k}


def test_full_finetuning_of_a_bf16_checkpoint_moves_its_weights(
    real_geometry_checkpoints, real_geometry_data, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    base = real_geometry_checkpoints["qwen2_vl"]  # bf16, as on the hub
    sft = {
        "steps": 4,
        "batch_size": 2,
        "learning_rate": 5e-5,  # below half a bf16 ulp of weights of size 0.016-0.031
        "task_mix": ["vqa"],
        "min_accuracy": 0.0,
        "save_steps": 100,
        "eval_samples": 1,
        "max_new_tokens": 2,
    }
    model = {"name": "qwen2-vl", "family": "qwen2_vl", "base": str(base)}
    out = tmp_path / "sft"
    assert main(["sft", "--data", str(real_geometry_data), "--base", str(base), "--out",
                 str(out), "--results-dir", str(tmp_path),
                 "--config-json", json.dumps({"sft": sft, "model": model})]) == 0  # fmt: skip
    before, after = _language_weights(base), _language_weights(out / "model")
    assert after and all(v.dtype == torch.bfloat16 for v in after.values())  # saved as it came
    moved = total = 0
    for name, weight in before.items():
        sized = (weight.abs() >= 2**-6) & (weight.abs() < 2**-5)
        moved += int((sized & (after[name] != weight)).sum())
        total += int(sized.sum())
    assert total > 1000 and moved / total > 0.2, (moved, total)
