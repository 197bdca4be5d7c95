"""LoRA adapters stay in the language model (issue 15, bug 3).

PEFT matches a list of ``target_modules`` by the last part of each module name, and the
vision encoders reuse the language model's names: with cluster.yaml's list, Qwen2.5-VL's vision
MLPs (``gate/up/down_proj``) and LLaVA's CLIP attention (``q/k/v_proj``) got adapters, which
``freeze_vision`` never saw and ``merge_and_unload`` wrote into the saved encoder.
"""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model

from lookright.config import LoraSection
from lookright.models import load_model
from lookright.models.real_geometry import FAMILIES
from lookright.train.common import language_model_targets, lora_config

CLUSTER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_adapters_only_in_the_language_model(real_geometry_checkpoints, family):
    loaded = load_model(real_geometry_checkpoints[family], dtype=torch.float32)
    model, adapter = loaded.model, loaded.adapter
    section = LoraSection(enabled=True, r=4, alpha=8, target_modules=CLUSTER_TARGETS)
    peft_model = get_peft_model(model, lora_config(section, model, adapter))
    vision = adapter.vision_tower(model)
    vision_names = {id(p) for p in vision.parameters()}
    adapted_in_vision = [n for n, m in vision.named_modules() if hasattr(m, "lora_A")]
    assert adapted_in_vision == []
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any(id(p) in vision_names for p in peft_model.parameters() if p.requires_grad)
    language = adapter.text_model(model)
    adapted = [n for n, m in language.named_modules() if hasattr(m, "lora_A")]
    layers = len(adapter.decoder_layers(model))
    assert len(adapted) == layers * len(CLUSTER_TARGETS)
    assert len(trainable) == 2 * len(adapted)  # lora_A and lora_B of each


def test_targets_that_match_nothing_in_the_language_model_are_an_error(real_geometry_checkpoints):
    loaded = load_model(real_geometry_checkpoints["llava"], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"lora.target_modules \['fc1'\]"):
        language_model_targets(loaded.model, loaded.adapter, ["fc1"])  # a CLIP-only name
