"""SGRS (saliency-guided rejection sampling, LVLMs-Saliency, arXiv 2601.20279) for
``model.generate(..., custom_generate=<this folder>, trust_remote_code=True)``.

Runs :func:`lookright.decoding.generate` with strategy ``sgrs`` (or ``strategy="sgrs+locore"``)
and returns the sequences. Parameters as there: ``top_k``, ``max_draws``, ``alpha``,
``history``, ``sgrs_layers`` (and ``beta``, ``locore_window``, ``locore_layers``,
``renormalise`` with LocoRE); ``processor`` + ``questions`` mark the question tokens of J.
"""

from lookright.decoding.strategies import generate_for_transformers


def generate(model, **kwargs):
    return generate_for_transformers(model, ("sgrs", "sgrs+locore"), kwargs)
