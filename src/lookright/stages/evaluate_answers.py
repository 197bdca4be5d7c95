"""The ``evaluate_answers`` stage: POPE, CHAIR and latency of one model x decode strategy.

    lookright evaluate-answers --answers results/decode/<model>/<base>/<strategy>/answers.parquet \\
        --data results/data --out results/evaluate_answers/<model>/<base>/<strategy> \\
        [--config-json '{"evaluate": {"chair": {...}}, "model": {...}, "seed": 0}'] \\
        [--param strategy=<strategy> --param model=<model>]

Pure metrics, no model: reads the ``decode`` stage's ``answers.parquet`` (schema ``DECODED``
in :mod:`lookright.stages.decode`; its ``answer`` column, the text after the last
``</think>``, is what is scored) and the ground-truth objects of the caption samples in
``prepare_data``'s ``samples.parquet`` (``objects`` and the vocabulary they are named in,
``object_vocabulary``), and writes into ``--out`` (all Parquet written atomically):

``pope.parquet`` (``POPE_TABLE``), one row per split: random, popular, adversarial (those
present), ``average`` (unweighted mean of the split metrics, as papers report it) and ``all``
(every POPE row pooled)
    model, strategy, split, accuracy, precision, recall, f1, yes_ratio, n,
    tp, fp, tn, fn (confusion counts; null for ``average``)

``chair.parquet`` (``CHAIR_TABLE``), one row
    model, strategy, vocabulary, chair_s, chair_i, recall, mean_length, n_captions,
    n_hallucinated_captions, n_mentions, n_hallucinated_mentions, n_gt_objects, n_covered,
    n_reference_mentions (object mentions in the reference captions), note (why a value is
    null, else null)

``captions.parquet`` (``CAPTIONS_TABLE``), one row per caption
    model, strategy, sample_id, image_id, caption, mentioned (classes, unique, in order),
    hallucinated (mentioned classes not in the image), gt_objects (the image's ground-truth
    classes in the vocabulary), n_mentions, n_hallucinated_mentions (every mention), n_words

``metrics.json`` (flat; also the MLflow metrics)
    pope/<split>/<accuracy|precision|recall|f1|yes_ratio|n> for each split of pope.parquet,
    n_pope, chair_s, chair_i, chair_recall, caption_mean_length, n_captions, chair_n_mentions,
    chair_n_reference_mentions, time_per_sample_s/<task>, tokens_per_s/<task>

Definitions (docs/methods.md#pope, #chair): POPE (Li et al. 2023) parses each answer with
:func:`lookright.metrics.pope.parse_yes_no` and reports accuracy, precision, recall, F1 with
"yes" as the positive class and the yes-ratio of the predictions; CHAIR (Rohrbach et al.
2018) is CHAIRs = captions with >= 1 hallucinated object / captions and CHAIRi =
hallucinated object mentions / object mentions (:func:`lookright.metrics.chair.chair_metrics`).
The vocabulary follows the data (``evaluate.chair.vocabulary: auto``): COCO's 80 classes for
captions read by the coco reader, the shapes vocabulary for the synthetic data; an explicit
vocabulary that contradicts the data is a :class:`ConfigError`. CHAIR that finds no object
mention in any REFERENCE caption fails (the vocabulary cannot match the data); when the
model's captions mention no object, CHAIRs, CHAIRi and recall are null (not 0) with a
``note``, and left out of metrics.json. A task absent from the answers is warned about, its
tables are written empty and its metrics are left out of metrics.json.
Latency: ``time_s`` is the decode batch's wall time divided by its size, so the mean over
a task is seconds per sample and ``sum(n_tokens) / sum(time_s)`` its tokens per second.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from lookright.config import ConfigError
from lookright.io import SchemaError, write_rows
from lookright.metrics.chair import (
    SHAPES_VOCABULARY,
    ChairVocabulary,
    Singulariser,
    _parse_synonyms,
    chair_caption,
    chair_metrics,
    coco_vocabulary,
    extract_mentions,
    extract_objects,
    get_singulariser,
)
from lookright.metrics.pope import POPE_METRICS, parse_yes_no, pope_by_split, pope_metrics
from lookright.stages.base import Stage, data_inputs
from lookright.stages.evaluation import EvaluateConfig, validate_chair

__all__ = [
    "ANSWER_COLUMNS",
    "CAPTIONS_TABLE",
    "CHAIR_TABLE",
    "POPE_TABLE",
    "build_vocabulary",
    "chair_row",
    "data_vocabulary",
    "latency_metrics",
    "load_answers",
    "load_ground_truth",
    "read_synonyms_file",
    "run_evaluate_answers",
]

ANSWER_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "image_id",
    "task",
    "pope_split",
    "reference",
    "strategy",
    "model",
    "answer",
    "n_tokens",
    "time_s",
)
"""Columns of ``answers.parquet`` this stage reads (a subset of ``DECODED``)."""
GROUND_TRUTH_COLUMNS: tuple[str, ...] = ("sample_id", "objects", "object_vocabulary")
"""Columns of ``samples.parquet`` this stage reads (CHAIR's ground truth)."""

_RUN = [pa.field("model", pa.string()), pa.field("strategy", pa.string())]
_COUNTS = [pa.field(name, pa.int64()) for name in ("tp", "fp", "tn", "fn")]
POPE_TABLE = pa.schema(
    [
        *_RUN,
        pa.field("split", pa.string(), nullable=False),
        *[pa.field(name, pa.float64()) for name in POPE_METRICS],
        pa.field("n", pa.int64(), nullable=False),
        *_COUNTS,
    ]
)
CHAIR_TABLE = pa.schema(
    [
        *_RUN,
        pa.field("vocabulary", pa.string(), nullable=False),
        *[pa.field(n, pa.float64()) for n in ("chair_s", "chair_i", "recall", "mean_length")],
        *[
            pa.field(name, pa.int64(), nullable=False)
            for name in (
                "n_captions",
                "n_hallucinated_captions",
                "n_mentions",
                "n_hallucinated_mentions",
                "n_gt_objects",
                "n_covered",
                "n_reference_mentions",
            )
        ],
        pa.field("note", pa.string()),
    ]
)
CAPTIONS_TABLE = pa.schema(
    [
        *_RUN,
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("mentioned", pa.list_(pa.string()), nullable=False),
        pa.field("hallucinated", pa.list_(pa.string()), nullable=False),
        pa.field("gt_objects", pa.list_(pa.string()), nullable=False),
        pa.field("n_mentions", pa.int64(), nullable=False),
        pa.field("n_hallucinated_mentions", pa.int64(), nullable=False),
        pa.field("n_words", pa.int64(), nullable=False),
    ]
)

# -- inputs -----------------------------------------------------------------------------------


def _read_columns(path: str | Path, columns: Sequence[str], what: str) -> list[dict[str, Any]]:
    """Rows of ``columns`` of a Parquet file; errors name the file and the missing columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as error:
        raise SchemaError(f"{what} {path}: not a readable Parquet file ({error})") from error
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(
            f"{what} {path}: missing column(s) {missing}; needs columns {list(columns)}"
        )
    return pq.read_table(path, columns=list(columns)).to_pylist()


def load_answers(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``decode`` stage's ``answers.parquet`` (the columns in ANSWER_COLUMNS)."""
    return _read_columns(path, ANSWER_COLUMNS, "answers")


@dataclass(frozen=True)
class GroundTruth:
    """A caption sample's ground-truth object names and the vocabulary they are named in."""

    objects: list[str]
    vocabulary: str | None


def load_ground_truth(data_dir: str | Path) -> dict[str, GroundTruth]:
    """``{sample_id: GroundTruth}`` of the caption samples of ``<data_dir>/samples.parquet``."""
    path = Path(data_dir) / "samples.parquet"
    rows = _read_columns(path, (*GROUND_TRUTH_COLUMNS, "task"), "samples")
    return {
        r["sample_id"]: GroundTruth(list(r["objects"] or []), r["object_vocabulary"])
        for r in rows
        if r["task"] == "caption"
    }


# -- vocabulary -------------------------------------------------------------------------------


def read_synonyms_file(path: str | Path) -> dict[str, list[str]]:
    """``{class: [synonym, ...]}`` from a synonyms file.

    One class per line, either in the original CHAIR ``synonyms.txt`` form
    ``name, synonym, synonym`` or in lookright's ``name: synonym, synonym`` form (the form
    of :func:`lookright.metrics.chair.coco_vocabulary`'s list); lines of one class are merged,
    blank lines and ``#`` comments are skipped.
    """
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            name, _, rest = line.partition(",")
            line = f"{name}: {rest}"
        lines.append(line)
    if not lines:
        raise ConfigError(f"evaluate.chair.synonyms_file {path}: no classes in the file")
    return _parse_synonyms("\n".join(lines))


def _resynonymise(vocab: ChairVocabulary, singulariser: Singulariser) -> ChairVocabulary:
    """``vocab`` rebuilt with another singulariser (its phrases are singular already)."""
    synonyms: dict[str, list[str]] = {name: [] for name in vocab.classes}
    ignore = []
    for key, target in vocab.phrases.items():
        if target is None:
            ignore.append(" ".join(key))
        else:
            synonyms[target].append(" ".join(key))
    return ChairVocabulary.from_synonyms(
        synonyms, ignore=ignore, suppress=vocab.suppress, singulariser=singulariser
    )


def data_vocabulary(vocabularies: Sequence[str | None]) -> str:
    """The one object vocabulary the captions' ground truth is named in.

    Raises :class:`ConfigError` when the captions carry no object annotation (CHAIR would
    count every mention as hallucinated) or mix vocabularies.
    """
    names = sorted({v for v in vocabularies if v is not None})
    if not names:
        raise ConfigError(
            "CHAIR: the caption samples carry no object annotation (object_vocabulary is "
            "null): read the captions with the coco reader and its instances_json"
        )
    if len(names) > 1:
        raise ConfigError(f"CHAIR: the caption samples mix object vocabularies {names}")
    return names[0]


def build_vocabulary(cfg: EvaluateConfig, data: str | None = None) -> tuple[ChairVocabulary, str]:
    """The CHAIR vocabulary and its name (for the chair table).

    ``synonyms_file`` (when set) replaces the vocabulary; otherwise ``vocabulary: auto``
    takes ``data`` (the captions' object vocabulary, :func:`data_vocabulary`) and an explicit
    ``shapes`` / ``coco`` must agree with it. ``singulariser`` is applied to the vocabulary's
    phrases and the captions alike.
    """
    chair = cfg.evaluate.chair
    try:
        singulariser = get_singulariser(chair.singulariser)
    except RuntimeError as error:
        raise ConfigError(f"evaluate.chair.singulariser={chair.singulariser!r}: {error}") from None
    if chair.synonyms_file:
        path = Path(chair.synonyms_file)
        if not path.is_file():
            raise ConfigError(f"evaluate.chair.synonyms_file {path}: no such file")
        synonyms = read_synonyms_file(path)
        return ChairVocabulary.from_synonyms(synonyms, singulariser=singulariser), str(path)
    name = chair.vocabulary
    if name == "auto":
        if data is None:
            raise ConfigError("evaluate.chair.vocabulary=auto needs the captions' vocabulary")
        name = data
    elif data is not None and name != data:
        raise ConfigError(
            f"evaluate.chair.vocabulary={name!r} but the captions' ground-truth objects are "
            f"named in the {data!r} vocabulary: CHAIR would find no correct mention; use auto"
        )
    if name == "coco":
        return coco_vocabulary(singulariser), "coco"
    if chair.singulariser == "rule":
        return SHAPES_VOCABULARY, "shapes"
    return _resynonymise(SHAPES_VOCABULARY, singulariser), "shapes"


def ground_truth_classes(
    names: Sequence[str], vocab: ChairVocabulary, unknown: set[str] | None = None
) -> list[str]:
    """Vocabulary classes of an image's ground-truth object names, unique, in order.

    A name is mapped by exact phrase (class name or synonym: "circles", "sofa"); otherwise the
    classes mentioned inside it count ("red triangle" -> triangle, as ``shapes`` captions
    describe objects). Names with no class are dropped (they can never be mentioned, so they
    would only lower recall) and collected into ``unknown``.
    """
    classes = set(vocab.classes)
    out: list[str] = []
    for name in names:
        canonical = vocab.canonical(name)
        found = [canonical] if canonical in classes else extract_objects(name, vocab)
        if not found and unknown is not None:
            unknown.add(name)
        out.extend(found)
    return list(dict.fromkeys(out))


# -- metrics ----------------------------------------------------------------------------------


def _of_task(rows: Sequence[Mapping[str, Any]], task: str) -> list[Mapping[str, Any]]:
    return [r for r in rows if r["task"] == task]


def _pope_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``{pope_split, prediction, label}`` per POPE answer; labels must be yes/no."""
    out, bad = [], []
    for row in rows:
        label = str(row["reference"] or "").strip().lower()
        if label not in ("yes", "no"):
            bad.append(row["sample_id"])
        out.append(
            {
                "pope_split": row["pope_split"],
                "prediction": parse_yes_no(row["answer"] or ""),
                "label": label,
            }
        )
    if bad:
        raise ValueError(f"POPE rows whose reference is not 'yes'/'no': {bad[:5]} ({len(bad)})")
    return out


def pope_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """POPE (Li et al. 2023) rows of pope.parquet: per split, ``average`` and ``all``.

    Rows without a ``pope_split`` only count towards ``all`` (warned about).
    """
    if not rows:
        return []
    parsed = _pope_rows(rows)
    with_split = [r for r in parsed if r["pope_split"]]
    if len(with_split) < len(parsed):
        warnings.warn(
            f"{len(parsed) - len(with_split)} POPE answer(s) have no pope_split: "
            "counted in 'all' only",
            stacklevel=2,
        )
    table = pope_by_split(with_split) if with_split else {}
    table["all"] = pope_metrics([r["prediction"] for r in parsed], [r["label"] for r in parsed])
    return [{"split": split, **values} for split, values in table.items()]


def check_known(rows: Sequence[Mapping[str, Any]], ground_truth: Mapping[str, Any]) -> None:
    """``ValueError`` naming the caption samples that ``samples.parquet`` does not have."""
    missing = sorted({r["sample_id"] for r in rows} - set(ground_truth))
    if missing:
        raise ValueError(
            f"caption sample(s) not in samples.parquet: {missing[:5]} ({len(missing)}); "
            "--data must be the folder the answers were decoded from"
        )


def caption_rows(
    rows: Sequence[Mapping[str, Any]],
    ground_truth: Mapping[str, GroundTruth],
    vocab: ChairVocabulary,
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Per-caption CHAIR bookkeeping (rows of captions.parquet) and the ground-truth classes.

    Raises ``ValueError`` when a caption's sample is not in ``samples.parquet``: without its
    ground truth every mention would count as hallucinated.
    """
    check_known(rows, ground_truth)
    unknown: set[str] = set()
    out, gts = [], []
    for row in rows:
        gt = ground_truth_classes(ground_truth[row["sample_id"]].objects, vocab, unknown)
        caption = row["answer"] or ""
        result = chair_caption(caption, gt, vocab)
        gts.append(gt)
        out.append(
            {
                "sample_id": row["sample_id"],
                "image_id": row["image_id"],
                "caption": caption,
                "mentioned": list(result.objects),
                "hallucinated": list(result.hallucinated),
                "gt_objects": gt,
                "n_mentions": len(result.mentions),
                "n_hallucinated_mentions": len(result.hallucinated_mentions),
                "n_words": result.n_words,
            }
        )
    if unknown:
        warnings.warn(
            f"ground-truth object(s) outside the CHAIR vocabulary, ignored: {sorted(unknown)[:10]}",
            stacklevel=2,
        )
    return out, gts


def reference_mentions(rows: Sequence[Mapping[str, Any]], vocab: ChairVocabulary) -> int:
    """Object mentions of ``vocab`` in the REFERENCE captions of the answers.

    Zero means the vocabulary does not fit the data (shapes words in COCO captions): CHAIR
    would then read 0 for any model, so :func:`chair_row` fails instead.
    """
    return sum(len(extract_mentions(r["reference"] or "", vocab)) for r in rows)


def chair_row(
    captions: Sequence[Mapping[str, Any]],
    gts: Sequence[Sequence[str]],
    vocab: ChairVocabulary,
    n_reference: int,
) -> dict[str, Any]:
    """CHAIR (Rohrbach et al. 2018) of the captions, never a silent 0.

    Raises ``ValueError`` when the reference captions hold no object mention; when the
    model's captions hold none, the ratios are None and ``note`` says why.
    """
    if n_reference == 0:
        raise ValueError(
            f"CHAIR: none of the {len(captions)} reference captions mentions an object of the "
            "vocabulary, so the vocabulary does not match the data (evaluate.chair)"
        )
    chair = chair_metrics([c["caption"] for c in captions], gts, vocab)
    chair["n_reference_mentions"] = n_reference
    chair["note"] = None
    if chair["n_mentions"] == 0:
        for name in ("chair_s", "chair_i", "recall"):
            chair[name] = None
        chair["note"] = (
            f"no object mention in any of the {len(captions)} captions "
            f"({n_reference} in the reference captions): CHAIR undefined"
        )
    return chair


def latency_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``time_per_sample_s/<task>`` (mean ``time_s``) and ``tokens_per_s/<task>``.

    Tokens per second is ``sum(n_tokens) / sum(time_s)`` (left out when no time was taken).
    """
    metrics: dict[str, float] = {}
    for task in sorted({r["task"] for r in rows}):
        of_task = _of_task(rows, task)
        seconds = sum(float(r["time_s"]) for r in of_task)
        metrics[f"time_per_sample_s/{task}"] = seconds / len(of_task)
        if seconds > 0:
            metrics[f"tokens_per_s/{task}"] = sum(int(r["n_tokens"]) for r in of_task) / seconds
    return metrics


def _flat_metrics(
    pope: Sequence[Mapping[str, Any]], chair: Mapping[str, Any] | None, n_pope: int
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for row in pope:
        for name in POPE_METRICS:
            metrics[f"pope/{row['split']}/{name}"] = float(row[name])
        metrics[f"pope/{row['split']}/n"] = float(row["n"])
    if pope:
        metrics["n_pope"] = float(n_pope)
    if chair is not None:
        values = {
            "chair_s": chair["chair_s"],
            "chair_i": chair["chair_i"],
            "chair_recall": chair["recall"],
            "caption_mean_length": chair["mean_length"],
            "n_captions": float(chair["n_captions"]),
            "chair_n_mentions": float(chair["n_mentions"]),
            "chair_n_reference_mentions": float(chair["n_reference_mentions"]),
        }
        metrics.update({k: v for k, v in values.items() if v is not None})
    return metrics


def _single(rows: Sequence[Mapping[str, Any]], key: str) -> str | None:
    values = sorted({str(r[key]) for r in rows if r[key] is not None})
    return values[0] if len(values) == 1 else None


# -- the stage --------------------------------------------------------------------------------


def run_evaluate_answers(
    cfg: EvaluateConfig,
    answers_path: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    run: Any = None,
) -> dict[str, float]:
    """Score one answers.parquet; write pope/chair/captions.parquet and metrics.json.

    Returns the flat metrics (see the module docstring); with ``run`` (a
    :class:`lookright.tracking.StageRun`) they are logged, with tags ``lookright.model`` /
    ``lookright.strategy`` when the answers name one model / strategy.
    """
    validate_chair(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = load_answers(answers_path)
    ident = {"model": _single(rows, "model"), "strategy": _single(rows, "strategy")}
    pope_in, captions_in = _of_task(rows, "pope"), _of_task(rows, "caption")
    for task, of_task in (("pope", pope_in), ("caption", captions_in)):
        if not of_task:
            warnings.warn(f"{answers_path}: no {task} answers, no {task} metrics", stacklevel=2)

    pope = pope_table(pope_in)
    write_rows([{**ident, **r} for r in pope], POPE_TABLE, out_dir / "pope.parquet")

    chair = None
    captions: list[dict[str, Any]] = []
    if captions_in:
        truth = load_ground_truth(data_dir)
        check_known(captions_in, truth)
        data = data_vocabulary([truth[r["sample_id"]].vocabulary for r in captions_in])
        vocab, vocab_name = build_vocabulary(cfg, data)
        captions, gts = caption_rows(captions_in, truth, vocab)
        chair = chair_row(captions, gts, vocab, reference_mentions(captions_in, vocab))
        chair["vocabulary"] = vocab_name
    chair_rows = [] if chair is None else [{**ident, **chair}]
    write_rows(chair_rows, CHAIR_TABLE, out_dir / "chair.parquet")
    write_rows([{**ident, **c} for c in captions], CAPTIONS_TABLE, out_dir / "captions.parquet")

    metrics = {**_flat_metrics(pope, chair, len(pope_in)), **latency_metrics(rows)}
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    if run is not None:
        run.log_metrics(metrics)
        run.set_tags({f"lookright.{k}": v for k, v in ident.items() if v is not None})
    return metrics


# -- CLI --------------------------------------------------------------------------------------

OUTPUTS = ("pope.parquet", "chair.parquet", "captions.parquet", "metrics.json")


def _summary(metrics: Mapping[str, float], out: Path) -> str:
    parts = []
    if "pope/average/f1" in metrics:
        parts.append(
            f"POPE avg F1 {metrics['pope/average/f1']:.3f} "
            f"acc {metrics['pope/average/accuracy']:.3f} (n={int(metrics['n_pope'])})"
        )
    if "chair_s" in metrics:
        parts.append(
            f"CHAIRs {metrics['chair_s']:.3f} CHAIRi {metrics['chair_i']:.3f} "
            f"(n={int(metrics['n_captions'])}, {int(metrics['chair_n_mentions'])} mentions)"
        )
    elif "n_captions" in metrics:
        parts.append(f"CHAIR undefined: no object mention in {int(metrics['n_captions'])} captions")
    return f"evaluate_answers: {', '.join(parts) or 'no POPE or caption answers'} -> {out}"


class EvaluateAnswers(Stage):
    name: ClassVar[str] = "evaluate_answers"
    help: ClassVar[str] = "POPE, CHAIR and latency of decoded answers"
    input_context: ClassVar[str] = "evaluation"
    outputs: ClassVar[tuple[str, ...]] = OUTPUTS

    def config_class(self) -> type:
        return EvaluateConfig

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--answers", required=True, type=Path, help="the decode stage's answers.parquet"
        )
        parser.add_argument("--data", required=True, type=Path, help="prepare_data output folder")

    def check(self, cfg: Any, args: argparse.Namespace) -> None:
        validate_chair(cfg)

    def inputs(self, args: argparse.Namespace) -> dict[str, Path]:
        return {"answers": args.answers, **data_inputs(args.data)}

    def run(self, cfg: Any, args: argparse.Namespace, run: Any) -> dict[str, Any]:
        return run_evaluate_answers(cfg, args.answers, args.data, args.out, run)

    def summary(self, result: dict[str, Any], args: argparse.Namespace) -> str:
        return _summary(result, Path(args.out))


STAGE = EvaluateAnswers()
