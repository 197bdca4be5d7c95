"""Where a VLM looks when it answers: every saliency method behind one interface
(definitions: docs/methods.md).

Registry names (:func:`available_methods`): ``logit_decomposition``, ``cot_bottleneck``
(Saliency-R1), ``attention_gradient`` (LVLMs-Saliency), ``glimpse`` (GLIMPSE), and the
baselines ``raw_attention``, ``rollout``, ``gradcam``, ``tmme``, ``tmme_last_k``, ``random``.

>>> results = explain_batch(model, processor, images, questions, completions,
...                         ["logit_decomposition", "cot_bottleneck"])
>>> results["cot_bottleneck"][0].response_map  # (h, w) float32, or None ("no map")

Maps live on the model's visual-token grid; :func:`upsample_map` brings them to image
pixels and :func:`alignment_score` (Saliency-R1's mass-in-box ratio) comes from
:mod:`lookright.metrics.localisation`.
"""

from lookright.metrics.localisation import alignment_score, upsample_map
from lookright.saliency.api import (
    available_methods,
    explain_batch,
    explain_sample,
    get_method,
    run_methods,
)
from lookright.saliency.base import METHODS, SaliencyMethod
from lookright.saliency.batch import SaliencyBatch, prepare_batch
from lookright.saliency.types import SaliencyResult

__all__ = [
    "METHODS",
    "SaliencyBatch",
    "SaliencyMethod",
    "SaliencyResult",
    "alignment_score",
    "available_methods",
    "explain_sample",
    "explain_batch",
    "get_method",
    "prepare_batch",
    "run_methods",
    "upsample_map",
]
