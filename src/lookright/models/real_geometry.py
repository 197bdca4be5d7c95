"""Random-init checkpoints with the REAL geometry of Qwen2.5-VL, Qwen2-VL and LLaVA-1.5.

No hub download is possible on the CI machines, but everything lookright depends on except
the weights can be reproduced exactly: the processor's image geometry, the tokenizer's
conventions (special tokens at their real ids, real chat template with Qwen's default system
prompt, real padding side, a vocabulary of the real size) and the architecture's structure
(M-RoPE sections, window attention, CLIP feature layer, tied/untied embeddings). Only width
and depth shrink, so a checkpoint fits a CPU.

    python -m lookright.models.real_geometry --family qwen2_5_vl --out models/qwen2.5-vl-rg

writes a folder that looks like a hub download (``config.json`` with the real
``model_type`` and ``torch_dtype``, ``generation_config.json``, ``preprocessor_config.json``
with the real processor geometry, the tokenizer files with the real chat template), built
deterministically from ``seed``. Point a ``models:`` entry's ``base`` at it.

What each family reproduces (hub checkpoint in brackets):

* ``qwen2_5_vl`` [Qwen/Qwen2.5-VL-3B-Instruct]: patch 14, spatial merge 2, temporal patch 2,
  window 112 with full-attention blocks, smart resize with min_pixels 3136 / max_pixels
  12845056, M-RoPE sections [16, 24, 24] (head_dim 128 kept), tied embeddings, vocabulary
  151936 (tokenizer 151665, special tokens from id 151643), bf16; config.json in the hub's
  legacy layout (flat text keys, ``rope_scaling: {type: mrope}``, ``torch_dtype``).
* ``qwen2_vl`` [Qwen/Qwen2-VL-2B-Instruct]: the same processor and tokenizer, Qwen2-VL's
  vision tower (embed_dim/mlp_ratio, no window); config.json as transformers 5's
  ``save_pretrained`` writes it (nested ``text_config``, ``rope_parameters``, ``dtype``).
* ``llava`` [llava-hf/llava-1.5-7b-hf]: CLIP ViT-L/14-336 geometry (336 px, patch 14, 576
  visual tokens + CLS, feature layer -2, "default" select strategy), CLIP image processing
  (shortest edge 336, centre crop 336x336, bicubic), a LLaMA BPE tokenizer with byte
  fallback (<unk>/<s>/</s> at 0/1/2, ``<image>`` 32000, ``<pad>`` 32001, BOS added), vocabulary 32064, float16, untied; config.json in the hub's layout
  (``image_token_index``, ``torch_dtype``).

The tokenizers are byte-level BPEs trained on a small built-in English corpus, padded with
unreachable two-piece words to the real vocabulary size so the special tokens sit at their
real ids (a random model still samples any id, as a real one can). ``<think>`` is NOT a
token of its own, as in the real vocabularies.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "llava")

QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL / Qwen2.5-VL Instruct's chat template (default system prompt included)."""

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""llava-hf/llava-1.5-7b-hf's chat template (chat_template.json)."""

# Qwen2 tokenizer's added tokens in id order from 151643 (special, then the non-special ones).
QWEN_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_NON_SPECIAL = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN_FIRST_SPECIAL_ID = 151643
QWEN_VOCAB = 151936
LLAVA_TOKENIZER_VOCAB = 32000  # <image> = 32000, <pad> = 32001
LLAVA_VOCAB = 32064

