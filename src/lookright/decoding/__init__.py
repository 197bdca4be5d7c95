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
search). Use :func:`lookright.decoding.plain.generation_config` so a checkpoint's own
sampling/penalty settings do not add logits processors.
"""

from __future__ import annotations

from pathlib import Path

from lookright.lazy import lazy_exports

# Loaded on first use: importing lookright.decoding.params (the strategies' names, their
# parameters) must not import torch or transformers.
_LAZY = {
    "attention_session": "lookright.decoding.attention",
    "DecodeOutput": "lookright.decoding.plain",
    "generation_config": "lookright.decoding.plain",
    "plain_generate": "lookright.decoding.plain",
    "generate": "lookright.decoding.strategies",
    "question_key_mask": "lookright.decoding.strategies",
    "sample_generator": "lookright.decoding.strategies",
    "FAMILY_BETA": "lookright.decoding.params",
    "STRATEGIES": "lookright.decoding.params",
    "DecodingParameterError": "lookright.decoding.params",
    "LocoreParams": "lookright.decoding.params",
    "SgrsParams": "lookright.decoding.params",
    "layer_indices": "lookright.decoding.params",
    "StepScorer": "lookright.decoding.saliency",
    "prefill_all_but_last": "lookright.decoding.saliency",
    "SaliencyGuidedSampler": "lookright.decoding.sgrs",
    "StepRecord": "lookright.decoding.sgrs",
}

CUSTOM_GENERATE: dict[str, str] = {
    name: str(Path(__file__).parent / "hub" / name) for name in ("sgrs", "locore")
}
"""Local ``custom_generate`` folders: ``model.generate(**inputs, custom_generate=
CUSTOM_GENERATE["sgrs"], trust_remote_code=True, alpha=0.6)`` decodes with SGRS."""


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = ["CUSTOM_GENERATE", *_LAZY]
