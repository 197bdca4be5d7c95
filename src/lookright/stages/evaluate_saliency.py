"""The ``evaluate_saliency`` stage: task accuracy and the quality of every saliency method.

    lookright evaluate-saliency --model-dir results/sft/<model>/model --data results/data \\
        --out results/evaluate/<model>/sft \\
        [--config-json '{"evaluate": {...}, "model": {...}, "seed": 0}']

For one trained model, on the VQA samples of ``evaluate.split`` with role ``eval`` (at most
``evaluate.max_samples``: a subsample seeded by ``seed`` and stratified by source and subset,
:mod:`lookright.data.subsample`; in ``sample_id`` order):

1. greedy completions (left-padded batches, :func:`lookright.train.common.greedy_answers`);
   the answer is the text after the last ``</think>``; correct = normalised exact match with
   the reference (:mod:`lookright.metrics.accuracy`), overall and per ``subset``;
2. the response-level map of every method of ``evaluate.methods``, teacher-forcing the
   model's OWN completion (:func:`lookright.saliency.api.run_methods`), scored by
   Saliency-R1's alignment score with the evidence boxes and GLIMPSE's NSS / Spearman with the
   human-attention map (docs/methods.md#nss_spearman);
3. Saliency-R1's deletion / insertion faithfulness on ``evaluate.faithfulness.max_samples``
   correctly answered samples (stratified as above; see
   :func:`score_faithfulness`);
4. with ``occlusion`` among the methods (the reference map, docs/methods.md#occlusion): every
   map's agreement with it (Pearson / Spearman per sample) and each completion token's visual
   dependence; every non-uniform ``evaluate.token_weightings`` adds the maps rebuilt with that
   token weighting (``<method>.<weighting>``, docs/methods.md#token_weighting), scored like
   the methods;
5. thought faithfulness (docs/methods.md#thought_faithfulness): on shapes samples, whether
   the thought names the true location / shape / colour and the answer follows the thought;
   on every sample, the CoT bottleneck's share of the answer's saliency.

Outputs in ``--out`` (Parquet written atomically, all logged to the stage's MLflow run):

``predictions.parquet`` (:data:`PREDICTIONS`), one row per sample
    sample_id, image_id, subset, question, reference, completion (the greedy text, special
    tokens skipped), answer (after the last ``</think>``, stripped), correct,
    thought_location, thought_shape, thought_color, answer_follows_thought (null where the
    claims cannot be checked: not the shapes template), cot_share (null without
    ``cot_bottleneck`` + ``logit_decomposition`` or a thought).
``tokens.parquet`` (:data:`TOKENS`), one row per completion token (with ``occlusion``)
    sample_id, index, position, token_id, token (decoded), segment ("thought" | "answer" |
    "other": the tags), visual_dependence (occlusion drop of its best cell, nats), best_cell
    (raster index on the grid).
``saliency.parquet``, one row per sample x method (order: samples, then methods as configured,
    then the ``<method>.<weighting>`` variants by weighting)
    sample_id, method, subset, correct, has_map, reason (why there is no map), alignment
    (in [0, 1]; null without a box or a map), nss, spearman (null without a human map or a
    map, or when undefined, e.g. a constant map), occ_pearson, occ_spearman (agreement with
    the occlusion map; null without it); with faithfulness enabled also
    ``del_<pct>`` / ``ins_<pct>`` for the configured fractions (``del_5`` = 5 % of the cells
    deleted; relative scores, 100 = unchanged), ``del_auc``, ``ins_auc`` (mean height of the
    sample's curve); null for samples that were not scored.
``curves.parquet`` (:data:`CURVES`), one row per method x kind x fraction
    method, kind ("deletion" | "insertion"), fraction, score_mean, score_std (population std
    over samples), n (samples).
``summary.parquet``, one row per method (Saliency-R1's faithfulness table + localisation)
    method, n_maps, n_faithfulness, alignment_mean, nss_mean, spearman_mean, occ_pearson_mean,
    occ_spearman_mean, the means of the
    ``del_*`` / ``ins_*`` columns, del_auc, ins_auc (null when nothing was defined).
``maps.parquet`` (:data:`lookright.saliency.storage.MAP_SCHEMA`)
    every method's maps of the first ``evaluate.gallery_samples`` samples, with the image
    size, question, completion and alignment (the report's heatmap gallery).
``metrics.json``
    flat and NaN-free: vqa_accuracy, ``vqa_accuracy/<subset>``, n_samples, n_correct,
    n_faithfulness_samples, per method ``<method>/alignment``, ``<method>/nss``,
    ``<method>/spearman``, ``<method>/occ_pearson``, ``<method>/occ_spearman``,
    ``<method>/del_5`` ..., ``<method>/del_auc``, ``<method>/ins_auc``, ``thought/location``,
    ``thought/shape``, ``thought/color``, ``thought/answer_follows`` (shares of the checked
    samples), ``thought/n_checked``, ``thought/cot_share``, each also per subset
    (``thought/color/bias_conflicting``; undefined values are left out), and
    the wall time of each phase.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from PIL import Image
from tqdm.auto import tqdm

from lookright.completion import final_answer
from lookright.config import ConfigError
from lookright.data.subsample import stratified_indices
from lookright.io import write_rows
from lookright.metrics.accuracy import accuracy_by_subset, exact_match
from lookright.metrics.agreement import map_agreement
from lookright.metrics.faithfulness import (
    auc,
    make_baseline,
    patch_mask,
    perturb_image,
    rank_patches,
    relative_score,
)
from lookright.metrics.human_alignment import MetricUndefinedWarning, nss, spearman
from lookright.metrics.localisation import alignment_score
from lookright.metrics.thought_faithfulness import (
    bottleneck_share,
    thought_summary_by_subset,
    thought_verdicts,
)
from lookright.models.geometry import ImageView
from lookright.saliency.storage import map_row, write_maps
from lookright.saliency.weighting import SIGNAL_METHOD, reweighted, signal_weights, variant_name
from lookright.stages.base import Stage
from lookright.stages.evaluation import (
    EvaluateConfig,
    EvaluateSection,
    FaithfulnessSection,
    validate,
)
from lookright.train.datasets import STAGE_ROLE, decode_image, load_subsample

if TYPE_CHECKING:  # torch, transformers and the saliency engine load when a model does
    import torch

    from lookright.models.base import VLMAdapter
    from lookright.saliency.base import SaliencyMethod
    from lookright.saliency.batch import SaliencyBatch, SampleTokens
    from lookright.saliency.types import SaliencyResult

KINDS = ("deletion", "insertion")
# per-sample map metrics of saliency.parquet, averaged into summary.parquet as <name>_mean
MAP_METRICS = ("alignment", "nss", "spearman", "occ_pearson", "occ_spearman")

PREDICTIONS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("subset", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("thought_location", pa.bool_()),
        pa.field("thought_shape", pa.bool_()),
        pa.field("thought_color", pa.bool_()),
        pa.field("answer_follows_thought", pa.bool_()),
        pa.field("cot_share", pa.float64()),
    ]
)
"""``predictions.parquet``: one row per evaluated VQA sample (see the module docstring)."""

TOKENS = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("index", pa.int32(), nullable=False),
        pa.field("position", pa.int32(), nullable=False),
        pa.field("token_id", pa.int64(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("segment", pa.string(), nullable=False),
        pa.field("visual_dependence", pa.float64(), nullable=False),
        pa.field("best_cell", pa.int32(), nullable=False),
    ]
)
"""``tokens.parquet``: each completion token's visual dependence (occlusion's best cell)."""

SALIENCY_BASE = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("subset", pa.string()),
    pa.field("correct", pa.bool_(), nullable=False),
    pa.field("has_map", pa.bool_(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("alignment", pa.float64()),
    pa.field("nss", pa.float64()),
    pa.field("spearman", pa.float64()),
    pa.field("occ_pearson", pa.float64()),
    pa.field("occ_spearman", pa.float64()),
]

CURVES = pa.schema(
    [
        pa.field("method", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("fraction", pa.float64(), nullable=False),
        pa.field("score_mean", pa.float64(), nullable=False),
        pa.field("score_std", pa.float64(), nullable=False),
        pa.field("n", pa.int32(), nullable=False),
    ]
)
"""``curves.parquet``: mean deletion / insertion curve of each method over the scored samples."""


# -- samples and answers ------------------------------------------------------------------


def load_vqa_samples(
    data_dir: str | Path, split: str, max_samples: int | None, seed: int = 0
) -> list[dict]:
    """The VQA samples of ``split`` with role ``eval``, at most ``max_samples``: a seeded
    subsample stratified by source and subset (:mod:`lookright.data.subsample`), so that a
    source with human maps (VQA-HAT) is scored even when it sorts after the others."""
    data_dir = Path(data_dir)
    for name in ("samples.parquet", "images.parquet"):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"--data {data_dir}: no {name} (not a prepare_data output)")
    role = STAGE_ROLE["evaluate"]
    rows = load_subsample(data_dir, split, ["vqa"], [role], max_samples, seed).to_pylist()
    if not rows:
        raise ConfigError(
            f"evaluate.split={split!r}: no VQA samples (task 'vqa', role {role!r}) of that "
            f"split in {data_dir / 'samples.parquet'}"
        )
    return rows


def prediction_rows(rows: Sequence[dict], completions: Sequence[str]) -> list[dict[str, Any]]:
    """``predictions.parquet`` rows: answer after the last ``</think>``, exact-match correct,
    and the thought's verdicts on shapes samples (:mod:`lookright.metrics.thought_faithfulness`)."""
    return [
        {
            "sample_id": r["sample_id"],
            "image_id": r["image_id"],
            "subset": r["subset"],
            "question": r["question"],
            "reference": r["answer"],
            "completion": c,
            "answer": final_answer(c),
            "correct": exact_match(c, r["answer"]),
            **thought_verdicts(r.get("cot") if r.get("source") == "shapes" else None, c),
            "cot_share": None,  # set from the maps (explain_samples)
        }
        for r, c in zip(rows, completions, strict=True)
    ]


