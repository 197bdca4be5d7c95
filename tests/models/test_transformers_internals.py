"""Each transformers internal lookright relies on, checked on a real tiny model of every family.

One test per item of :mod:`lookright.models.transformers_internals`; a failure names the item,
so a transformers upgrade that changes one says which (instead of a RuntimeError deep inside
a decode job).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AttentionInterface, DynamicCache
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from lookright.decoding.plain import generation_config
from lookright.models import transformers_internals as internals
from tests.tiny_models import FAMILIES, SIZE, build_tiny


def _message(internal: str, detail: str) -> str:
    return (
        f"transformers internal changed: {internal}: {detail} "
        f"(checked against {internals.CHECKED_TRANSFORMERS})"
    )


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    model, processor, adapter = build_tiny(request.param)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 84, 3), np.uint8))
    inputs = adapter.encode(processor, [image, image], ["What color?", "Is it red or blue?"])
    return model, adapter, inputs.inputs


def test_cache_keyword_is_taken_by_forward_and_generate(tiny):
    model, _, inputs = tiny
    keyword = internals.cache_keyword(model)
    cache = DynamicCache(config=model.config)
    config = generation_config(model, 1, do_sample=False)
    model.generate(**inputs, **{keyword: cache}, generation_config=config)
    assert cache.get_seq_length() == inputs["input_ids"].shape[1], _message(
        internals.CACHE_KEYWORD, f"generate({keyword}=cache) did not fill the cache passed"
    )


def test_layers_receive_hidden_states_and_rotary_embeddings(tiny):
    model, adapter, inputs = tiny
    seen = {}

    def layer_hook(module, args, kwargs):
        seen["layer"] = internals.layer_input(args, kwargs)

    def attention_hook(module, args, kwargs):
        seen["attention"] = internals.layer_input(args, kwargs)
        seen["rotary"] = internals.rotary_embeddings(kwargs)

    layer = adapter.decoder_layers(model)[0]
    handles = [
        layer.register_forward_pre_hook(layer_hook, with_kwargs=True),
        layer.self_attn.register_forward_pre_hook(attention_hook, with_kwargs=True),
    ]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    batch, length = inputs["input_ids"].shape
    for where in ("layer", "attention"):
        assert seen[where].shape[:2] == (batch, length), _message(
            internals.LAYER_INPUT, f"{where} input has shape {tuple(seen[where].shape)}"
        )
    cos, sin = seen["rotary"]
    head_dim = SIZE.text_hidden // SIZE.text_heads
    assert cos.shape[-2:] == (length, head_dim) and sin.shape == cos.shape, _message(
        internals.ROTARY_KWARG, f"cos has shape {tuple(cos.shape)}"
    )


def test_modeling_files_define_rope_and_eager_attention(tiny):
    model, adapter, _ = tiny
    attention = adapter.decoder_layers(model)[0].self_attn
    for name in ("apply_rotary_pos_emb", "eager_attention_forward"):
        assert callable(internals.modeling_function(attention, name)), _message(
            internals.MODELING_FUNCTION, f"{type(attention).__module__} has no {name}"
        )


def test_attention_implementation_reads_and_follows_the_public_switch(tiny):
    model, adapter, _ = tiny
    config = adapter.decoder_layers(model)[0].self_attn.config
    assert internals.attention_implementation(config) == "sdpa"
    model.set_attn_implementation({"text_config": "eager"})
    try:
        assert internals.attention_implementation(config) == "eager", _message(
            internals.ATTN_IMPLEMENTATION, "set_attn_implementation did not change it"
        )
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})


def test_attention_functions_receive_the_caches_own_tensors(tiny):
    model, adapter, inputs = tiny
    received = {}

    def spy(module, query, key, value, attention_mask, **kwargs):
        received[module.layer_idx] = key
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("lookright_spy", spy)
    keyword = internals.cache_keyword(model)
    cache = DynamicCache(config=model.config)
    model.set_attn_implementation({"text_config": "lookright_spy"})
    try:
        with torch.no_grad():
            model(**inputs, **{keyword: cache}, use_cache=True)
    finally:
        model.set_attn_implementation({"text_config": "sdpa"})
    for index, layer in enumerate(cache.layers):  # DynamicCache's per-layer storage
        assert received[index] is layer.keys, _message(
            internals.CACHE_STORAGE, f"layer {index} got a copy of the cached keys"
        )


def test_an_unknown_internal_names_itself():
    error = internals.TransformersInternalError(internals.ROTARY_KWARG, "got NoneType")
    assert "position_embeddings" in str(error) and "5.23.0" in str(error)
