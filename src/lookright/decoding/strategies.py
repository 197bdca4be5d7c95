"""``lookright.decoding.generate``: every decoding strategy of the stage from plain Python.

    from lookright.decoding import generate
    encoded = adapter.encode(processor, images, questions)          # left padding
    out = generate(model, encoded.inputs, strategy="sgrs+locore", max_new_tokens=64,
                   alpha=0.6, beta=0.15)
    texts = processor.tokenizer.batch_decode(out.tokens, skip_special_tokens=True)

Strategies (all through ``model.generate`` with the KV cache and the model's attention
implementation): ``greedy``; ``beam`` (``num_beams``, the paper's baseline); ``sample``
(top-K sampling, K = ``top_k``); ``locore`` (greedy + LocoRE); ``sgrs``; ``sgrs+locore``.
Sampling decisions are made by :class:`SaliencyGuidedSampler` for ``sample`` and the SGRS
strategies, so ``sample`` and ``sgrs`` share one random stream (``sgrs`` with alpha = 0 gives
the same tokens as ``sample``, which gives the same tokens as transformers' own top-K
sampling under the same seed).

The checkpoint's ``generation_config`` contributes only its special tokens (eos/pad/bos):
sampling and penalty settings shipped with a checkpoint (Qwen2.5-VL ships top_k=1,
repetition_penalty=1.05, ...) would otherwise silently change the strategies.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from lookright.decoding.attention import attention_session
from lookright.decoding.params import (
    LocoreParams,
    SgrsParams,
    as_params,
    check_positive_int,
    check_strategy,
    layer_indices,
    split_flat_params,
)
from lookright.decoding.plain import (
    DecodeOutput,
    generation_config,
    new_tokens,
    plain_generate,
    synchronize,
)
from lookright.decoding.saliency import StepScorer, prefill_all_but_last
from lookright.decoding.sgrs import SaliencyGuidedSampler
from lookright.models.base import VLMAdapter, adapter_for
from lookright.saliency.batch import question_positions


def question_key_mask(
    processor: Any,
    inputs: Mapping[str, torch.Tensor],
    questions: Sequence[str] | None,
    image_token_id: int | None,
) -> torch.Tensor:
    """``(B, W0)`` float mask of each prompt's question tokens (J's prompt part).

    The question is located in the prompt's decoded text (as the saliency engine does,
    :func:`lookright.saliency.batch.question_positions`); if not found (or no questions
    given), every non-padding, non-image prompt token counts.
    """
    ids = inputs["input_ids"]
    mask = inputs["attention_mask"].bool()
    fallback = mask & (ids != image_token_id) if image_token_id is not None else mask.clone()
    keys = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    for b in range(ids.shape[0]):
        found = None
        if questions is not None and questions[b]:
            row = ids[b].tolist()
            real = torch.nonzero(mask[b]).flatten().tolist()
            images = {p for p, t in enumerate(row) if t == image_token_id}
            found = question_positions(
                processor.tokenizer, row, real[0] if real else 0, len(row), questions[b], images
            )
        if found:
            keys[b, found] = 1.0
        else:
            keys[b] = fallback[b].float()
    return keys


def generate(
    model: PreTrainedModel,
    inputs: Mapping[str, Any],
    strategy: str = "greedy",
    *,
    max_new_tokens: int = 64,
    adapter: VLMAdapter | None = None,
    sgrs: SgrsParams | Mapping[str, Any] | None = None,
    locore: LocoreParams | Mapping[str, Any] | None = None,
    num_beams: int = 5,
    question_keys: torch.Tensor | None = None,
    generators: list[torch.Generator] | None = None,
    token_saliency: bool = False,
    **params: Any,
) -> DecodeOutput:
    """Decode a left-padded batch ``inputs`` (from ``adapter.encode``) with ``strategy``.

    Parameters can be given as ``sgrs=SgrsParams(...)`` / ``locore=LocoreParams(...)`` (or
    dicts), and/or as flat keywords: ``top_k, max_draws, alpha, history, sgrs_layers``
    (SGRS; ``top_k`` is also K of ``sample``) and ``beta, locore_window, locore_layers,
    renormalise`` (LocoRE). ``question_keys (B, W0)`` marks the question tokens of J (default:
    every non-image prompt token; see :func:`question_key_mask`). ``generators``: one
    ``torch.Generator`` per sequence for the sampling strategies (default: the global RNG).
    ``token_saliency``: also score the chosen token of ``greedy``/``sample``/``locore``.
    Scoring strategies first run the prompt minus its last token through ``generate`` to fill
    the KV cache, then continue from it, so every scored row is a one-row step
    (:func:`lookright.decoding.saliency.prefill_all_but_last`).
    """
    check_strategy(strategy)
    max_new_tokens = check_positive_int("max_new_tokens", max_new_tokens)
    sgrs_params, locore_params = split_flat_params(
        params, as_params(SgrsParams, sgrs), as_params(LocoreParams, locore)
    )
    adapter = adapter or adapter_for(model)
    ids = inputs["input_ids"]
    batch = ids.shape[0]
    if generators is not None and len(generators) != batch:
        raise ValueError(f"generators: need one per sequence ({batch}), got {len(generators)}")
    use_locore = strategy in ("locore", "sgrs+locore")
    use_sgrs = strategy in ("sgrs", "sgrs+locore")
    if use_sgrs:
        sampler_mode = "sgrs"
    elif strategy == "sample":
        sampler_mode = "topk"
    elif strategy in ("greedy", "locore") and token_saliency:
        sampler_mode = "argmax"  # greedy itself, to score the chosen tokens
    else:
        sampler_mode = None  # plain transformers greedy / beam search
    scoring = use_sgrs or (token_saliency and sampler_mode is not None)
    if strategy == "beam":
        num_beams = check_positive_int("num_beams", num_beams)
    if sampler_mode is None and not use_locore:
        return plain_generate(
            model, inputs, strategy, max_new_tokens=max_new_tokens, num_beams=num_beams
        )
    config = generation_config(model, max_new_tokens, do_sample=False)
    if question_keys is None:
        image_token = getattr(model.config, "image_token_id", None)
        question_keys = question_key_mask(None, inputs, None, image_token)
    device = ids.device
    model.eval()
    sampler: SaliencyGuidedSampler | None = None
    with contextlib.ExitStack() as stack:
        session = None
        if use_locore or scoring:
            session = stack.enter_context(
                attention_session(model, adapter, locore=locore_params if use_locore else None)
            )
        scorer = None
        if scoring:
            assert session is not None
            layers = layer_indices(sgrs_params.layers, session.n_layers)
            scorer = stack.enter_context(StepScorer(model, adapter, session, layers))
        processors = []
        if sampler_mode is not None:
            sampler = SaliencyGuidedSampler(
                scorer,
                sgrs_params,
                question_keys.to(device),
                mode=sampler_mode,
                score=scoring,
                generators=generators,
            )
            processors.append(sampler)
        synchronize(device)
        start = time.perf_counter()
        decode_inputs: dict[str, Any] = dict(inputs)
        cache: dict[str, Any] = {}
        if scoring:
            decode_inputs, cache = prefill_all_but_last(model, inputs, config, session)
        sequences = model.generate(  # type: ignore[operator]
            **decode_inputs, **cache, generation_config=config, logits_processor=processors or None
        )
        synchronize(device)
        elapsed = time.perf_counter() - start
    return _collect(strategy, model, ids.shape[1], sequences, sampler, elapsed)


def _collect(
    strategy: str,
    model: PreTrainedModel,
    prompt_width: int,
    sequences: torch.Tensor,
    sampler: SaliencyGuidedSampler | None,
    elapsed: float,
) -> DecodeOutput:
    tokens = new_tokens(model, prompt_width, sequences)
    records = sampler.state.records if sampler is not None else []
    saliency = draws = fallback = None
    if sampler is not None and sampler.score:
        saliency = [
            [float(records[i].chosen_saliency[b]) for i in range(len(t))]
            for b, t in enumerate(tokens)
        ]
    if sampler is not None and sampler.mode == "sgrs":
        draws = [[int(records[i].draws[b]) for i in range(len(t))] for b, t in enumerate(tokens)]
        fallback = [
            [bool(records[i].fallback[b]) for i in range(len(t))] for b, t in enumerate(tokens)
        ]
    return DecodeOutput(
        strategy=strategy,
        tokens=tokens,
        token_saliency=saliency,
        draws=draws,
        fallback=fallback,
        records=records,
        sequences=sequences,
        time_s=elapsed,
        saliency_time_s=sampler.state.saliency_time_s if sampler is not None else 0.0,
    )


def generate_for_transformers(
    model: PreTrainedModel, strategies: Sequence[str], arguments: dict[str, Any]
) -> torch.Tensor:
    """The body of lookright's ``custom_generate`` folders (:data:`CUSTOM_GENERATE`).

    ``arguments`` are what ``model.generate(..., custom_generate=<folder>)`` received: the
    model inputs (``input_ids``, ``attention_mask``, ``pixel_values``, ...), ``max_new_tokens``
    (or a ``generation_config``), ``strategy`` (one of ``strategies``; default the first), the
    strategy's parameters as in :func:`generate` (``alpha``, ``top_k``, ``beta``, ...), and
    optionally ``generators`` (one per sequence) and ``question_keys``, or ``processor`` +
    ``questions`` to build them. Returns the sequences (prompt + new tokens), as ``generate``.
    """
    import inspect

    arguments = {k: v for k, v in arguments.items() if v is not None}
    own = set(inspect.signature(model.generate).parameters) - {"kwargs"}  # type: ignore[arg-type]
    unsupported = sorted(
        k for k in own & set(arguments) if k not in ("inputs", "generation_config") and arguments[k]
    )
    if unsupported:
        raise ValueError(f"lookright's custom_generate does not support {unsupported}")
    strategy = arguments.pop("strategy", strategies[0])
    if strategy not in strategies:
        raise ValueError(f"strategy must be one of {list(strategies)} here, got {strategy!r}")
    config = arguments.pop("generation_config", None)
    max_new_tokens = arguments.pop("max_new_tokens", None) or getattr(
        config, "max_new_tokens", None
    )
    model_inputs = {k: arguments.pop(k) for k in list(arguments) if torch.is_tensor(arguments[k])}
    if "inputs" in arguments:
        model_inputs["input_ids"] = arguments.pop("inputs")
    processor, questions = arguments.pop("processor", None), arguments.pop("questions", None)
    if "question_keys" not in model_inputs and processor is not None and questions is not None:
        image_token = getattr(model.config, "image_token_id", None)
        model_inputs["question_keys"] = question_key_mask(
            processor, model_inputs, questions, image_token
        )
    question_keys = model_inputs.pop("question_keys", None)
    for key in own & set(arguments):
        arguments.pop(key)
    output = generate(
        model,
        model_inputs,
        strategy,
        max_new_tokens=max_new_tokens or 64,
        question_keys=question_keys,
        **arguments,
    )
    return output.sequences


def sample_generator(seed: int, sample_id: str, device: torch.device) -> torch.Generator:
    """The random stream of one sample, seeded by ``seed`` and its id: answers of the sampling
    strategies then do not depend on how samples are batched."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    generator = torch.Generator(device=device)
    generator.manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return generator
