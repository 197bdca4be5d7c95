"""Real-geometry checkpoints: they look like hub downloads, and lookright loads them right.

The checkpoints (:mod:`lookright.models.real_geometry`, built once per session by the
``real_geometry_checkpoints`` fixture) reproduce the real processors, tokenizer conventions
and config layouts; these tests pin what they reproduce and the first thing a new user hits
with them: the tokenizer's padding side (issue 15, bug 1).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from lookright.models import load_model
from lookright.models.real_geometry import (
    FAMILIES,
    QWEN_FIRST_SPECIAL_ID,
    build_checkpoint,
)
from lookright.models.real_geometry import main as real_geometry_main

QWEN = ("qwen2_5_vl", "qwen2_vl")


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_looks_like_a_hub_download(real_geometry_checkpoints, family):
    folder = real_geometry_checkpoints[family]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == family
    dtype = config.get("torch_dtype") or config.get("dtype")
    assert dtype == ("float16" if family == "llava" else "bfloat16")
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert "chat_template" in tokenizer_config
    assert "padding_side" not in tokenizer_config  # as on the hub: the loader's default applies
    if family == "qwen2_5_vl":  # the hub's legacy layout
        assert config["rope_scaling"] == {"type": "mrope", "mrope_section": [16, 24, 24]}
        assert config["vision_config"]["window_size"] == 112
    if family == "qwen2_vl":  # transformers 5's own layout
        assert config["text_config"]["rope_parameters"]["mrope_section"] == [16, 24, 24]
    if family in QWEN:
        assert (preprocessor["min_pixels"], preprocessor["max_pixels"]) == (3136, 12845056)
        assert (preprocessor["patch_size"], preprocessor["merge_size"]) == (14, 2)
    else:
        assert config["vision_feature_layer"] == -2
        assert config["vision_config"]["image_size"] == 336
        assert preprocessor["image_processor_type"] == "CLIPImageProcessor"
        assert preprocessor["size"] == {"shortest_edge": 336}
        assert preprocessor["crop_size"] == {"height": 336, "width": 336}


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_has_the_real_conventions(real_geometry_checkpoints, family):
    tokenizer = AutoTokenizer.from_pretrained(real_geometry_checkpoints[family])
    assert tokenizer.padding_side == "right"
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if family in QWEN:
        ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "<|image_pad|>"])
        assert ids == [QWEN_FIRST_SPECIAL_ID, 151645, 151655]
        assert len(tokenizer) == 151665
        assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
        assert prompt.endswith("<|im_start|>assistant\n")
    else:
        assert tokenizer.convert_tokens_to_ids(["<s>", "</s>", "<image>", "<pad>"]) == [
            1,
            2,
            32000,
            32001,
        ]
        assert tokenizer("hi")["input_ids"][0] == 1  # BOS added
        assert prompt == "USER: <image>\nQ? ASSISTANT:"
    # <think> is not a token of the real vocabularies
    assert len(tokenizer("<think>", add_special_tokens=False)["input_ids"]) > 1


@pytest.mark.parametrize("family", FAMILIES)
def test_real_processor_geometry_reaches_the_layout(real_geometry_checkpoints, family):
    loaded = load_model(real_geometry_checkpoints[family], dtype=torch.float32)
    images = [_image(448, 308), _image(252, 364, 1)]
    encoded = loaded.adapter.encode(loaded.processor, images, ["What?", "Where is it?"])
    grids = [layout.grid for layout in loaded.adapter.visual_layouts(encoded.inputs, loaded.model)]
    if family in QWEN:  # smart resize to multiples of 28 px, one token per 28x28 px
        assert grids == [(11, 16), (13, 9)]
    else:  # CLIP ViT-L/14-336: 24 x 24 patches, CLS dropped
        assert grids == [(24, 24), (24, 24)]


def test_builds_are_deterministic(tmp_path, capsys):
    first = build_checkpoint("llava", tmp_path / "a", seed=3)
    assert (
        real_geometry_main(["--family", "llava", "--out", str(tmp_path / "b"), "--seed", "3"]) == 0
    )
    second = tmp_path / "b"
    assert str(second) in capsys.readouterr().out
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        digests = [hashlib.sha256((f / name).read_bytes()).hexdigest() for f in (first, second)]
        assert digests[0] == digests[1], name


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_pads_left_whatever_the_checkpoint_says(real_geometry_checkpoints, family):
    """Bug 1: TRL's GRPOTrainer re-runs the processor with the tokenizer's padding side to build
    ``mm_token_type_ids`` next to LEFT-padded prompt ids; real tokenizers load right-padded.

    Exactly TRL 1.16's two calls (``_generate``: ``padding_side="left"``; the forward inputs:
    the tokenizer's own side), then the model forward on what TRL concatenates.
    """
    loaded = load_model(real_geometry_checkpoints[family], dtype=torch.float32)
    processor = loaded.processor
    images = [[_image(448, 308)], [_image(252, 364, 1)]]  # prompts of different lengths
    texts = [loaded.adapter.prompt_text(processor, q) for q in ("What?", "Is there a dog here?")]
    prompts = processor(
        images=images, text=texts, padding=True, padding_side="left", return_tensors="pt"
    )
    forward = processor(images=images, text=texts, padding=True, return_tensors="pt")
    inputs = {k: v for k, v in forward.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():  # transformers' get_rope_index: "shape mismatch" when misaligned
        loaded.model(
            input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], **inputs
        )
    if "mm_token_type_ids" in forward:
        image_token = loaded.adapter.image_token_id(loaded.model)
        assert torch.equal(forward["mm_token_type_ids"] == 1, prompts["input_ids"] == image_token)
    assert processor.tokenizer.padding_side == "left"


@pytest.mark.parametrize("family", FAMILIES)
def test_cot_spans_and_question_found_with_the_real_tokenizers(real_geometry_checkpoints, family):
    """Real vocabularies have no ``<think>`` token and merge the tags' pieces with their
    neighbours (``.</``, ``>red``); located by the tags' own ids, every CoT map was "no map"
    ("no </think>"), and the question (tokenised alone: LLaMA's "▁What" vs "What" after a
    newline in the prompt) fell back to the whole prompt."""
    from lookright.saliency.batch import prepare_batch

    loaded = load_model(real_geometry_checkpoints[family], dtype=torch.float32)
    tokenizer = loaded.processor.tokenizer
    question = "What color is the rectangle?"
    completions = ["<think>The rectangle is red.</think>red", "Let me see.</think> blue"]
    batch = prepare_batch(
        loaded.model,
        loaded.processor,
        loaded.adapter,
        [_image(308, 196), _image(168, 252, 1)],
        [question, question],
        completions,
    )
    for b, sample in enumerate(batch.samples):
        assert sample.cot_reason is None, sample.cot_reason
        ids = batch.input_ids[b]
        thought = tokenizer.decode(ids[sample.thought], skip_special_tokens=True)
        answer = tokenizer.decode(ids[sample.answer], skip_special_tokens=True)
        assert ("rectangle is red" in thought) if b == 0 else ("Let me see" in thought)
        assert answer.strip().endswith("red" if b == 0 else "blue")
        asked = tokenizer.decode(ids[sample.prompt_text], skip_special_tokens=True)
        assert asked.strip().endswith(question) and len(asked) < len(question) + 8, asked
