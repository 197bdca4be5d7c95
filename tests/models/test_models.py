"""Model adapters of the three families on tiny random models (sizes of config/smoke.yaml)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lookright.models import ADAPTERS, adapter_for, get_adapter, load_model
from lookright.models.base import TinySize
from lookright.models.tokenizer import THINK_TAGS, train_tokenizer

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava")
QWEN = ("qwen2_5_vl", "qwen2_vl")
IMAGE_SIZE = 112
GRID = (4, 4)  # 112 px / 28 px per visual token (Qwen: 14-px patches merged 2x2; LLaVA: 28-px)
TEXTS = [
    "What color is the circle?",
    "Is there a star in the image?",
    "<think>The circle is at the top left. It is red.</think>red",
    "no yes blue green square triangle",
] * 5
QUESTIONS = ["Color?", "What color is the circle at the top left of the image?"]
COMPLETIONS = ["<think>The circle is red.</think>red", "blue"]
EOS = {"qwen2_5_vl": "<|im_end|>", "qwen2_vl": "<|im_end|>", "llava": "</s>"}


@pytest.fixture(scope="module")
def tiny_size(smoke_config) -> TinySize:
    return TinySize(**smoke_config["pretrain"]["tiny"])


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        for _ in range(2)
    ]


@pytest.fixture(scope="module")
def tiny(tiny_size, smoke_config):
    """``tiny(family) -> (model, processor, adapter)``, built once per family."""
    built = {}

    def get(family: str):
        if family not in built:
            adapter = get_adapter(family)
            vocab = smoke_config["pretrain"]["vocab_size"]
            tokenizer = train_tokenizer(TEXTS, adapter.chat_format, vocab)
            torch.manual_seed(0)
            model, processor = adapter.build_tiny(tokenizer, tiny_size, IMAGE_SIZE)
            built[family] = (model.eval(), processor, adapter)
        return built[family]

    return get


def _image_mask(inputs, model) -> torch.Tensor:
    return inputs["input_ids"] == int(model.config.image_token_id)


# --------------------------------------------------------------------------- registry


def test_registry_and_errors_list_valid_choices(tmp_path):
    for family in FAMILIES:
        assert get_adapter(family).family == family
    assert sorted(ADAPTERS) == ["llava", "qwen2_5_vl", "qwen2_vl"]  # filled on first lookup
    with pytest.raises(ValueError) as caught:
        get_adapter("nope")
    assert "'nope'" in str(caught.value)
    assert "['llava', 'qwen2_5_vl', 'qwen2_vl']" in str(caught.value)

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError) as caught:
        adapter_for(tmp_path)
    assert "model_type 'bert' has no lookright adapter" in str(caught.value)
    assert "['llava', 'qwen2_5_vl', 'qwen2_vl']" in str(caught.value)
    assert str(tmp_path / "config.json") in str(caught.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}: no config.json"):
        load_model(empty)


# --------------------------------------------------------------------------- tokenizer


def test_every_family_is_found_whichever_module_was_imported_first():
    """A fresh interpreter that imported only the Qwen module still finds LLaVA (and back)."""
    for first, other in (("qwen", "llava"), ("llava", "qwen2_5_vl")):
        code = (
            f"import lookright.models.{first}\n"
            "from lookright.models import get_adapter\n"
            f"print(get_adapter({other!r}).family)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == other


@pytest.mark.parametrize("family", FAMILIES)
def test_think_tags_are_single_tokens_kept_by_decode(tiny, family):
    _, processor, _ = tiny(family)
    tokenizer = processor.tokenizer
    text = "<think>The circle is red.</think>red"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    for tag in THINK_TAGS:
        tag_ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        assert len(tag_ids) == 1 and tag_ids[0] in ids
    with_eos = ids + [tokenizer.eos_token_id]
    assert tokenizer.decode(with_eos, skip_special_tokens=False) == text + EOS[family]
    assert tokenizer.decode(with_eos, skip_special_tokens=True) == text


@pytest.mark.parametrize("family", FAMILIES)
def test_question_first_prompt_puts_the_visual_tokens_after_the_question(
    tiny, tiny_size, images, family, tmp_path
):
    model, _, adapter = tiny(family)
    tokenizer = train_tokenizer(TEXTS, adapter.chat_format, 320, prompt_order="question_first")
    torch.manual_seed(0)
    _, processor = adapter.build_tiny(tokenizer, tiny_size, IMAGE_SIZE)
    processor.save_pretrained(tmp_path)  # the order travels with the saved processor
    reloaded = type(processor).from_pretrained(tmp_path)
    for proc in (processor, reloaded):
        ids = adapter.encode(proc, images[:1], [QUESTIONS[1]]).inputs["input_ids"][0].tolist()
        text = proc.tokenizer.decode(ids)
        question_at, image_at = text.index(QUESTIONS[1]), ids.index(adapter.image_token_id(model))
        first_image_char = len(proc.tokenizer.decode(ids[:image_at]))
        assert question_at < first_image_char
    with pytest.raises(ValueError, match="prompt_order"):
        train_tokenizer(TEXTS, adapter.chat_format, 320, prompt_order="sideways")


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("family", FAMILIES)
def test_visual_layouts_of_a_left_padded_batch(tiny, images, family):
    model, processor, adapter = tiny(family)
    encoded = adapter.encode(processor, images, QUESTIONS)
    inputs = encoded.inputs
    mask = inputs["attention_mask"]
    assert encoded.prompt_start[0] > 0 and encoded.prompt_start[1] == 0  # shorter one padded
    assert encoded.prompt_lengths == mask.sum(dim=1).tolist()
    layouts = adapter.visual_layouts(inputs, model)
    assert len(layouts) == 2
    offsets = []
    for b, layout in enumerate(layouts):
        start = encoded.prompt_start[b]
        assert mask[b, :start].sum() == 0 and bool(mask[b, start:].all())
        assert layout.grid == GRID and layout.n_tokens == GRID[0] * GRID[1] == 16
        expected = torch.nonzero(_image_mask(inputs, model)[b]).flatten()
        assert torch.equal(layout.positions, expected)
        first = int(layout.positions[0])
        assert layout.positions.tolist() == list(range(first, first + 16))  # contiguous
        assert first >= start
        offsets.append(first - start)
    assert offsets[0] == offsets[1]  # same template prefix before the image in both samples


@pytest.mark.parametrize("family", QWEN)
def test_qwen_visual_tokens_are_in_raster_order(tiny, images, family):
    """Token k holds 28-px cell (k // 4, k % 4): in the pixels it reads and in M-RoPE."""
    model, processor, adapter = tiny(family)
    encoded = adapter.encode(processor, images, QUESTIONS)
    inputs = encoded.inputs
    assert "mm_token_type_ids" in inputs
    assert torch.equal(inputs["mm_token_type_ids"].bool(), _image_mask(inputs, model))

    # pixel_values rows of one image: 4 patches (2x2 merge) per visual token, in token order
    base = np.asarray(images[0]).copy()
    for k in (0, 6, 13):
        row, col = divmod(k, GRID[1])
        changed = base.copy()
        changed[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28] = (
            255 - changed[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28]
        )
        a = processor.image_processor(images=[Image.fromarray(base)], return_tensors="pt")
        b = processor.image_processor(images=[Image.fromarray(changed)], return_tensors="pt")
        differs = (a["pixel_values"] != b["pixel_values"]).any(dim=1)
        assert torch.nonzero(differs).flatten().tolist() == list(range(4 * k, 4 * k + 4))

    # M-RoPE: visual token k gets (t, h, w) = (s, s + k // 4, s + k % 4)
    position_ids, _ = model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    for b, layout in enumerate(adapter.visual_layouts(inputs, model)):
        t, h, w = (position_ids[axis, b, layout.positions] for axis in range(3))
        s = int(t[0])
        k = torch.arange(16)
        assert torch.equal(t, torch.full((16,), s))
        assert torch.equal(h, s + k // 4) and torch.equal(w, s + k % 4)
        # the three rows differ on visual tokens, unlike 1-D positions
        assert not torch.equal(t, h) and not torch.equal(h, w)
        text = encoded.prompt_start[b] + torch.arange(3)  # text tokens: one shared position
        assert torch.equal(position_ids[0, b, text], position_ids[2, b, text])


def test_qwen2_5_needs_mm_token_type_ids(tiny, images):
    """Without mm_token_type_ids the model falls back to 1-D positions: other logits."""
    model, processor, adapter = tiny("qwen2_5_vl")
    inputs = adapter.encode(processor, images, QUESTIONS).inputs
    with torch.no_grad():
        full = model(**inputs).logits
        without = model(**{k: v for k, v in inputs.items() if k != "mm_token_type_ids"}).logits
    assert not torch.allclose(full, without)


# --------------------------------------------------------------------------- completions


@pytest.mark.parametrize("family", FAMILIES)
def test_completion_span_holds_the_completion(tiny, images, family):
    model, processor, adapter = tiny(family)
    tokenizer = processor.tokenizer
    prompt_only = adapter.encode(processor, images, QUESTIONS)
    encoded = adapter.encode(processor, images, QUESTIONS, COMPLETIONS)
    ids, mask = encoded.inputs["input_ids"], encoded.inputs["attention_mask"]
    width = ids.shape[1]
    assert encoded.prompt_lengths == prompt_only.prompt_lengths
    for b, completion in enumerate(COMPLETIONS):
        start, end = encoded.completion_span(b)
        assert end == width  # left padding: every sequence ends at the right edge
        assert tokenizer.decode(ids[b, start:end]) == completion + EOS[family]
        assert encoded.completion_lengths[b] == end - start
        # the prompt right before it is exactly the prompt encoded alone
        prompt = prompt_only.inputs["input_ids"][b, prompt_only.prompt_start[b] :]
        assert torch.equal(ids[b, encoded.prompt_start[b] : start], prompt)
        assert int(mask[b].sum()) == end - encoded.prompt_start[b]
        assert bool((ids[b, : encoded.prompt_start[b]] == tokenizer.pad_token_id).all())
    layouts = adapter.visual_layouts(encoded.inputs, model)
    assert [layout.n_tokens for layout in layouts] == [16, 16]
    if family in QWEN:
        types = encoded.inputs["mm_token_type_ids"]
        assert torch.equal(types.bool(), _image_mask(encoded.inputs, model))
    no_eos = adapter.encode(processor, images, QUESTIONS, COMPLETIONS, add_eos=False)
    start, end = no_eos.completion_span(1)
    assert tokenizer.decode(no_eos.inputs["input_ids"][1, start:end]) == COMPLETIONS[1]
    with torch.no_grad():
        logits = model(**encoded.inputs).logits
    assert logits.shape == (2, width, len(tokenizer))


# --------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("family", FAMILIES)
def test_save_and_load_round_trip(tiny, images, tmp_path, family):
    model, processor, adapter = tiny(family)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == family
    assert adapter_for(tmp_path) is adapter
    assert adapter_for(model) is adapter

    loaded = load_model(tmp_path)
    assert loaded.adapter is adapter
    assert type(loaded.model) is type(model) and type(loaded.processor) is type(processor)
    loaded.model.eval()
    before = adapter.encode(processor, images, QUESTIONS, COMPLETIONS)
    after = loaded.adapter.encode(loaded.processor, images, QUESTIONS, COMPLETIONS)
    assert before.inputs.keys() == after.inputs.keys()
    for key in before.inputs:
        assert torch.equal(before.inputs[key], after.inputs[key]), key
    with torch.no_grad():
        assert torch.equal(model(**before.inputs).logits, loaded.model(**after.inputs).logits)
    tokenizer = loaded.processor.tokenizer
    assert tokenizer.decode(
        tokenizer("<think>x</think>")["input_ids"], skip_special_tokens=True
    ) == ("<think>x</think>")
    assert load_model(tmp_path, family=family).adapter is adapter
