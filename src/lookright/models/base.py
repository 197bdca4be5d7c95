"""One adapter per VLM family: loading, prompt encoding and where the visual tokens are.

Every method of lookright that reads a model (saliency, rewards, decoding, evaluation) goes
through a :class:`VLMAdapter`, so it needs to know nothing of the family: the adapter says
which sequence positions hold the image's visual tokens, the (h, w) grid they form, and where
the decoder layers, final norm and unembedding live.

Families: ``qwen2_5_vl`` (Qwen2.5-VL), ``qwen2_vl`` (Qwen2-VL), ``llava`` (LLaVA-1.5). Real
checkpoints and the tiny models that lookright trains itself load through the same
``from_pretrained`` path.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image
from transformers import BatchFeature, PreTrainedModel

from lookright.config import ConfigError
from lookright.models.geometry import ImageView


@dataclass(frozen=True)
class VisualLayout:
    """Where one sample's image lives in its token sequence.

    ``positions`` are sequence indices of the visual tokens in raster order (row-major over
    ``grid``); ``grid`` is (h, w) of the visual-token lattice (Qwen: after the 2x2 merge;
    LLaVA: patch grid without CLS).
    """

    positions: torch.Tensor
    grid: tuple[int, int]

    @property
    def n_tokens(self) -> int:
        return int(self.positions.numel())


@dataclass
class EncodedBatch:
    """Model inputs for a batch plus per-sample bookkeeping.

    ``prompt_lengths[b]`` is the number of non-pad tokens of sample b's prompt (chat template
    with generation prompt); with completions, the completion of sample b occupies positions
    ``[prompt_start[b] + prompt_lengths[b], prompt_start[b] + prompt_lengths[b] +
    completion_lengths[b])``, where ``prompt_start`` is the number of left-pad tokens.
    """

    inputs: BatchFeature
    prompt_start: list[int]
    prompt_lengths: list[int]
    completion_lengths: list[int]

    def completion_span(self, b: int) -> tuple[int, int]:
        start = self.prompt_start[b] + self.prompt_lengths[b]
        return start, start + self.completion_lengths[b]


@dataclass
class LoadedModel:
    model: PreTrainedModel
    processor: Any
    adapter: VLMAdapter


class VLMAdapter(ABC):
    """The family-specific knowledge lookright needs about a vision-language model."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]

    # -- loading -------------------------------------------------------------------------
    @abstractmethod
    def model_class(self) -> type[PreTrainedModel]: ...

    @abstractmethod
    def load_processor(self, path_or_id: str | Path) -> Any: ...

    def configure_processor(self, processor: Any) -> Any:
        """Conventions every lookright stage (and TRL) relies on, whatever the checkpoint says.

        Left padding: prompts are left-padded for generation, and TRL's GRPOTrainer re-runs
        the processor on the prompts with the TOKENIZER'S padding side to rebuild per-token
        inputs such as Qwen's ``mm_token_type_ids``. Real Qwen2-VL/2.5-VL (and LLaVA-1.5 under
        transformers 5) tokenizers load with right padding, so those ids would land on other
        positions than the left-padded prompt ids (``get_rope_index`` then fails on any batch
        of prompts of different lengths). Applied by :meth:`load`; returns the processor.
        """
        processor.tokenizer.padding_side = "left"
        return processor

    def load(
        self,
        path_or_id: str | Path,
        *,
        dtype: torch.dtype | str = "auto",
        attn_implementation: str = "sdpa",
        device: str | torch.device = "cpu",
    ) -> LoadedModel:
        """``from_pretrained`` of model and processor (local folder or hub id)."""
        model = self.model_class().from_pretrained(
            str(path_or_id), dtype=dtype, attn_implementation=attn_implementation
        )
        model.to(device)
        return LoadedModel(model, self.configure_processor(self.load_processor(path_or_id)), self)

    # -- structure ----------------------------------------------------------------------
    def text_model(self, model: PreTrainedModel) -> torch.nn.Module:
        """The language decoder (has ``.layers``, ``.norm``, ``.embed_tokens``)."""
        return model.model.language_model

    def decoder_layers(self, model: PreTrainedModel) -> torch.nn.ModuleList:
        return self.text_model(model).layers

    def final_norm(self, model: PreTrainedModel) -> torch.nn.Module:
        return self.text_model(model).norm

    def lm_head(self, model: PreTrainedModel) -> torch.nn.Module:
        return model.lm_head

    def vision_tower(self, model: PreTrainedModel) -> torch.nn.Module:
        return model.model.visual

    def image_token_id(self, model: PreTrainedModel) -> int:
        return int(model.config.image_token_id)

    # -- prompts -------------------------------------------------------------------------
    def messages(self, question: str, completion: str | None = None) -> list[dict]:
        """Chat messages for one image + question (+ the assistant's completion)."""
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        if completion is None:
            return [user]
        return [user, {"role": "assistant", "content": [{"type": "text", "text": completion}]}]

    def prompt_text(self, processor: Any, question: str) -> str:
        return processor.apply_chat_template(
            self.messages(question), add_generation_prompt=True, tokenize=False
        )

    def encode(
        self,
        processor: Any,
        images: list[Image.Image],
        questions: list[str],
        completions: list[str] | None = None,
        *,
        add_eos: bool = True,
    ) -> EncodedBatch:
        """Encode prompts (left-padded), optionally followed by teacher-forced completions.

        Completions are tokenised on their own (no special tokens) and appended to the
        prompt's ids, followed by the end-of-turn token when ``add_eos``; so the prompt/
        completion boundary is exact, whatever the tokenizer would merge across it.
        """
        tokenizer = processor.tokenizer
        prompts = [self.prompt_text(processor, q) for q in questions]
        inputs = processor(
            text=prompts, images=images, return_tensors="pt", padding=True, padding_side="left"
        )
        mask = inputs["attention_mask"]
        prompt_lengths = [int(n) for n in mask.sum(dim=1).tolist()]
        width = mask.shape[1]
        if completions is None:
            starts = [width - n for n in prompt_lengths]
            return EncodedBatch(inputs, starts, prompt_lengths, [0] * len(prompts))
        eos = [tokenizer.eos_token_id] if add_eos else []
        completion_ids = [
            tokenizer(c, add_special_tokens=False)["input_ids"] + eos for c in completions
        ]
        total = [p + len(c) for p, c in zip(prompt_lengths, completion_ids, strict=True)]
        new_width = max(total)
        per_token = [k for k, v in inputs.items() if torch.is_tensor(v) and v.shape == mask.shape]
        rebuilt = {
            k: torch.zeros(len(prompts), new_width, dtype=inputs[k].dtype) for k in per_token
        }
        rebuilt["input_ids"].fill_(tokenizer.pad_token_id)
        for b, (n_prompt, ids) in enumerate(zip(prompt_lengths, completion_ids, strict=True)):
            start = new_width - total[b]
            for key in per_token:
                row = rebuilt[key][b]
                row[start : start + n_prompt] = inputs[key][b, width - n_prompt :]
                if key == "input_ids":
                    row[start + n_prompt :] = torch.tensor(ids, dtype=row.dtype)
                elif key == "attention_mask":
                    row[start + n_prompt :] = 1
        inputs.update(rebuilt)
        starts = [new_width - n for n in total]
        return EncodedBatch(inputs, starts, prompt_lengths, [len(c) for c in completion_ids])

    @abstractmethod
    def visual_layouts(self, inputs: BatchFeature, model: PreTrainedModel) -> list[VisualLayout]:
        """Visual-token positions and grid of every sample of an encoded batch."""

    @abstractmethod
    def image_view(self, processor: Any, image_size: tuple[int, int]) -> ImageView:
        """The part of an image of ``(width, height)`` px that its visual-token grid covers,
        from the processor's own config (crop, resize, pad): see :mod:`lookright.models.geometry`.
        """

    def _positions(self, inputs: BatchFeature, model: PreTrainedModel) -> list[torch.Tensor]:
        ids = inputs["input_ids"]
        image_token = self.image_token_id(model)
        return [torch.nonzero(row == image_token).flatten() for row in ids]

    # -- tiny models ---------------------------------------------------------------------
    @abstractmethod
    def build_tiny(
        self, tokenizer: Any, size: TinySize, image_size: int
    ) -> tuple[PreTrainedModel, Any]:
        """A randomly initialised tiny model of this family and its processor."""


