"""Qwen2.5-VL and Qwen2-VL adapters.

Visual tokens: the processor expands ``<|image_pad|>`` to (grid_h/2) * (grid_w/2) tokens
(``image_grid_thw`` counts 14-px patches; the vision merger folds 2x2 patches into one
token), in raster order. ``mm_token_type_ids`` from the processor must reach the model, or
the image tokens silently get 1-D instead of M-RoPE positions.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    BatchFeature,
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

from lookright.models.base import TinySize, VisualLayout, VLMAdapter, register
from lookright.models.geometry import FULL_VIEW, ImageView
from lookright.models.tokenizer import QWEN_FORMAT


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor.

    The stock processor requires a video processor, which requires torchvision; lookright
    needs images only. Load it by class (``AutoProcessor`` returns a bare tokenizer for it).
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2VLImageProcessor(Qwen2VLProcessor):
    """Qwen2-VL processor without the video processor (see :class:`Qwen2_5_VLImageProcessor`)."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def _tiny_image_processor(image_size: int) -> Qwen2VLImageProcessorPil:
    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(
        min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2, temporal_patch_size=2
    )


def _special_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _text_config(tokenizer: Any, size: TinySize) -> dict[str, Any]:
    head_dim = size.text_hidden // size.text_heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": size.text_hidden,
        "intermediate_size": size.text_intermediate,
        "num_hidden_layers": size.text_layers,
        "num_attention_heads": size.text_heads,
        "num_key_value_heads": size.text_kv_heads,
        "max_position_embeddings": 2048,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": section,
        },
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "tie_word_embeddings": False,
    }


class _QwenFamily(VLMAdapter):
    processor_class: type

    def load_processor(self, path_or_id):
        return self.processor_class.from_pretrained(str(path_or_id))

    def image_view(self, processor: Any, image_size: tuple[int, int]) -> ImageView:
        """The whole image: smart resize scales it to multiples of 28 px, nothing is cut or
        padded (the grid's cells are uniform over the image)."""
        return FULL_VIEW

    def visual_layouts(self, inputs: BatchFeature, model: PreTrainedModel) -> list[VisualLayout]:
        merge = 2
        vision_config = getattr(model.config, "vision_config", None)
        if vision_config is not None:
            merge = int(getattr(vision_config, "spatial_merge_size", 2))
        grids = inputs["image_grid_thw"]
        layouts = []
        for b, positions in enumerate(self._positions(inputs, model)):
            _, h, w = (int(v) for v in grids[b])
            grid = (h // merge, w // merge)
            if positions.numel() != grid[0] * grid[1]:
                raise ValueError(
                    f"sample {b}: {positions.numel()} image tokens but image_grid_thw {grids[b].tolist()} "
                    f"implies {grid[0] * grid[1]} (one image per sample is supported)"
                )
            layouts.append(VisualLayout(positions, grid))
        return layouts

    def _finish_tiny(self, model_cls, config, tokenizer, processor_cls, image_size):
        model = model_cls(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = None
        processor = processor_cls(
            image_processor=_tiny_image_processor(image_size),
            tokenizer=tokenizer,
            chat_template=tokenizer.chat_template,
        )
        return model, self.configure_processor(processor)


class Qwen25VLAdapter(_QwenFamily):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    processor_class = Qwen2_5_VLImageProcessor
    chat_format = QWEN_FORMAT

    def model_class(self):
        return Qwen2_5_VLForConditionalGeneration

    def build_tiny(self, tokenizer, size: TinySize, image_size: int):
        config = Qwen2_5_VLConfig(
            vision_config={
                "depth": size.vision_layers,
                "hidden_size": size.vision_hidden,
                "intermediate_size": size.vision_intermediate,
                "num_heads": size.vision_heads,
                "out_hidden_size": size.text_hidden,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": image_size,
                "fullatt_block_indexes": [size.vision_layers - 1],
            },
            text_config=_text_config(tokenizer, size),
            **_special_ids(tokenizer),
        )
        return self._finish_tiny(
            Qwen2_5_VLForConditionalGeneration, config, tokenizer, self.processor_class, image_size
        )


class Qwen2VLAdapter(_QwenFamily):
    family = "qwen2_vl"
    model_types = ("qwen2_vl",)
    processor_class = Qwen2VLImageProcessor
    chat_format = QWEN_FORMAT

    def model_class(self):
        return Qwen2VLForConditionalGeneration

    def build_tiny(self, tokenizer, size: TinySize, image_size: int):
        config = Qwen2VLConfig(
            vision_config={
                "depth": size.vision_layers,
                "embed_dim": size.vision_hidden,
                "hidden_size": size.text_hidden,
                "num_heads": size.vision_heads,
                "mlp_ratio": max(1, size.vision_intermediate // size.vision_hidden),
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            text_config=_text_config(tokenizer, size),
            **_special_ids(tokenizer),
        )
        return self._finish_tiny(
            Qwen2VLForConditionalGeneration, config, tokenizer, self.processor_class, image_size
        )


register(Qwen25VLAdapter())
register(Qwen2VLAdapter())