# Text the BPE merges are learnt from: VQA/caption/reasoning phrasing and some web markup, so
# prompts tokenise into realistic multi-character pieces. No "<think>" tags: the real
# vocabularies have no token for them, so a tag is several pieces, which merge with their
# neighbours ("." + "</", ">" + "The").
CORPUS = (
    "What color is the object in the picture? Is there a dog in the image? How many people "
    "are in the photo? What is the man holding? Where is the cat sitting? Describe the image. "
    "I think the image shows a red square next to a blue circle. The square is on the left. "
    "Let me think: I can see two people standing near a bus. So the answer is 2. "
    "A man riding a bicycle down a city street. A woman holding an umbrella in the rain. "
    "There is a white car parked next to a green tree. The sky is blue and there are clouds. "
    "yes no The answer is yes. The answer is no. person bicycle car motorcycle airplane bus "
    "train truck boat traffic light fire hydrant stop sign bench bird cat dog horse sheep cow "
    "elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee skis kite "
    "triangle square circle star cross red green blue yellow white black purple orange "
    "left right top bottom middle center corner near far above below behind in front of "
    "USER: ASSISTANT: user assistant system You are a helpful assistant. "
    # web markup, as in the real vocabularies' training text: pieces such as ".</" and ">The"
    "<p>The cat is red.</p><p>The dog is blue.</p><div>The answer is yes.</div> "
    "<li>The car is green.</li><b>red</b><i>blue</i><span>The sky.</span> "
)


@dataclass(frozen=True)
class ShrunkSize:
    """Width and depth of a real-geometry checkpoint (everything else is the real value).

    ``text_heads`` x 128 = ``text_hidden`` keeps the real head_dim of 128 (Qwen's M-RoPE
    sections [16, 24, 24] and LLaMA's rotary dimension need it).
    """

    text_hidden: int = 256
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    text_intermediate: int = 512
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 1
    vision_intermediate: int = 128


REAL_DTYPE = {"qwen2_5_vl": "bfloat16", "qwen2_vl": "bfloat16", "llava": "float16"}
PADDING_SIDE = {"qwen2_5_vl": "right", "qwen2_vl": "right", "llava": "right"}
"""The padding side a checkpoint's tokenizer loads with. The hub's tokenizer_config.json files
set none, so transformers 5 uses its tokenizers backend's default, "right" (LLaVA's tokenizer
loads as the generic ``TokenizersBackend``, not ``LlamaTokenizer`` whose default is "left")."""


# -- tokenizers ----------------------------------------------------------------------------


def _train_merges(
    pre_tokenizer, normalizer, specials: list[str], vocab_size: int, byte_level: bool = True
) -> Tokenizer:
    """BPE merges learnt from :data:`CORPUS` with the family's own pre-tokenisation."""
    core = Tokenizer(models.BPE())
    if normalizer is not None:
        core.normalizer = normalizer
    core.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [],
        show_progress=False,
    )
    core.train_from_iterator([CORPUS] * 20, trainer)
    return core


def _bpe_parts(core: Tokenizer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    state = json.loads(core.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def _pad_vocab(vocab: dict[str, int], size: int, decoder: Any) -> dict[str, int]:
    """Fill ids ``len(vocab)..size-1`` with two-piece words (``"Ġred" + "cat"``).

    No merge produces them, so the tokenizer never emits them, but a model can: decoded, each
    is a word of printable ASCII that re-tokenises into a few pieces, as a real vocabulary's
    tokens re-tokenise into about one (a random model's text stays about as long as its
    tokens). ``decoder`` turns a piece into its text (the tokenizer's decoder).
    """
    padded = dict(vocab)
    clean = [t for t in vocab if _printable(decoder.decode([t]))]
    pieces = sorted(clean, key=lambda t: (len(decoder.decode([t])) < 2, vocab[t]))
    for first in pieces:
        for second in pieces:
            if len(padded) >= size:
                return padded
            padded.setdefault(first + second, len(padded))
    raise ValueError(f"{len(pieces)} learnt pieces cannot fill a vocabulary of {size}")


def _printable(text: str) -> bool:
    return bool(text.strip()) and text.isascii() and text.isprintable() and "<" not in text


def qwen_tokenizer(padding_side: str = "right") -> Any:
    """Qwen2's tokenizer conventions on a trained BPE (see the module docstring)."""
    from transformers import AddedToken, Qwen2Tokenizer

    # Qwen2's own normaliser and pre-tokeniser (regex split + byte level), from its backend
    backend = Qwen2Tokenizer(vocab={"<|endoftext|>": 0}, merges=[]).backend_tokenizer
    core = _train_merges(backend.pre_tokenizer, backend.normalizer, [], 600)
    vocab, merges = _bpe_parts(core)
    vocab = _pad_vocab(vocab, QWEN_FIRST_SPECIAL_ID, decoders.ByteLevel())
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=None,
        pad_token=None,
        errors="replace",
        model_max_length=131072,
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
    )
    # in id order first, then the roles (eos, pad, extra specials) of tokens that exist
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_NON_SPECIAL])
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "additional_special_tokens": list(QWEN_SPECIAL[1:]),
        }
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    _check_ids(tokenizer, {t: QWEN_FIRST_SPECIAL_ID + i for i, t in enumerate(QWEN_SPECIAL)})
    return tokenizer


