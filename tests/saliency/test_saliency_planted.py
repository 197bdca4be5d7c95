"""A planted model whose answer provably depends on one image region.

The image is black except one white 28-px cell. A planted "vision encoder" (a pre-hook on the
first decoder layer) gives every visual token ``brightness(cell) * image_dir``: dark cells are
exactly 0, so the image's only information is at the bright cell. Layer-0 attention is edited
(q/k projections and token embeddings along three orthonormal directions, on the lowest RoPE
frequencies so that position barely matters): thought rows attend to ``image_dir`` keys (the
bright token), answer rows attend to thought keys, and the completion tokens' unembedding rows
read what the bright token writes into the residual stream. So the answer depends on the bright
cell directly and through the thought (the CoT bottleneck). Every method must put the largest
share of its map on that cell; the random baseline does not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from saliency_helpers import FAMILIES, IMAGE_SIZE

from lookright.saliency import alignment_score, available_methods, explain_batch
from lookright.saliency.batch import prepare_batch

CELL = (3, 1)  # (row, col) of the bright cell on the 4 x 4 grid: near the bottom edge
BOX = [CELL[1] / 4, CELL[0] / 4, (CELL[1] + 1) / 4, (CELL[0] + 1) / 4]
QUESTION = ["What color is the circle?"]
COMPLETION = ["<think>The circle is red.</think>no"]
# Grad-CAM weights channels by the visual-token-averaged gradient: nothing in the planted
# mechanism pins its sign, so it is only required to run.
UNCONSTRAINED = {"gradcam", "random"}
# The planted "vision encoder" writes the original image's features whatever the pixels, so
# occluding a cell changes nothing the model sees: occlusion is tested on real pixels instead
# (test_saliency_occlusion.py).
PIXEL_BLIND = {"occlusion"}


def planted_image() -> Image.Image:
    pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    row, col = CELL
    pixels[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28] = 255
    return Image.fromarray(pixels)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def plant(model, adapter, batch, image, strength: float = 0.7):
    """Edit layer 0 and the unembedding as in the module docstring; returns the hook handle."""
    config = model.config.get_text_config()
    width, heads, kv_heads = (
        config.hidden_size,
        config.num_attention_heads,
        config.num_key_value_heads,
    )
    basis, _ = torch.linalg.qr(torch.randn(width, 3, generator=torch.Generator().manual_seed(3)))
    image_dir, thought_dir, answer_dir = basis.T * width**0.5
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    brightness = torch.as_tensor(gray.reshape(4, 28, 4, 28).mean(axis=(1, 3)).reshape(-1))
    features = brightness[:, None] * image_dir[None]
    sample, ids = batch.samples[0], batch.input_ids[0]
    thought_ids = {int(ids[p - 1]) for p in sample.thought} | {int(ids[p]) for p in sample.thought}
    answer_rows = {int(ids[p - 1]) for p in sample.answer}
    assert not thought_ids & answer_rows
    attention = adapter.decoder_layers(model)[0].self_attn
    head_dim = attention.head_dim
    slowest, slower = torch.zeros(head_dim), torch.zeros(head_dim)
    slowest[[head_dim // 2 - 1, head_dim - 1]] = 1
    slower[[head_dim // 2 - 2, head_dim - 2]] = 1
    with torch.no_grad():
        embeddings = adapter.text_model(model).embed_tokens.weight
        embeddings[sorted(thought_ids)] += thought_dir
        embeddings[sorted(answer_rows)] += answer_dir
        query = slowest[:, None] * _unit(thought_dir) + slower[:, None] * _unit(answer_dir)
        key = slowest[:, None] * _unit(image_dir) + slower[:, None] * _unit(thought_dir)
        attention.q_proj.weight.copy_(strength * query.repeat(heads, 1))
        attention.k_proj.weight.copy_(strength * key.repeat(kv_heads, 1))
        for projection in (attention.q_proj, attention.k_proj):
            if projection.bias is not None:
                projection.bias.zero_()
        normed = adapter.decoder_layers(model)[0].input_layernorm(image_dir[None])[0]
        value = attention.v_proj(normed).view(kv_heads, head_dim)
        written = attention.o_proj(value.repeat_interleave(heads // kv_heads, 0).reshape(-1))
        targets = sorted({int(ids[p]) for p in sample.targets})
        gain = adapter.final_norm(model).weight
        adapter.lm_head(model).weight[targets] = 5 * _unit(written) / gain

    def vision(module, args, kwargs):
        hidden = (args[0] if args else kwargs["hidden_states"]).clone()
        for b, item in enumerate(batch.samples):
            hidden[b, item.visual] = features.to(hidden.dtype)
        if args:
            return (hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = hidden
        return args, kwargs

    return adapter.decoder_layers(model)[0].register_forward_pre_hook(vision, with_kwargs=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_find_the_planted_region_and_random_does_not(family, build_tiny):
    model, processor, adapter = build_tiny(family)
    image = planted_image()
    batch = prepare_batch(model, processor, adapter, [image], QUESTION, COMPLETION)
    handle = plant(model, adapter, batch, image)
    try:
        results = explain_batch(
            model,
            processor,
            [image],
            QUESTION,
            COMPLETION,
            [m for m in available_methods() if m not in PIXEL_BLIND],
            adapter,
        )
    finally:
        handle.remove()
    bright = CELL[0] * 4 + CELL[1]
    scores = {}
    for name, (result,) in results.items():
        if name == "gradcam":
            continue
        assert result.has_map, f"{name}: {result.reason}"
        scores[name] = alignment_score(result.response_map, [BOX], image.size)
        if name not in UNCONSTRAINED:
            assert int(np.argmax(result.response_map)) == bright, name
    assert scores["random"] < 0.2
    for name, score in scores.items():
        if name not in UNCONSTRAINED:
            assert score > 0.25 and score > 3 * scores["random"], (name, scores)
    for strong in ("logit_decomposition", "cot_bottleneck", "tmme"):
        assert scores[strong] > 0.8, (strong, scores)
