"""Where a VLM looks when it answers: every saliency method behind one interface
(definitions: docs/methods.md).

Registry names (:func:`available_methods`): ``logit_decomposition``, ``cot_bottleneck``
(Saliency-R1), ``attention_gradient`` (LVLMs-Saliency), ``glimpse`` (GLIMPSE), and the
baselines ``raw_attention``, ``rollout``, ``gradcam``, ``tmme``, ``tmme_last_k``, ``random``, and
the reference ``occlusion`` (per-cell drop of each token's log-prob; :mod:`occlusion`).

>>> results = explain_batch(model, processor, images, questions, completions,
...                         ["logit_decomposition", "cot_bottleneck"])
>>> results["cot_bottleneck"][0].response_map  # (h, w) float32, or None ("no map")

Maps live on the model's visual-token grid; :func:`upsample_map` brings them to image
pixels and :func:`alignment_score` (Saliency-R1's mass-in-box ratio) comes from
:mod:`lookright.metrics.localisation`.
"""

from __future__ import annotations

from lookright.lazy import lazy_exports

# Loaded on first use: light modules of the package (render, types) import without torch.
_LAZY = {
    "alignment_score": "lookright.metrics.localisation",
    "upsample_map": "lookright.metrics.localisation",
    "available_methods": "lookright.saliency.api",
    "explain_batch": "lookright.saliency.api",
    "explain_sample": "lookright.saliency.api",
    "get_method": "lookright.saliency.api",
    "run_methods": "lookright.saliency.api",
    "METHODS": "lookright.saliency.base",
    "SaliencyMethod": "lookright.saliency.base",
    "SaliencyBatch": "lookright.saliency.batch",
    "prepare_batch": "lookright.saliency.batch",
    "SaliencyResult": "lookright.saliency.types",
}


__getattr__ = lazy_exports(__name__, _LAZY)


__all__ = sorted(_LAZY)