def llava_tokenizer(padding_side: str = "right") -> Any:
    """LLaMA's tokenizer conventions (Vicuna-7B v1.5 + LLaVA's ``<image>`` and ``<pad>``)."""
    from transformers import AddedToken, LlamaTokenizer

    # merges are learnt word by word (sentencepiece never merges across a space)
    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    core = _train_merges(pre, None, [], 400, byte_level=False)
    learnt, merges = _bpe_parts(core)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(learnt.items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    metaspace = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    vocab = _pad_vocab(vocab, LLAVA_TOKENIZER_VOCAB, metaspace)
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        add_bos_token=True,
        add_eos_token=False,
        legacy=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)])
    tokenizer.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    _check_ids(tokenizer, {"<unk>": 0, "<s>": 1, "</s>": 2, "<image>": 32000, "<pad>": 32001})
    return tokenizer


def _check_ids(tokenizer: Any, expected: dict[str, int]) -> None:
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in expected}
    if got != expected:
        raise RuntimeError(f"special token ids {got} differ from the real ones {expected}")


# -- configs -------------------------------------------------------------------------------

QWEN_TOKEN_IDS = {
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
}


def _qwen_text(size: ShrunkSize, dtype: str, max_positions: int) -> dict[str, Any]:
    """The text keys of a Qwen2(.5)-VL hub config.json (flat, legacy layout)."""
    return {
        "attention_dropout": 0.0,
        **QWEN_TOKEN_IDS,
        "hidden_act": "silu",
        "hidden_size": size.text_hidden,
        "initializer_range": 0.02,
        "intermediate_size": size.text_intermediate,
        "max_position_embeddings": max_positions,
        "max_window_layers": 70,
        "num_attention_heads": size.text_heads,
        "num_hidden_layers": size.text_layers,
        "num_key_value_heads": size.text_kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": QWEN_VOCAB,
    }


def _full_attention_blocks(depth: int) -> list[int]:
    """Qwen2.5-VL's full-attention blocks: every 8th of 32 (7, 15, 23, 31); here every 2nd."""
    return [k for k in range(depth) if k % 2 == 1] or [depth - 1]


