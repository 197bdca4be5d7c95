"""Tokenizers trained offline on the dataset's own text (no hub download needed).

A byte-level BPE (the ``tokenizers`` library) with the family's special tokens and chat
template, wrapped as a transformers fast tokenizer so it saves/loads with
``save_pretrained``/``from_pretrained`` like any real checkpoint's tokenizer. ``<think>`` and
``</think>`` are single added tokens that are NOT special: decoding with
``skip_special_tokens=True`` (as TRL does) keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

THINK_TAGS = ("<think>", "</think>")

_CONTENT = (
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}{{ image_placeholder }}{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
)
# Text items first, then the images: the question precedes the image in the token sequence.
_CONTENT_QUESTION_FIRST = (
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] != 'image' %}{{ c['text'] }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'image' %}{{ image_placeholder }}{% endfor %}"
    "{% endif %}"
)
PROMPT_ORDERS = ("image_first", "question_first")


@dataclass(frozen=True)
class ChatFormat:
    """Special tokens and chat template of one family."""

    specials: tuple[str, ...]
    eos: str
    pad: str
    image_placeholder: str
    template: str


QWEN_FORMAT = ChatFormat(
    specials=(
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ),
    eos="<|im_end|>",
    pad="<|endoftext|>",
    image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
    template=(
        "{% set image_placeholder = '<|vision_start|><|image_pad|><|vision_end|>' %}"
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n" + _CONTENT + "<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
)

LLAVA_FORMAT = ChatFormat(
    specials=("<unk>", "<s>", "</s>", "<pad>", "<image>"),
    eos="</s>",
    pad="<pad>",
    image_placeholder="<image>\n",
    template=(
        "{% set image_placeholder = '<image>\n' %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: " + _CONTENT + " "
        "{% else %}ASSISTANT: " + _CONTENT + "</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
)


def chat_template(chat: ChatFormat, prompt_order: str = "image_first") -> str:
    """The family's chat template; ``question_first`` renders the text before the image.

    Real checkpoints keep their own template (image first for Qwen2.5-VL and LLaVA-1.5). For
    the tiny from-scratch models the order is a design choice that the saved processor
    carries to every later stage. With the image first, a causal decoder can look the object
    up from the QUESTION's tokens (which sit after the image) and let the answer read it
    there; with the question first, the completion has to read the visual tokens itself.
    """
    if prompt_order not in PROMPT_ORDERS:
        raise ValueError(f"prompt_order must be one of {list(PROMPT_ORDERS)}, got {prompt_order!r}")
    if prompt_order == "image_first":
        return chat.template
    return chat.template.replace(_CONTENT, _CONTENT_QUESTION_FIRST)


def train_tokenizer(
    texts: Iterable[str],
    chat: ChatFormat,
    vocab_size: int = 512,
    prompt_order: str = "image_first",
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it with the family's chat format."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(chat.specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    template_words = ["user", "assistant", "system", "USER:", "ASSISTANT:", "\n"]
    core.train_from_iterator(list(texts) + template_words * 50, trainer)
    core.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in THINK_TAGS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=chat.eos, pad_token=chat.pad
    )
    tokenizer.chat_template = chat_template(chat, prompt_order)
    return tokenizer
