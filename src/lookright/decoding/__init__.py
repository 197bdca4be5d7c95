"""Hallucination-mitigating decoding: SGRS and LocoRE (LVLMs-Saliency), with baselines.

Public API: :func:`generate` (all strategies on a left-padded batch), the parameter classes
:class:`SgrsParams` / :class:`LocoreParams`, and the building blocks for use with a plain
``model.generate``: :func:`attention_session` (LocoRE; the attention function SGRS needs),
:class:`StepScorer` (per-step candidate saliency), :func:`prefill_all_but_last` (so every
scored row is a one-row step) and :class:`SaliencyGuidedSampler` (the SGRS LogitsProcessor).
Definitions: docs/methods.md (LVLMs-Saliency, arXiv 2601.20279).

The building blocks with a plain ``model.generate`` (what :func:`generate` does)::

    params = SgrsParams(alpha=0.6)
    keys = question_key_mask(processor, inputs, questions, model.config.image_token_id)
    config = generation_config(model, 64, do_sample=False)
    with attention_session(model, adapter, locore=LocoreParams(beta=0.15)) as session:
        layers = layer_indices(params.layers, session.n_layers)
        with StepScorer(model, adapter, session, layers) as scorer:
            sgrs = SaliencyGuidedSampler(scorer, params, keys)
            rest, cache = prefill_all_but_last(model, inputs, config, session)
            out = model.generate(**rest, **cache, generation_config=config,
                                 logits_processor=[sgrs])
    # sgrs.state.records: per step candidates, their saliency, tau, draws, fallbacks

``attention_session`` alone is LocoRE for any transformers decoding (greedy, sampling, beam
search). Use :func:`lookright.decoding.generate.generation_config` so a checkpoint's own
sampling/penalty settings do not add logits processors.
"""

from pathlib import Path

from lookright.decoding.attention import attention_session
from lookright.decoding.generate import DecodeOutput, generate, question_key_mask
from lookright.decoding.params import (
    FAMILY_BETA,
    STRATEGIES,
    DecodingParameterError,
    LocoreParams,
    SgrsParams,
    layer_indices,
)
from lookright.decoding.saliency import StepScorer, prefill_all_but_last
from lookright.decoding.sgrs import SaliencyGuidedSampler, StepRecord

CUSTOM_GENERATE: dict[str, str] = {
    name: str(Path(__file__).parent / "hub" / name) for name in ("sgrs", "locore")
}
"""Local ``custom_generate`` folders: ``model.generate(**inputs, custom_generate=
CUSTOM_GENERATE["sgrs"], trust_remote_code=True, alpha=0.6)`` decodes with SGRS."""

__all__ = [
    "CUSTOM_GENERATE",
    "FAMILY_BETA",
    "STRATEGIES",
    "DecodeOutput",
    "DecodingParameterError",
    "LocoreParams",
    "SaliencyGuidedSampler",
    "SgrsParams",
    "StepRecord",
    "StepScorer",
    "attention_session",
    "generate",
    "layer_indices",
    "prefill_all_but_last",
    "question_key_mask",
]