def accuracy_metrics(predictions: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``vqa_accuracy`` and ``vqa_accuracy/<subset>`` (non-null subsets) of the predictions."""
    groups = accuracy_by_subset(predictions, prediction_key="completion", reference_key="reference")
    metrics = {"vqa_accuracy": float(groups.pop("overall")["accuracy"])}
    for subset, values in groups.items():
        metrics[f"vqa_accuracy/{subset}"] = float(values["accuracy"])
    return metrics


# -- saliency maps and their localisation -------------------------------------------------


@dataclass
class SampleMaps:
    """The response-level maps of one sample (``None`` = no map) by evaluated name (methods and
    their ``<method>.<weighting>`` variants), why a map is missing, the part of the image the
    maps' grid covers (the processor's crop/pad), each completion token's visual dependence
    (``tokens.parquet`` rows, when occlusion ran) and the CoT bottleneck's share."""

    maps: dict[str, np.ndarray | None]
    reasons: dict[str, str | None]
    results: dict[str, SaliencyResult] | None = None  # full results, gallery samples only
    view: ImageView | None = None
    tokens: list[dict[str, Any]] = field(default_factory=list)
    cot_share: float | None = None


def _methods(names: Sequence[str], seed: int, e: EvaluateSection | None = None) -> list[Any]:
    """Method instances; ``random`` seeded per batch start so maps do not depend on batching;
    ``occlusion`` with the deletion metric's baseline and ``evaluate.occlusion``."""
    from lookright.saliency.api import get_method

    out = []
    for name in names:
        if name == "random":
            out.append(get_method(name, seed=seed))
        elif name == "occlusion" and e is not None:
            f = e.faithfulness
            out.append(
                get_method(
                    name,
                    baseline=f.baseline,
                    blur_radius=f.blur_radius,
                    cell_size=e.occlusion.cell_size,
                    batch_size=e.batch_size,
                )
            )
        else:
            out.append(get_method(name))
    return out


