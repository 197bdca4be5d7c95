"""LocoRE (local coherence reinforcement, LVLMs-Saliency, arXiv 2601.20279) for
``model.generate(..., custom_generate=<this folder>, trust_remote_code=True)``.

Greedy decoding with LocoRE through :func:`lookright.decoding.generate` (strategy
``locore``); parameters ``beta`` (default per model family), ``locore_window``,
``locore_layers``, ``renormalise``. Returns the sequences.
"""

from lookright.decoding.strategies import generate_for_transformers


def generate(model, **kwargs):
    return generate_for_transformers(model, ("locore",), kwargs)
