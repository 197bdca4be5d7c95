"""LLaVA-1.5 adapter.

Visual tokens: the processor expands ``<image>`` to one token per vision patch; with
``vision_feature_select_strategy="default"`` the CLS token is dropped, so n = (S/p)^2 tokens
forming a sqrt(n) x sqrt(n) raster grid.
"""

from __future__ import annotations

import math

from transformers import (
    BatchFeature,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
)
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from lookright.models.base import TinySize, VisualLayout, VLMAdapter, register
from lookright.models.geometry import ImageView, clip_view
from lookright.models.tokenizer import LLAVA_FORMAT

TINY_PATCH = 28


class LlavaAdapter(VLMAdapter):
    family = "llava"
    model_types = ("llava",)
    chat_format = LLAVA_FORMAT

    def model_class(self):
        return LlavaForConditionalGeneration

    def load_processor(self, path_or_id):
        return LlavaProcessor.from_pretrained(str(path_or_id))

    def vision_tower(self, model: PreTrainedModel):
        return model.model.vision_tower

    def image_view(self, processor, image_size: tuple[int, int]) -> ImageView:
        """CLIP image processing: shortest edge resized, centre crop (and ``do_pad``), from the
        processor's config (:func:`lookright.models.geometry.clip_view`)."""
        return clip_view(processor.image_processor, image_size)

    def visual_layouts(self, inputs: BatchFeature, model: PreTrainedModel) -> list[VisualLayout]:
        layouts = []
        for b, positions in enumerate(self._positions(inputs, model)):
            side = math.isqrt(positions.numel())
            if side * side != positions.numel():
                raise ValueError(
                    f"sample {b}: {positions.numel()} image tokens is not a square patch grid "
                    "(one image per sample, CLS excluded, is supported)"
                )
            layouts.append(VisualLayout(positions, (side, side)))
        return layouts

    def build_tiny(self, tokenizer, size: TinySize, image_size: int):
        config = LlavaConfig(
            vision_config={
                "model_type": "clip_vision_model",
                "hidden_size": size.vision_hidden,
                "intermediate_size": size.vision_intermediate,
                "num_hidden_layers": size.vision_layers,
                "num_attention_heads": size.vision_heads,
                "image_size": image_size,
                "patch_size": TINY_PATCH,
            },
            text_config={
                "model_type": "llama",
                "vocab_size": len(tokenizer),
                "hidden_size": size.text_hidden,
                "intermediate_size": size.text_intermediate,
                "num_hidden_layers": size.text_layers,
                "num_attention_heads": size.text_heads,
                "num_key_value_heads": size.text_kv_heads,
                "max_position_embeddings": 2048,
                "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id,
                "bos_token_id": None,
            },
            image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-1,
            vision_feature_select_strategy="default",
            tie_word_embeddings=False,
        )
        model = LlavaForConditionalGeneration(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.bos_token_id = None
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        )
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=TINY_PATCH,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=tokenizer.chat_template,
        )
        return model, self.configure_processor(processor)


register(LlavaAdapter())