def evaluated_names(methods: Sequence[str], weightings: Sequence[str]) -> list[str]:
    """The rows of ``saliency.parquet`` per sample: every method (uniform weighting), then
    ``<method>.<weighting>`` of every per-token method for each other weighting."""
    names = list(methods) if "uniform" in weightings else []
    for weighting in weightings:
        if weighting != "uniform":
            names += [variant_name(m, weighting) for m in methods if _per_token(m)]
    return names


def _per_token(name: str) -> bool:
    """Whether a registry method has token maps to reweight (all but the random map)."""
    from lookright.saliency.base import METHODS, DirectMethod

    return not issubclass(METHODS[name], DirectMethod)


def _variants(
    instances: Sequence[SaliencyMethod],
    per: Mapping[str, SaliencyResult],
    sample: SampleTokens,
    weightings: Sequence[str],
) -> dict[str, SaliencyResult]:
    """``{<method>.<weighting>: result}`` of the non-uniform weightings."""
    out = {}
    for weighting in weightings:
        if weighting == "uniform":
            continue
        signal = None
        if weighting in SIGNAL_METHOD:
            signal = signal_weights(weighting, per.get(SIGNAL_METHOD[weighting]))
        for method in instances:
            if _per_token(method.name):
                result = reweighted(method, per[method.name], weighting, sample, signal)
                out[result.method] = result
    return out


def token_rows(
    sample_id: str, occlusion: SaliencyResult | None, sample: SampleTokens, tokenizer: Any
) -> list[dict[str, Any]]:
    """``tokens.parquet`` rows of one sample: each completion token's occlusion dependence."""
    if occlusion is None or occlusion.token_scores is None:
        return []
    thought, answer = set(sample.thought or []), set(sample.answer or [])
    best = occlusion.extras.get("best_cell", [])
    rows = []
    for k, (position, token_id) in enumerate(
        zip(occlusion.token_positions, occlusion.token_ids, strict=True)
    ):
        segment = "thought" if position in thought else "answer" if position in answer else "other"
        rows.append(
            {
                "sample_id": sample_id,
                "index": k,
                "position": int(position),
                "token_id": int(token_id),
                "token": tokenizer.decode([int(token_id)], skip_special_tokens=False),
                "segment": segment,
                "visual_dependence": float(occlusion.token_scores[k]),
                "best_cell": int(best[k]) if k < len(best) else -1,
            }
        )
    return rows


