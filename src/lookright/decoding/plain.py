"""Decoding without saliency: greedy and beam search through ``model.generate``, and what
every strategy shares (the generation config, the output, cutting at the end token).

Kept apart from the SGRS/LocoRE machinery so that code needing only greedy answers (the
training stages' held-out accuracy, :func:`lookright.explain`) does not import it, and editing
SGRS does not rerun those stages (their fingerprints follow imports).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, PreTrainedModel

if TYPE_CHECKING:
    from lookright.decoding.sgrs import StepRecord


@dataclass
class DecodeOutput:
    """Result of :func:`lookright.decoding.generate` for a batch.

    tokens[b]: generated token ids of sample b, up to and including the first end token.
    token_saliency[b]: S of each of those tokens (SGRS strategies; baselines when
    ``token_saliency=True``; None for beam search or when not computed).
    draws[b] / fallback[b]: SGRS draws per token and whether the saliency fallback chose it
    (None for strategies without SGRS).
    records: per-step :class:`StepRecord` of the sampler (candidates, their saliency, tau).
    time_s: wall time of the batch; saliency_time_s: the part spent scoring candidates.
    """

    strategy: str
    tokens: list[list[int]]
    token_saliency: list[list[float]] | None
    draws: list[list[int]] | None
    fallback: list[list[bool]] | None
    records: list[StepRecord]
    sequences: torch.Tensor
    time_s: float
    saliency_time_s: float

    @property
    def n_new_tokens(self) -> int:
        return sum(len(t) for t in self.tokens)


def _special_tokens(model: PreTrainedModel) -> dict[str, Any]:
    config = model.generation_config
    return {
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
    }


def generation_config(
    model: PreTrainedModel, max_new_tokens: int, *, do_sample: bool, num_beams: int = 1, **extra
) -> GenerationConfig:
    """A config with transformers' global defaults, the model's special tokens and ``extra``.

    The checkpoint's own ``generation_config`` contributes only its special tokens: sampling
    and penalty settings shipped with a checkpoint (Qwen2.5-VL ships top_k=1,
    repetition_penalty=1.05, ...) would otherwise silently change the strategies.
    """
    values = GenerationConfig()._get_default_generation_params()
    values.update(_special_tokens(model))
    values.update(max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=num_beams, **extra)
    values.pop("max_length", None)
    return GenerationConfig(**values)


def end_tokens(model: PreTrainedModel) -> set[int]:
    """The model's end-of-sequence token ids."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    return {int(t) for t in eos}


def new_tokens(
    model: PreTrainedModel, prompt_width: int, sequences: torch.Tensor
) -> list[list[int]]:
    """Each row's generated tokens, up to and including its first end token."""
    ends = end_tokens(model)
    tokens = []
    for row in sequences[:, prompt_width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in ends), len(row))
        tokens.append(row[:cut])
    return tokens


def synchronize(device: torch.device) -> None:
    """Wait for the device (so wall times measure the work, not its queueing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_generate(
    model: PreTrainedModel,
    inputs: Mapping[str, Any],
    strategy: str = "greedy",
    *,
    max_new_tokens: int = 64,
    num_beams: int = 5,
) -> DecodeOutput:
    """``greedy`` or ``beam`` (``num_beams``) decoding of a left-padded batch, no saliency."""
    if strategy not in ("greedy", "beam"):
        raise ValueError(f"plain decoding is 'greedy' or 'beam', got {strategy!r}")
    beams = num_beams if strategy == "beam" else 1
    config = generation_config(model, max_new_tokens, do_sample=False, num_beams=beams)
    device = inputs["input_ids"].device
    model.eval()
    synchronize(device)
    start = time.perf_counter()
    with torch.no_grad():
        sequences = model.generate(**inputs, generation_config=config)  # type: ignore[operator]
    synchronize(device)
    return DecodeOutput(
        strategy=strategy,
        tokens=new_tokens(model, inputs["input_ids"].shape[1], sequences),
        token_saliency=None,
        draws=None,
        fallback=None,
        records=[],
        sequences=sequences,
        time_s=time.perf_counter() - start,
        saliency_time_s=0.0,
    )
