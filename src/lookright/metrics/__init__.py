"""Evaluation metrics: pure functions, one module per metric family (docs/methods.md#evaluation).

* :mod:`~lookright.metrics.faithfulness`: Saliency-R1 deletion / insertion;
* :mod:`~lookright.metrics.human_alignment`: GLIMPSE NSS and Spearman against human attention;
* :mod:`~lookright.metrics.localisation`: Saliency-R1 alignment score (map mass inside boxes);
* :mod:`~lookright.metrics.pope`: POPE yes/no parsing and metrics;
* :mod:`~lookright.metrics.chair`: CHAIR object hallucination in captions;
* :mod:`~lookright.metrics.accuracy`: normalised exact-match accuracy.

Import them from their modules (``from lookright.metrics.pope import pope_metrics``): the
package itself imports nothing, so reading one metric loads no other.
"""