def cot_share_of(per: Mapping[str, SaliencyResult], sample: SampleTokens) -> float | None:
    """The CoT bottleneck's share of the answer's saliency (needs ``cot_bottleneck`` and
    ``logit_decomposition``; :func:`lookright.metrics.thought_faithfulness.bottleneck_share`)."""
    bottleneck, direct = per.get("cot_bottleneck"), per.get("logit_decomposition")
    if bottleneck is None or direct is None or direct.token_maps is None or not sample.answer:
        return None
    if sample.cot_reason is not None:
        return None
    answer = set(sample.answer)
    keep = [k for k, p in enumerate(direct.token_positions) if p in answer]
    through = bottleneck.response_map if bottleneck.has_map else np.zeros(sample.grid)
    direct_map = np.maximum(direct.token_maps[keep].sum(axis=0), 0.0)
    return bottleneck_share(through, direct_map)


def _sample_maps(
    per: Mapping[str, SaliencyResult],
    batch: SaliencyBatch,
    b: int,
    sample_id: str,
    keep: bool,
    tokenizer: Any,
    variants: Mapping[str, SaliencyResult],
) -> SampleMaps:
    everything = {**per, **variants}
    return SampleMaps(
        maps={m: r.response_map if r.has_map else None for m, r in everything.items()},
        reasons={m: None if r.has_map else (r.reason or "no map") for m, r in everything.items()},
        results=dict(per) if keep else None,
        view=batch.views[b],
        tokens=token_rows(sample_id, per.get("occlusion"), batch.samples[b], tokenizer),
        cot_share=cot_share_of(per, batch.samples[b]),
    )


def explain_samples(
    model: torch.nn.Module,
    processor: Any,
    adapter: VLMAdapter,
    rows: Sequence[dict],
    images: Sequence[Image.Image],
    completions: Sequence[str],
    methods: Sequence[str],
    *,
    batch_size: int,
    seed: int = 0,
    keep_results: int = 0,
    evaluate: EvaluateSection | None = None,
    occluded: Collection[int] | None = None,
) -> list[SampleMaps]:
    """Maps of every method for every sample, teacher-forcing ``completions`` in batches.

    The ``random`` map of sample ``k`` is seeded with ``seed + k`` whatever the batch size;
    the full :class:`SaliencyResult` (token maps, ...) is kept for the first ``keep_results``.
    With ``evaluate`` (the stage's section), occlusion follows its options and every
    non-uniform ``evaluate.token_weightings`` adds the ``<method>.<weighting>`` maps.
    Occlusion runs on the samples (indices into ``rows``) of ``occluded`` only (None = all);
    the others get "no map" from it.
    """
    from lookright.saliency.api import run_methods
    from lookright.saliency.batch import prepare_batch
    from lookright.saliency.occlusion import Occlusion

    weightings = evaluate.token_weightings if evaluate is not None else ["uniform"]
    occluded = set(range(len(rows))) if occluded is None else set(occluded)
    out: list[SampleMaps] = []
    for start in tqdm(range(0, len(rows), batch_size), desc="saliency", leave=False):
        end = min(start + batch_size, len(rows))
        batch = prepare_batch(
            model,
            processor,
            adapter,
            list(images[start:end]),
            [r["question"] for r in rows[start:end]],
            list(completions[start:end]),
        )
        batch.to(next(model.parameters()).device)
        instances = _methods(methods, seed + start, evaluate)
        shared = [m for m in instances if not isinstance(m, Occlusion)]
        results = run_methods(model, adapter, batch, shared)
        for method in instances:
            if isinstance(method, Occlusion):
                only = {b for b in range(end - start) if start + b in occluded}
                results[method.name] = method.explain(model, adapter, batch, only=only)
                for result, view in zip(results[method.name], batch.views, strict=True):
                    result.view = view
        for b in range(end - start):
            per = {m: results[m][b] for m in methods}
            variants = _variants(instances, per, batch.samples[b], weightings)
            keep = start + b < keep_results
            sample_id = str(rows[start + b].get("sample_id", start + b))
            out.append(_sample_maps(per, batch, b, sample_id, keep, processor.tokenizer, variants))
    return out


