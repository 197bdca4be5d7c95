"""Evaluation metrics: pure functions, one module per metric family (docs/methods.md#evaluation).

* :mod:`~lookright.metrics.faithfulness`: Saliency-R1 deletion / insertion;
* :mod:`~lookright.metrics.perturbation`: cells of an image replaced by a baseline (deletion's
  and the occlusion map's);
* :mod:`~lookright.metrics.agreement`: a map's agreement with the occlusion reference;
* :mod:`~lookright.metrics.thought_faithfulness`: whether the thought is true and the answer
  follows it, and the CoT bottleneck's share;
* :mod:`~lookright.metrics.human_alignment`: GLIMPSE NSS and Spearman against human attention;
* :mod:`~lookright.metrics.localisation`: Saliency-R1 alignment score (map mass inside boxes);
* :mod:`~lookright.metrics.pope`: POPE yes/no parsing and metrics;
* :mod:`~lookright.metrics.chair`: CHAIR object hallucination in captions;
* :mod:`~lookright.metrics.accuracy`: normalised exact-match accuracy.

Import them from their modules (``from lookright.metrics.pope import pope_metrics``): the
package itself imports nothing, so reading one metric loads no other.
"""