@dataclass(frozen=True)
class TinySize:
    """Sizes of a tiny from-scratch model (config key ``pretrain.model``)."""

    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 256
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 128


ADAPTERS: dict[str, VLMAdapter] = {}


def register(adapter: VLMAdapter) -> VLMAdapter:
    ADAPTERS[adapter.family] = adapter
    return adapter


def get_adapter(family: str) -> VLMAdapter:
    """The adapter registered under ``family``; a clear error lists the valid names."""
    _ensure_registered()
    try:
        return ADAPTERS[family]
    except KeyError:
        raise ConfigError(
            f"unknown model family {family!r}; valid families: {sorted(ADAPTERS)}"
        ) from None


def adapter_for(model_or_path: PreTrainedModel | str | Path) -> VLMAdapter:
    """The adapter of a model instance, or of a checkpoint folder (read from its config.json)."""
    _ensure_registered()
    if isinstance(model_or_path, PreTrainedModel):
        model_type = model_or_path.config.model_type
        where = type(model_or_path).__name__
    else:
        config_file = Path(model_or_path) / "config.json"
        if not config_file.exists():
            raise FileNotFoundError(
                f"{model_or_path}: no config.json; give a checkpoint folder saved with "
                "save_pretrained (hub ids need the family: load_model(path, family=...))"
            )
        model_type = json.loads(config_file.read_text()).get("model_type")
        where = str(config_file)
    for adapter in ADAPTERS.values():
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS.values() for t in a.model_types)
    raise ValueError(
        f"{where}: model_type {model_type!r} has no lookright adapter; supported: {supported}"
    )


def load_model(path_or_id: str | Path, *, family: str | None = None, **kwargs: Any) -> LoadedModel:
    """Load a checkpoint folder or hub id with the right adapter (family from config.json)."""
    adapter = get_adapter(family) if family else adapter_for(path_or_id)
    return adapter.load(path_or_id, **kwargs)


def _ensure_registered() -> None:
    # every family module, always: importing one (e.g. lookright.models.qwen) must not
    # hide the others from get_adapter
    import lookright.models.llava  # noqa: F401
    import lookright.models.qwen  # noqa: F401