def human_map(row: Mapping[str, Any]) -> np.ndarray | None:
    """The sample's human-attention map as ``(human_map_height, human_map_width)``, or None."""
    values, h, w = row.get("human_map"), row.get("human_map_height"), row.get("human_map_width")
    if values is None or not h or not w:
        return None
    return np.asarray(values, dtype=np.float64).reshape(int(h), int(w))


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def map_metrics(
    saliency_map: np.ndarray | None,
    row: Mapping[str, Any],
    image_size: tuple[int, int],
    percentile: float,
    view: ImageView | None = None,
) -> dict[str, float | None]:
    """Alignment (Saliency-R1, with the sample's boxes) and NSS / Spearman (GLIMPSE).

    ``view`` is the part of the image the map's grid covers (the processor's crop/pad): boxes
    and the human map are compared with the tokens that saw them. The map is compared with
    the human map on the human map's grid (laid on the image and resized bilinearly by
    :mod:`lookright.metrics.human_alignment`). Undefined values (no map, no box, no human map,
    a constant map) are ``None``.
    """
    if saliency_map is None:
        return {"alignment": None, "nss": None, "spearman": None}
    boxes = row.get("boxes") or []
    alignment = alignment_score(saliency_map, boxes, image_size, view) if boxes else None
    human = human_map(row)
    if human is None:
        return {"alignment": alignment, "nss": None, "spearman": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricUndefinedWarning)
        return {
            "alignment": alignment,
            "nss": _finite(nss(saliency_map, human, percentile, view)),
            "spearman": _finite(spearman(saliency_map, human, view)),
        }


# -- deletion / insertion faithfulness ----------------------------------------------------


def curve_fractions(f: FaithfulnessSection) -> list[float]:
    """``{0, 1/steps, ..., 1} U deletion_fractions U insertion_fractions``, sorted."""
    grid = [k / f.curve_steps for k in range(f.curve_steps + 1)]
    values = {round(float(v), 9) for v in [*grid, *f.deletion_fractions, *f.insertion_fractions]}
    return sorted(values)


def fraction_column(kind: str, fraction: float) -> str:
    """``del_5`` for a 5 % deletion, ``ins_30`` for a 30 % insertion."""
    return f"{'del' if kind == 'deletion' else 'ins'}_{round(fraction * 100, 6):g}"


def faithfulness_columns(f: FaithfulnessSection) -> list[str]:
    """The per-fraction columns of ``saliency.parquet`` / ``summary.parquet`` + the two AUCs."""
    columns = [fraction_column("deletion", v) for v in sorted(set(f.deletion_fractions))]
    columns += [fraction_column("insertion", v) for v in sorted(set(f.insertion_fractions))]
    return [*dict.fromkeys(columns), "del_auc", "ins_auc"]


def completion_logprobs(
    model: torch.nn.Module,
    processor: Any,
    adapter: VLMAdapter,
    images: Sequence[Image.Image],
    question: str,
    completion: str,
) -> list[float]:
    """Mean log-prob of ``completion``'s tokens (teacher-forced) after each image, one forward.

    All images share the question and the completion; the end-of-turn token is not scored.
    Logits are computed only at the rows predicting the completion (the unembedding of a real
    model's vocabulary at every position of a batch would not fit in memory).
    """
    import torch

    with torch.no_grad():
        n = len(images)
        encoded = adapter.encode(
            processor, list(images), [question] * n, [completion] * n, add_eos=False
        )
        inputs = encoded.inputs.to(next(model.parameters()).device)
        hidden = model.model(**inputs, use_cache=False).last_hidden_state
        head = adapter.lm_head(model)
        out = []
        for b in range(n):
            start, end = encoded.completion_span(b)
            if end <= start:
                out.append(math.nan)
                continue
            logits = head(hidden[b, start - 1 : end - 1]).float()
            targets = inputs["input_ids"][b, start:end]
            logp = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
            out.append(float(logp.mean()))
        return out


