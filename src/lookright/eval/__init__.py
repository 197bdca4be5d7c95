"""Evaluation metrics: pure functions, one module per metric family (METHODS.md section 10).

* :mod:`~lookright.eval.faithfulness`: Saliency-R1 deletion / insertion;
* :mod:`~lookright.eval.human_alignment`: GLIMPSE NSS and Spearman against human attention;
* :mod:`~lookright.eval.localisation`: Saliency-R1 alignment score (map mass inside boxes);
* :mod:`~lookright.eval.pope`: POPE yes/no parsing and metrics;
* :mod:`~lookright.eval.chair`: CHAIR object hallucination in captions;
* :mod:`~lookright.eval.accuracy`: normalised exact-match accuracy.
"""

from lookright.eval.accuracy import (
    accuracy,
    accuracy_by_subset,
    exact_match,
    extract_answer,
    normalise_answer,
)
from lookright.eval.chair import (
    SHAPES_VOCABULARY,
    ChairVocabulary,
    chair_caption,
    chair_metrics,
    coco_vocabulary,
    extract_mentions,
    extract_objects,
    singularise,
)
from lookright.eval.faithfulness import (
    auc,
    curve,
    deletion_image,
    deletion_insertion_table,
    evaluate_deletion_insertion,
    insertion_image,
    make_baseline,
    patch_mask,
    perturb_image,
    rank_patches,
    relative_score,
)
from lookright.eval.human_alignment import MetricUndefinedWarning, fixation_mask, nss, spearman
from lookright.eval.localisation import alignment_score, box_coverage, resize_map, upsample_map
from lookright.eval.pope import parse_yes_no, pope_by_split, pope_metrics

__all__ = [
    "SHAPES_VOCABULARY",
    "ChairVocabulary",
    "MetricUndefinedWarning",
    "accuracy",
    "accuracy_by_subset",
    "alignment_score",
    "auc",
    "box_coverage",
    "chair_caption",
    "chair_metrics",
    "coco_vocabulary",
    "curve",
    "deletion_image",
    "deletion_insertion_table",
    "evaluate_deletion_insertion",
    "exact_match",
    "extract_answer",
    "extract_mentions",
    "extract_objects",
    "fixation_mask",
    "insertion_image",
    "make_baseline",
    "normalise_answer",
    "nss",
    "parse_yes_no",
    "patch_mask",
    "perturb_image",
    "pope_by_split",
    "pope_metrics",
    "rank_patches",
    "relative_score",
    "resize_map",
    "singularise",
    "spearman",
    "upsample_map",
]
