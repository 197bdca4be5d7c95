"""Typed configuration of the ``evaluate`` stages (config key ``evaluate``).

Two rules share it: ``evaluate_saliency`` (per model: task accuracy, saliency maps of every
method, alignment score, human alignment, deletion / insertion) and ``evaluate_answers``
(per model x decode strategy: POPE and CHAIR of the decoded answers). Merged over these
defaults by :func:`lookright.config.load_stage_config`; :func:`validate` checks ranges with
errors that name the key and its valid range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lookright.config import ConfigError, ModelSection, TrackingConfig
from lookright.data.schema import VOCABULARIES as OBJECT_VOCABULARIES
from lookright.metrics.perturbation import BASELINE_KINDS as BASELINES
from lookright.saliency.weighting import SIGNAL_METHOD, WEIGHTINGS

VOCABULARIES = ("auto", *OBJECT_VOCABULARIES)
SINGULARISERS = ("rule", "wordnet", "auto")


@dataclass
class FaithfulnessSection:
    enabled: bool = True
    baseline: str = "blur"  # blur (Saliency-R1), mean, zero
    blur_radius: float = 10.0
    deletion_fractions: list[float] = field(default_factory=lambda: [0.05, 0.15, 0.3])
    insertion_fractions: list[float] = field(default_factory=lambda: [0.3])
    curve_steps: int = 10  # full curves at 0, 1/steps, ..., 1 (for the AUC and the plots)
    max_samples: int | None = 100  # correctly answered test questions scored (None = all)
    variants: bool = True  # also score the <method>.<weighting> maps (evaluate.token_weightings)


@dataclass
class OcclusionSection:
    # occlude cell_size x cell_size blocks of visual-token cells at once (1 = every cell alone;
    # the baseline is evaluate.faithfulness.baseline / blur_radius, as deletion uses)
    cell_size: int = 1
    # correctly answered samples whose occlusion map (agreement, token dependence, occlusion
    # weighting) is computed: stratified like faithfulness.max_samples (None = all)
    max_samples: int | None = 100


@dataclass
class ChairSection:
    vocabulary: str = "auto"  # auto (follow the data: coco reader -> coco), shapes or coco
    synonyms_file: str | None = None  # optional "name, synonym, ..." lines replacing the above
    singulariser: str = "rule"  # rule (default), wordnet (needs NLTK data), auto


@dataclass
class EvaluateSection:
    split: str = "test"
    max_samples: int | None = 200  # VQA questions generated + explained (None = whole split)
    batch_size: int = 16
    max_new_tokens: int = 48
    methods: list[str] | None = None  # None: every method of the saliency registry
    # response maps rebuilt with each token weighting (uniform = the methods' own maps);
    # a non-uniform one adds a "<method>.<weighting>" row per per-token method
    token_weightings: list[str] = field(default_factory=lambda: ["uniform"])
    nss_percentile: float = 90.0  # human map cells above this percentile are "fixations"
    gallery_samples: int = 6  # samples whose maps are kept in maps.parquet for the report
    device: str = "auto"
    faithfulness: FaithfulnessSection = field(default_factory=FaithfulnessSection)
    occlusion: OcclusionSection = field(default_factory=OcclusionSection)
    chair: ChairSection = field(default_factory=ChairSection)


@dataclass
class EvaluateConfig:
    seed: int = 0
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    model: ModelSection = field(default_factory=ModelSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)


def _fractions(name: str, values: list[float]) -> None:
    bad = [v for v in values if not 0.0 < v <= 1.0]
    if bad:
        raise ConfigError(
            f"evaluate.faithfulness.{name}: every value must lie in (0, 1], got {bad}"
        )


def _weightings(weightings: list[str], methods: list[str]) -> None:
    unknown = [w for w in weightings if w not in WEIGHTINGS]
    if unknown or not weightings or len(set(weightings)) != len(weightings):
        raise ConfigError(
            f"evaluate.token_weightings: unknown, repeated or empty {unknown or weightings}; "
            f"valid: {list(WEIGHTINGS)}"
        )
    for weighting in weightings:
        needed = SIGNAL_METHOD.get(weighting)
        if needed is not None and needed not in methods:
            raise ConfigError(
                f"evaluate.token_weightings: {weighting!r} reads the {needed!r} method's result; "
                f"add {needed!r} to evaluate.methods (now {methods})"
            )


def validate(cfg: EvaluateConfig) -> EvaluateConfig:
    """Range checks of the ``evaluate`` section; a :class:`ConfigError` names the key."""
    e = cfg.evaluate
    if e.split not in ("train", "val", "test"):
        raise ConfigError(f"evaluate.split must be one of train, val, test, got {e.split!r}")
    if e.max_samples is not None and e.max_samples < 1:
        raise ConfigError(f"evaluate.max_samples must be >= 1 or null, got {e.max_samples}")
    for key in ("batch_size", "max_new_tokens"):
        if getattr(e, key) < 1:
            raise ConfigError(f"evaluate.{key} must be >= 1, got {getattr(e, key)}")
    from lookright.saliency.api import available_methods

    valid = available_methods()
    if e.methods is None:
        e.methods = valid
    unknown = [m for m in e.methods if m not in valid]
    if unknown or not e.methods:
        raise ConfigError(
            f"evaluate.methods: unknown or empty {unknown or e.methods}; valid: {valid}"
        )
    _weightings(e.token_weightings, e.methods)
    if e.occlusion.cell_size < 1:
        raise ConfigError(f"evaluate.occlusion.cell_size must be >= 1, got {e.occlusion.cell_size}")
    if e.occlusion.max_samples is not None and e.occlusion.max_samples < 1:
        raise ConfigError(
            f"evaluate.occlusion.max_samples must be >= 1 or null, got {e.occlusion.max_samples}"
        )
    if not 0.0 <= e.nss_percentile < 100.0:
        raise ConfigError(f"evaluate.nss_percentile must lie in [0, 100), got {e.nss_percentile}")
    if e.gallery_samples < 0:
        raise ConfigError(f"evaluate.gallery_samples must be >= 0, got {e.gallery_samples}")
    f = e.faithfulness
    if f.baseline not in BASELINES:
        raise ConfigError(
            f"evaluate.faithfulness.baseline must be one of {list(BASELINES)}, got {f.baseline!r}"
        )
    if f.blur_radius <= 0:
        raise ConfigError(f"evaluate.faithfulness.blur_radius must be > 0, got {f.blur_radius}")
    _fractions("deletion_fractions", f.deletion_fractions)
    _fractions("insertion_fractions", f.insertion_fractions)
    if f.curve_steps < 2:
        raise ConfigError(f"evaluate.faithfulness.curve_steps must be >= 2, got {f.curve_steps}")
    if f.max_samples is not None and f.max_samples < 1:
        raise ConfigError(
            f"evaluate.faithfulness.max_samples must be >= 1 or null, got {f.max_samples}"
        )
    return validate_chair(cfg)


def validate_chair(cfg: EvaluateConfig) -> EvaluateConfig:
    """Checks of ``evaluate.chair``, the only part of the section ``evaluate_answers`` reads
    (no saliency method is loaded, so the stage starts without torch)."""
    c = cfg.evaluate.chair
    if c.vocabulary not in VOCABULARIES:
        raise ConfigError(
            f"evaluate.chair.vocabulary must be one of {list(VOCABULARIES)}, got {c.vocabulary!r}"
        )
    if c.singulariser not in SINGULARISERS:
        raise ConfigError(
            f"evaluate.chair.singulariser must be one of {list(SINGULARISERS)}, "
            f"got {c.singulariser!r}"
        )
    return cfg