def score_faithfulness(
    model: torch.nn.Module,
    processor: Any,
    adapter: VLMAdapter,
    image: Image.Image,
    question: str,
    completion: str,
    maps: Mapping[str, np.ndarray | None],
    f: FaithfulnessSection,
    *,
    batch_size: int,
    view: ImageView | None = None,
) -> dict[str, dict[str, dict[float, float]]]:
    """Deletion / insertion scores of one sample: ``{method: {kind: {fraction: score}}}``.

    Saliency-R1's protocol (:mod:`lookright.metrics.faithfulness`): rank the map's cells, replace
    the top ``k`` % by the baseline (deletion) or restore them on the baseline (insertion);
    score = ``100 * exp(mean logp | perturbed - mean logp | original)``.

    The log-prob is that of the model's WHOLE completion (thought + answer), teacher-forced,
    not of the answer tokens alone: with the thought teacher-forced, the short answer is
    predicted from the thought's text ("... It is red.</think>red") almost regardless of the
    image, so an answer-only score barely moves under any perturbation.

    Every perturbed image is "the original's pixels on the cells of a keep mask, the
    baseline's elsewhere" (deletion keeps the complement of the top cells, insertion the top
    cells), so images are identified by their keep mask: identical images (fraction 0 of
    deletion = the original, fraction 1 of deletion = the baseline = fraction 0 of insertion,
    ...) are scored once, and unique ones in batches of ``batch_size`` forwards. Deletion at
    0 % and insertion at 100 % are the original itself: exactly 100. ``view`` maps the cells to
    the pixels the processor kept (:mod:`lookright.metrics.faithfulness`).
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    base = make_baseline(pixels, f.baseline, f.blur_radius)
    fractions = curve_fractions(f)
    jobs: list[tuple[str, str, float, bytes]] = []
    masks: dict[bytes, np.ndarray] = {}
    for method, saliency_map in maps.items():
        if saliency_map is None:
            continue
        ranked = rank_patches(saliency_map)
        full = np.ones(saliency_map.shape, dtype=bool)
        masks.setdefault(full.tobytes(), full)
        for fraction in fractions:
            top = patch_mask(saliency_map.shape, ranked, fraction)
            for kind, keep in (("deletion", ~top), ("insertion", top)):
                key = keep.tobytes()
                masks.setdefault(key, keep)
                jobs.append((method, kind, fraction, key))
    if not jobs:
        return {}
    keys = list(masks)
    logp: dict[bytes, float] = {}
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        images = [Image.fromarray(perturb_image(base, masks[k], pixels, view)) for k in chunk]
        values = completion_logprobs(model, processor, adapter, images, question, completion)
        logp.update(zip(chunk, values, strict=True))
    original = logp[next(iter(masks))]
    scores: dict[str, dict[str, dict[float, float]]] = {}
    for method, kind, fraction, key in jobs:
        scores.setdefault(method, {}).setdefault(kind, {})[fraction] = relative_score(
            logp[key], original
        )
    return scores


def faithfulness_values(
    scores: Mapping[str, Mapping[float, float]], f: FaithfulnessSection
) -> dict[str, float]:
    """One sample x method's ``saliency.parquet`` columns from its two curves."""
    values = {}
    for kind, fractions in (
        ("deletion", f.deletion_fractions),
        ("insertion", f.insertion_fractions),
    ):
        curve_points = scores[kind]
        for fraction in fractions:
            values[fraction_column(kind, fraction)] = curve_points[round(float(fraction), 9)]
        x = sorted(curve_points)
        values[f"{kind[:3]}_auc"] = auc(x, [curve_points[v] for v in x])
    return values


# -- tables and metrics -------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def saliency_schema(columns: Sequence[str]) -> pa.Schema:
    """``saliency.parquet``'s schema: the base columns + the faithfulness ``columns``."""
    return pa.schema([*SALIENCY_BASE, *(pa.field(c, pa.float64()) for c in columns)])


def summary_schema(columns: Sequence[str]) -> pa.Schema:
    """``summary.parquet``'s schema (one row per method)."""
    fields = [
        pa.field("method", pa.string(), nullable=False),
        pa.field("n_maps", pa.int32(), nullable=False),
        pa.field("n_faithfulness", pa.int32(), nullable=False),
    ]
    names = [f"{m}_mean" for m in MAP_METRICS] + list(columns)
    return pa.schema([*fields, *(pa.field(n, pa.float64()) for n in names)])


def curve_rows(
    faithfulness: Mapping[str, Mapping[str, Mapping[str, Mapping[float, float]]]],
    methods: Sequence[str],
) -> list[dict[str, Any]]:
    """``curves.parquet`` rows from ``{sample_id: {method: {kind: {fraction: score}}}}``."""
    rows = []
    for method in methods:
        for kind in KINDS:
            points: dict[float, list[float]] = {}
            for per_sample in faithfulness.values():
                for fraction, score in per_sample.get(method, {}).get(kind, {}).items():
                    points.setdefault(fraction, []).append(score)
            for fraction in sorted(points):
                values = np.asarray(points[fraction], dtype=np.float64)
                rows.append(
                    {
                        "method": method,
                        "kind": kind,
                        "fraction": fraction,
                        "score_mean": float(values.mean()),
                        "score_std": float(values.std()),
                        "n": len(values),
                    }
                )
    return rows