def hub_config(family: str, size: ShrunkSize, dtype: str) -> dict[str, Any]:
    """config.json as the family's hub checkpoint has it, with the shrunk sizes."""
    if family == "qwen2_5_vl":
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "model_type": "qwen2_5_vl",
            **_qwen_text(size, dtype, 128000),
            "transformers_version": "4.41.2",
            "vision_config": {
                "depth": size.vision_layers,
                "hidden_act": "silu",
                "hidden_size": size.vision_hidden,
                "intermediate_size": size.vision_intermediate,
                "num_heads": size.vision_heads,
                "in_chans": 3,
                "out_hidden_size": size.text_hidden,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "spatial_patch_size": 14,
                "window_size": 112,
                "fullatt_block_indexes": _full_attention_blocks(size.vision_layers),
                "tokens_per_second": 2,
                "temporal_patch_size": 2,
            },
        }
    if family == "qwen2_vl":
        return {
            "architectures": ["Qwen2VLForConditionalGeneration"],
            "model_type": "qwen2_vl",
            **_qwen_text(size, dtype, 32768),
            "transformers_version": "4.41.2",
            "vision_config": {
                "depth": size.vision_layers,
                "embed_dim": size.vision_hidden,
                "mlp_ratio": 4,
                "num_heads": size.vision_heads,
                "in_chans": 3,
                "hidden_size": size.text_hidden,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "spatial_patch_size": 14,
                "temporal_patch_size": 2,
            },
        }
    if family == "llava":
        return {
            "architectures": ["LlavaForConditionalGeneration"],
            "ignore_index": -100,
            "image_token_index": 32000,
            "model_type": "llava",
            "pad_token_id": 32001,
            "projector_hidden_act": "gelu",
            "text_config": {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": size.text_hidden,
                "intermediate_size": size.text_intermediate,
                "num_attention_heads": size.text_heads,
                "num_hidden_layers": size.text_layers,
                "num_key_value_heads": size.text_heads,
                "max_position_embeddings": 4096,
                "model_type": "llama",
                "rms_norm_eps": 1e-05,
                "torch_dtype": dtype,
                "vocab_size": LLAVA_VOCAB,
            },
            "tie_word_embeddings": False,
            "torch_dtype": dtype,
            "transformers_version": "4.36.0.dev0",
            "vision_config": {
                "hidden_size": size.vision_hidden,
                "image_size": 336,
                "intermediate_size": size.vision_intermediate,
                "model_type": "clip_vision_model",
                "num_attention_heads": size.vision_heads,
                "num_hidden_layers": size.vision_layers,
                "patch_size": 14,
                "projection_dim": 768,
                "vocab_size": 32000,
            },
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "vocab_size": LLAVA_VOCAB,
        }
    raise ValueError(f"unknown family {family!r}; valid: {list(FAMILIES)}")


GENERATION_CONFIG = {
    "qwen2_5_vl": {
        "bos_token_id": 151643,
        "pad_token_id": 151643,
        "do_sample": True,
        "eos_token_id": [151645, 151643],
        "repetition_penalty": 1.05,
        "temperature": 0.1,
        "top_p": 0.001,
        "top_k": 1,
        "transformers_version": "4.37.0",
    },
    "llava": {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 32001},
}
GENERATION_CONFIG["qwen2_vl"] = GENERATION_CONFIG["qwen2_5_vl"]

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def preprocessor_config(family: str) -> dict[str, Any]:
    """preprocessor_config.json of the hub checkpoint (the real image geometry)."""
    if family in ("qwen2_5_vl", "qwen2_vl"):
        return {
            "min_pixels": 3136,
            "max_pixels": 12845056,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
            "image_mean": CLIP_MEAN,
            "image_std": CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor"
            if family == "qwen2_5_vl"
            else "Qwen2VLProcessor",
        }
    return {
        "crop_size": {"height": 336, "width": 336},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "LlavaProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 336},
    }


LLAVA_PROCESSOR_CONFIG = {
    "image_token": "<image>",
    "num_additional_image_tokens": 1,
    "patch_size": 14,
    "processor_class": "LlavaProcessor",
    "vision_feature_select_strategy": "default",
}


# -- writing -------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_tokenizer(folder: Path, family: str, padding_side: str) -> None:
    """Tokenizer files as the hub has them: tokenizer.json, tokenizer_config.json with the
    chat template inside, chat_template.json (vocab.json + merges.txt for Qwen)."""
    tokenizer = qwen_tokenizer(padding_side) if family != "llava" else llava_tokenizer(padding_side)
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("backend", None)
    extra = config.pop("extra_special_tokens", None)
    if extra:
        config["additional_special_tokens"] = extra
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    config["added_tokens_decoder"] = {
        str(t["id"]): {
            k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
        }
        for t in added
    }
    config["chat_template"] = tokenizer.chat_template
    if family == "llava":
        config |= {"add_bos_token": True, "add_eos_token": False, "legacy": False}
        config["processor_class"] = "LlavaProcessor"
    else:
        config |= {"add_bos_token": False, "add_prefix_space": False}
        model = json.loads((folder / "tokenizer.json").read_text())["model"]
        _write_json(folder / "vocab.json", model["vocab"])
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config.pop("padding_side", None)
    if padding_side != PADDING_SIDE[family]:
        config["padding_side"] = padding_side
    _write_json(folder / "tokenizer_config.json", dict(sorted(config.items())))
    _write_json(folder / "chat_template.json", {"chat_template": tokenizer.chat_template})


