"""A teacher-forced batch and the token bookkeeping every saliency method needs.

:func:`prepare_batch` encodes (image, question, completion) triples with the family's adapter
and records, per sample, which sequence positions hold the visual tokens, the question, the
completion tokens to explain, and the thought / answer spans of a ``<think>...</think>answer``
completion.

Spans are located on the completion's OWN tokens, never by re-tokenising decoded text
(docs/methods.md#cot_bottleneck: the Saliency-R1 reference re-tokenises, which can shift boundaries):
each token is mapped to the characters it decodes to (decoding growing prefixes), the tags
are found in that text, and a token belongs to the thought (the answer) when its characters
overlap the thought's (the answer's). Matching the tags' own token ids is not enough with
real vocabularies: they have no ``<think>`` token, and the tags' pieces merge with their
neighbours ("red.</think>red" is ``.</``, ``think``, ``>red`` in Qwen2's BPE), so the tag's
ids never occur in the completion and every CoT map would be "no map".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import PreTrainedModel

from lookright.completion import character_spans
from lookright.models.base import EncodedBatch, VisualLayout, VLMAdapter
from lookright.models.geometry import ImageView


@dataclass(frozen=True)
class SampleTokens:
    """Token bookkeeping of one sample (all values are sequence positions).

    ``targets`` are the completion tokens that maps explain (the end-of-turn/pad tokens the
    encoder appends are excluded); the row that predicts target ``i`` is ``i - 1``.
    ``thought``/``answer`` are ``None`` when the completion has no ``</think>`` (truncated);
    ``answer`` may then be empty. ``cot_reason`` says why there is no bottleneck map.
    """

    visual: list[int]
    grid: tuple[int, int]
    prompt_text: list[int]
    targets: list[int]
    thought: list[int] | None
    answer: list[int] | None
    cot_reason: str | None


@dataclass
class SaliencyBatch:
    """Encoded inputs of a batch plus per-sample token bookkeeping, original image sizes and
    the part of each image its visual-token grid covers (``views``, the processor's geometry)."""

    encoded: EncodedBatch
    layouts: list[VisualLayout]
    samples: list[SampleTokens]
    image_sizes: list[tuple[int, int]]
    questions: list[str]
    completions: list[str]
    views: list[ImageView]
    images: list[Image.Image] | None = None  # the RGB images (perturbation methods re-encode)
    processor: Any = None

    @property
    def inputs(self):
        return self.encoded.inputs

    @property
    def input_ids(self) -> torch.Tensor:
        return self.encoded.inputs["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.encoded.inputs["attention_mask"]

    def __len__(self) -> int:
        return len(self.samples)

    def token_ids(self, b: int, positions: Sequence[int]) -> list[int]:
        row = self.input_ids[b]
        return [int(row[p]) for p in positions]

    def to(self, device: torch.device | str) -> SaliencyBatch:
        self.encoded.inputs = self.encoded.inputs.to(device)
        return self


def _end_tokens(tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {int(i) for i in ids if i is not None}


def token_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and the ``[start, end)`` characters of each token in it.

    Token k covers ``len(decode(ids[:k]))`` to ``len(decode(ids[:k + 1]))`` (special tokens
    kept, no clean-up), so pieces that decode to nothing on their own (a byte of a multi-byte
    character) still get their place.
    """
    known = len(tokenizer)  # a random model may emit ids beyond the tokenizer's vocabulary
    ids = [int(i) if int(i) < known else None for i in ids]
    prefixes = [
        tokenizer.decode(
            [i for i in ids[:k] if i is not None],
            skip_special_tokens=False,
            clean_up_tokenization_spaces=False,
        )
        for k in range(len(ids) + 1)
    ]
    ends = [len(p) for p in prefixes]
    return prefixes[-1], [(ends[k], max(ends[k], ends[k + 1])) for k in range(len(ids))]


def _overlapping(spans: Sequence[tuple[int, int]], lo: int, hi: int) -> list[int]:
    return [k for k, (a, b) in enumerate(spans) if a < hi and b > lo and b > a]


def split_completion(
    text: str, spans: Sequence[tuple[int, int]], start: int
) -> tuple[list[int] | None, list[int] | None, str | None]:
    """Thought and answer positions of a completion whose tokens cover ``spans`` of ``text``.

    ``start`` is the sequence position of the completion's first token. Thought = tokens
    overlapping the characters strictly between ``<think>`` and the first ``</think>`` (if
    the completion has no ``<think>``, e.g. the prompt opened it, from its first character);
    answer = tokens overlapping the characters after ``</think>``; a token spanning a tag and
    a neighbour belongs to the neighbour. Returns ``(thought, answer, reason)``; ``reason`` is
    set when the bottleneck map is undefined (no ``</think>``, empty thought or empty answer).
    """
    if len(spans) == 0:
        return None, None, "empty completion"
    parts = character_spans(text)
    if parts.thought is None or parts.answer is None:
        return None, None, parts.reason
    (thought_from, close_at), (answer_from, end) = parts.thought, parts.answer
    answer_tokens = _overlapping(spans, answer_from, end) if text[answer_from:] else []
    thought_tokens = [
        k for k in _overlapping(spans, thought_from, close_at) if k not in set(answer_tokens)
    ]
    thought = [start + k for k in thought_tokens]
    answer = [start + k for k in answer_tokens]
    if not thought:
        return thought, answer, "empty thought"
    if not answer:
        return thought, answer, "empty answer"
    return thought, answer, None


def _segments(positions: Sequence[int]) -> list[list[int]]:
    """Runs of consecutive positions."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def question_positions(
    tokenizer, row: Sequence[int], lo: int, hi: int, question: str, excluded: set[int]
) -> list[int] | None:
    """Positions in ``[lo, hi)`` of the tokens that spell ``question``, or None if absent.

    The question is looked up in the decoded text of each run of non-``excluded`` (e.g.
    visual) tokens, last run first (:func:`token_offsets`): tokenised alone, a question can
    differ from the same words in the prompt ("What" after a newline is not LLaMA's
    "▁What"), so its token ids are not searched for.
    """
    if not question:
        return None
    kept = [p for p in range(lo, hi) if p not in excluded]
    for run in reversed(_segments(kept)):
        text, spans = token_offsets(tokenizer, [row[p] for p in run])
        at = text.rfind(question)
        if at >= 0:
            return [run[k] for k in _overlapping(spans, at, at + len(question))]
    return None


def _prompt_text_positions(
    tokenizer, row: list[int], prompt_from: int, prompt_to: int, visual: set[int], question: str
) -> list[int]:
    """Positions of the question's tokens in the prompt, else every non-visual prompt token."""
    found = question_positions(tokenizer, row, prompt_from, prompt_to, question, visual)
    if found:
        return found
    return [p for p in range(prompt_from, prompt_to) if p not in visual]


def encode_with_completion_ids(
    adapter: VLMAdapter,
    processor,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    completion_ids: Sequence[Sequence[int]],
) -> EncodedBatch:
    """Like ``adapter.encode`` with completions given as token ids (e.g. a rollout's output).

    The prompts are encoded by the adapter (left padding); each completion's ids are appended
    as they are (include the end-of-turn id if it was generated). Keeps every per-token input
    (``input_ids``, ``attention_mask``, Qwen's ``mm_token_type_ids``) aligned.
    """
    prompts = adapter.encode(processor, list(images), list(questions))
    inputs, mask = prompts.inputs, prompts.inputs["attention_mask"]
    width = mask.shape[1]
    lengths = prompts.prompt_lengths
    total = [n + len(ids) for n, ids in zip(lengths, completion_ids, strict=True)]
    new_width = max(total)
    per_token = [k for k, v in inputs.items() if torch.is_tensor(v) and v.shape == mask.shape]
    rebuilt = {k: torch.zeros(len(lengths), new_width, dtype=inputs[k].dtype) for k in per_token}
    rebuilt["input_ids"].fill_(processor.tokenizer.pad_token_id)
    for b, (n_prompt, ids) in enumerate(zip(lengths, completion_ids, strict=True)):
        start = new_width - total[b]
        for key in per_token:
            row = rebuilt[key][b]
            row[start : start + n_prompt] = inputs[key][b, width - n_prompt :]
            if key == "input_ids":
                row[start + n_prompt :] = torch.as_tensor(list(ids), dtype=row.dtype)
            elif key == "attention_mask":
                row[start + n_prompt :] = 1
    inputs.update(rebuilt)
    starts = [new_width - n for n in total]
    return EncodedBatch(inputs, starts, list(lengths), [len(ids) for ids in completion_ids])


def prepare_batch(
    model: PreTrainedModel,
    processor,
    adapter: VLMAdapter,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    completions: Sequence[str] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
) -> SaliencyBatch:
    """Encode a teacher-forced batch and locate every span the saliency methods need.

    Completions are given as text (tokenised on their own, end-of-turn appended, as
    ``adapter.encode`` does) or as token ids (``completion_ids``, used as they are).
    """
    images = [im.convert("RGB") for im in images]
    if (completions is None) == (completion_ids is None):
        raise ValueError("give exactly one of completions (text) or completion_ids")
    if completion_ids is not None:
        encoded = encode_with_completion_ids(adapter, processor, images, questions, completion_ids)
        tokenizer = processor.tokenizer
        known = len(tokenizer)  # a random model may emit ids beyond the tokenizer's vocabulary
        completions = [tokenizer.decode([i for i in ids if i < known]) for ids in completion_ids]
    else:
        encoded = adapter.encode(processor, images, list(questions), list(completions))
    layouts = adapter.visual_layouts(encoded.inputs, model)
    tokenizer = processor.tokenizer
    end_tokens = _end_tokens(tokenizer)
    samples = []
    for b, layout in enumerate(layouts):
        row = [int(t) for t in encoded.inputs["input_ids"][b].tolist()]
        c_from, c_to = encoded.completion_span(b)
        while c_to > c_from and row[c_to - 1] in end_tokens:
            c_to -= 1
        visual = [int(p) for p in layout.positions.tolist()]
        prompt_text = _prompt_text_positions(
            tokenizer, row, encoded.prompt_start[b], c_from, set(visual), questions[b]
        )
        text, spans = token_offsets(tokenizer, row[c_from:c_to])
        thought, answer, reason = split_completion(text, spans, c_from)
        samples.append(
            SampleTokens(
                visual=visual,
                grid=layout.grid,
                prompt_text=prompt_text,
                targets=list(range(c_from, c_to)),
                thought=thought,
                answer=answer,
                cot_reason=reason,
            )
        )
    return SaliencyBatch(
        encoded=encoded,
        layouts=layouts,
        samples=samples,
        image_sizes=[im.size for im in images],
        questions=list(questions),
        completions=list(completions),
        views=[adapter.image_view(processor, im.size) for im in images],
        images=images,
        processor=processor,
    )


def pad_positions(
    lists: Sequence[Sequence[int]], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad integer lists into ``(index (B, N), valid (B, N))``; padding index is 0."""
    width = max((len(x) for x in lists), default=0)
    index = torch.zeros(len(lists), width, dtype=torch.long)
    valid = torch.zeros(len(lists), width, dtype=torch.bool)
    for b, items in enumerate(lists):
        if items:
            index[b, : len(items)] = torch.as_tensor(list(items), dtype=torch.long)
            valid[b, : len(items)] = True
    return index.to(device), valid.to(device)