def summary_rows(
    saliency: Sequence[Mapping[str, Any]], methods: Sequence[str], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per method: counts and the means of ``saliency.parquet``'s metric columns."""
    rows = []
    for method in methods:
        mine = [r for r in saliency if r["method"] == method]
        row: dict[str, Any] = {
            "method": method,
            "n_maps": sum(r["has_map"] for r in mine),
            "n_faithfulness": sum(r.get("del_auc") is not None for r in mine),
        }
        for name in MAP_METRICS:
            row[f"{name}_mean"] = _mean(r[name] for r in mine)
        for name in columns:
            row[name] = _mean(r.get(name) for r in mine)
        rows.append(row)
    return rows


def method_metrics(
    summary: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> dict[str, float]:
    """``<method>/alignment``, ``<method>/nss``, ... of the summary rows; undefined ones dropped."""
    metrics = {}
    for row in summary:
        for name in MAP_METRICS:
            metrics[f"{row['method']}/{name}"] = row[f"{name}_mean"]
        for name in columns:
            metrics[f"{row['method']}/{name}"] = row[name]
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


# -- the stage ----------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load(model_dir: str | Path, device: str) -> Any:
    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"--model-dir {model_dir}: no config.json (not a checkpoint)")
    from lookright.models.base import load_model

    loaded = load_model(model_dir, device=_device(device))
    loaded.model.eval()
    return loaded


def correct_subsample(
    rows: Sequence[dict], predictions: Sequence[Mapping[str, Any]], n: int | None, seed: int
) -> list[int]:
    """Indices of at most ``n`` correctly answered samples, stratified by source and subset
    (deletion / insertion and occlusion score the model's log-prob of a RIGHT completion)."""
    correct = [k for k, p in enumerate(predictions) if p["correct"]]
    picked = stratified_indices([rows[k] for k in correct], n, seed)
    return sorted(correct[i] for i in picked)


def _faithfulness(
    loaded: Any,
    cfg: EvaluateConfig,
    rows: Sequence[dict],
    images: Sequence[Image.Image],
    predictions: Sequence[Mapping[str, Any]],
    explained: Sequence[SampleMaps],
) -> dict[str, dict[str, dict[str, dict[float, float]]]]:
    """``{sample_id: {method: {kind: {fraction: score}}}}`` of the first correct samples."""
    e = cfg.evaluate
    f = e.faithfulness
    if not f.enabled:
        return {}
    chosen = correct_subsample(rows, predictions, f.max_samples, cfg.seed)
    names = evaluated_names(e.methods, e.token_weightings if f.variants else ["uniform"])
    names = [n for n in names if n in evaluated_names(e.methods, e.token_weightings)]
    out = {}
    for k in tqdm(chosen, desc="faithfulness", leave=False):
        out[rows[k]["sample_id"]] = score_faithfulness(
            loaded.model,
            loaded.processor,
            loaded.adapter,
            images[k],
            rows[k]["question"],
            predictions[k]["completion"],
            {n: explained[k].maps[n] for n in names},
            f,
            batch_size=e.batch_size,
            view=explained[k].view,
        )
    return out


def _saliency_rows(
    cfg: EvaluateConfig,
    rows: Sequence[dict],
    images: Sequence[Image.Image],
    predictions: Sequence[Mapping[str, Any]],
    explained: Sequence[SampleMaps],
    faithfulness: Mapping[str, Mapping[str, Mapping[str, Mapping[float, float]]]],
) -> list[dict[str, Any]]:
    e = cfg.evaluate
    out = []
    for row, image, prediction, sample in zip(rows, images, predictions, explained, strict=True):
        reference = sample.maps.get("occlusion")
        for method in evaluated_names(e.methods, e.token_weightings):
            agreement = map_agreement(sample.maps[method], reference)
            record = {
                "sample_id": row["sample_id"],
                "method": method,
                "subset": row["subset"],
                "correct": prediction["correct"],
                "has_map": sample.maps[method] is not None,
                "reason": sample.reasons[method],
                **map_metrics(sample.maps[method], row, image.size, e.nss_percentile, sample.view),
                "occ_pearson": agreement["pearson"],
                "occ_spearman": agreement["spearman"],
            }
            scores = faithfulness.get(row["sample_id"], {}).get(method)
            if scores:
                record.update(faithfulness_values(scores, e.faithfulness))
            out.append(record)
    return out


def _gallery_rows(
    rows: Sequence[dict],
    images: Sequence[Image.Image],
    predictions: Sequence[Mapping[str, Any]],
    explained: Sequence[SampleMaps],
    saliency: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    alignment = {(r["sample_id"], r["method"]): r["alignment"] for r in saliency}
    out = []
    for row, image, prediction, sample in zip(rows, images, predictions, explained, strict=True):
        for method, result in (sample.results or {}).items():
            out.append(
                map_row(
                    result,
                    row["sample_id"],
                    image.size,
                    row["question"],
                    prediction["completion"],
                    alignment.get((row["sample_id"], method)),
                )
            )
    return out


def run_evaluate_saliency(
    cfg: EvaluateConfig,
    model_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    run: Any = None,
) -> dict[str, float]:
    """Evaluate one model (see the module docstring); returns the metrics of ``metrics.json``."""
    import torch

    from lookright.train.common import greedy_answers

    validate(cfg)
    e = cfg.evaluate
    out_dir = Path(out_dir)
    rows = load_vqa_samples(data_dir, e.split, e.max_samples, cfg.seed)
    loaded = _load(model_dir, e.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    images = [decode_image(r["image_bytes"]) for r in rows]
    timings: dict[str, float] = {}

    started = time.perf_counter()
    completions = greedy_answers(
        loaded.model,
        loaded.processor,
        loaded.adapter,
        rows,
        max_new_tokens=e.max_new_tokens,
        batch_size=e.batch_size,
        desc="generate",
    )
    predictions = prediction_rows(rows, completions)
    timings["generate_time_s"] = time.perf_counter() - started

    started = time.perf_counter()
    explained = explain_samples(
        loaded.model,
        loaded.processor,
        loaded.adapter,
        rows,
        images,
        completions,
        e.methods,
        batch_size=e.batch_size,
        seed=cfg.seed,
        keep_results=e.gallery_samples,
        evaluate=e,
        occluded=correct_subsample(rows, predictions, e.occlusion.max_samples, cfg.seed),
    )
    for prediction, sample in zip(predictions, explained, strict=True):
        prediction["cot_share"] = sample.cot_share
    timings["saliency_time_s"] = time.perf_counter() - started

    started = time.perf_counter()
    faithfulness = _faithfulness(loaded, cfg, rows, images, predictions, explained)
    timings["faithfulness_time_s"] = time.perf_counter() - started

    columns = faithfulness_columns(e.faithfulness) if e.faithfulness.enabled else []
    saliency = _saliency_rows(cfg, rows, images, predictions, explained, faithfulness)
    names = evaluated_names(e.methods, e.token_weightings)
    summary = summary_rows(saliency, names, columns)
    write_rows(predictions, PREDICTIONS, out_dir / "predictions.parquet")
    write_rows(saliency, saliency_schema(columns), out_dir / "saliency.parquet")
    write_rows(curve_rows(faithfulness, names), CURVES, out_dir / "curves.parquet")
    write_rows(
        [t for sample in explained for t in sample.tokens], TOKENS, out_dir / "tokens.parquet"
    )
    write_rows(summary, summary_schema(columns), out_dir / "summary.parquet")
    write_maps(
        _gallery_rows(rows, images, predictions, explained, saliency), out_dir / "maps.parquet"
    )

    metrics = {
        **accuracy_metrics(predictions),
        "n_samples": float(len(rows)),
        "n_correct": float(sum(p["correct"] for p in predictions)),
        "n_faithfulness_samples": float(len(faithfulness)),
        **thought_summary_by_subset(predictions),
        **method_metrics(summary, columns),
        **timings,
    }
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if run is not None:
        run.log_metrics(metrics)
        run.set_tags({"lookright.model_dir": str(model_dir)})
    return metrics


# -- CLI ----------------------------------------------------------------------------------

OUTPUTS = (
    "predictions.parquet",
    "tokens.parquet",
    "saliency.parquet",
    "curves.parquet",
    "summary.parquet",
    "maps.parquet",
    "metrics.json",
)


class EvaluateSaliency(Stage):
    name: ClassVar[str] = "evaluate_saliency"
    help: ClassVar[str] = "accuracy, saliency maps, alignment, human alignment, faithfulness"
    input_context: ClassVar[str] = "evaluation"
    outputs: ClassVar[tuple[str, ...]] = OUTPUTS

    def config_class(self) -> type:
        return EvaluateConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--model-dir", required=True, type=Path, help="checkpoint folder with config.json"
        )
        parser.add_argument("--data", required=True, type=Path, help="prepare_data output folder")

    def check(self, cfg: Any, args: argparse.Namespace) -> None:
        validate(cfg)
        if not (Path(args.model_dir) / "config.json").is_file():
            raise FileNotFoundError(
                f"--model-dir {args.model_dir}: no config.json (not a checkpoint)"
            )

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        started = time.perf_counter()
        metrics = run_evaluate_saliency(cfg, args.model_dir, args.data, args.out, run)
        return {
            **metrics,
            "wall_s": time.perf_counter() - started,
            "n_methods": len(evaluated_names(cfg.evaluate.methods, cfg.evaluate.token_weightings)),
        }

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return (
            f"evaluate_saliency: {int(result['n_samples'])} samples, VQA accuracy "
            f"{result.get('vqa_accuracy', math.nan):.3f}, {result['n_methods']} methods, "
            f"{int(result['n_faithfulness_samples'])} faithfulness samples "
            f"({result['wall_s']:.1f} s) -> {args.out}"
        )


STAGE = EvaluateSaliency()