def _model_class(family: str):
    from transformers import (
        LlavaForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
    )

    return {
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
        "qwen2_vl": Qwen2VLForConditionalGeneration,
        "llava": LlavaForConditionalGeneration,
    }[family]


CONFIG_FORMATS = ("hub", "save_pretrained")
DEFAULT_CONFIG_FORMAT = {"qwen2_5_vl": "hub", "qwen2_vl": "save_pretrained", "llava": "hub"}


def build_checkpoint(
    family: str,
    out_dir: str | Path,
    *,
    size: ShrunkSize | None = None,
    seed: int = 0,
    dtype: str | None = None,
    config_format: str | None = None,
    padding_side: str | None = None,
) -> Path:
    """Write a random-init checkpoint of ``family`` with its real geometry to ``out_dir``.

    Args:
        family: ``qwen2_5_vl``, ``qwen2_vl`` or ``llava``.
        size: the shrunk width/depth (default :class:`ShrunkSize`; LLaVA uses
            ``text_heads`` kv heads, as LLaMA-7B has no GQA).
        seed: ``torch.manual_seed`` of the random init (same seed, same weights).
        dtype: ``torch_dtype`` of the saved weights (default: the hub checkpoint's,
            :data:`REAL_DTYPE`).
        config_format: ``hub`` (config.json as on the hub, legacy keys) or
            ``save_pretrained`` (as transformers 5 writes it); default per family
            (:data:`DEFAULT_CONFIG_FORMAT`).
        padding_side: the tokenizer's (default: the real one, :data:`PADDING_SIDE`).

    Returns the folder. Deterministic: the same arguments give the same files.
    """
    from transformers import AutoConfig

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {list(FAMILIES)}")
    size = size or ShrunkSize()
    dtype = dtype or REAL_DTYPE[family]
    config_format = config_format or DEFAULT_CONFIG_FORMAT[family]
    if config_format not in CONFIG_FORMATS:
        raise ValueError(f"config_format {config_format!r}; valid: {list(CONFIG_FORMATS)}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    hub = hub_config(family, size, dtype)
    _write_json(folder / "config.json", hub)
    config = AutoConfig.from_pretrained(folder)  # parses the hub layout, as a download would
    torch.manual_seed(seed)
    model = _model_class(family)(config).to(getattr(torch, dtype))
    model.save_pretrained(folder)
    if config_format == "hub":
        _write_json(folder / "config.json", hub)
    _write_json(folder / "generation_config.json", GENERATION_CONFIG[family])
    _write_json(folder / "preprocessor_config.json", preprocessor_config(family))
    if family == "llava":
        _write_json(folder / "processor_config.json", LLAVA_PROCESSOR_CONFIG)
    _write_tokenizer(folder, family, padding_side or PADDING_SIDE[family])
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lookright.models.real_geometry",
        description="Write a random-init checkpoint with a real VLM's geometry (see module doc).",
    )
    parser.add_argument("--family", required=True, choices=FAMILIES)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    parser.add_argument("--config-format", choices=CONFIG_FORMATS, default=None)
    args = parser.parse_args(argv)
    folder = build_checkpoint(
        args.family, args.out, seed=args.seed, dtype=args.dtype, config_format=args.config_format
    )
    print(f"{args.family}: real-geometry checkpoint -> {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
