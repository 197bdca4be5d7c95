"""The report's summary tables, as pyarrow tables, and their Markdown rendering.

``answers`` (one row per model x source x strategy)
    model, source, reward_set, strategy, vqa_accuracy, vqa_accuracy/<subset>...,
    thought_location, thought_shape, thought_color, thought_answer_follows (shares of the
    checked shapes samples whose thought names the truth / whose answer is the thought's
    colour), thought_cot_share (the CoT bottleneck's share of the answer's saliency), the same
    per subset (thought_color/<subset>...), pope_accuracy,
    pope_precision, pope_recall, pope_f1, pope_yes_ratio (POPE's ``average`` split: the mean
    over the splits present), pope_n_random, pope_n_popular, pope_n_adversarial (the answers
    each split's figure rests on; 0 = that split is missing from the average), chair_s,
    chair_i, chair_recall (null, not 0, when no caption mentions an object), chair_mentions
    (object mentions found in the captions), caption_length, latency_pope_s,
    latency_caption_s, run_id.
    VQA accuracy and the thought columns are measured once per model x source by the saliency
    evaluation (greedy) and
    repeated on each strategy's row, unless the strategy's own ``metrics.json`` has one. A
    model x source with a saliency evaluation but no decoded answers gets one row with a null
    strategy.

``saliency`` (one row per model x source x method; the shape of Saliency-R1's table)
    model, source, reward_set, method, n_maps, n_faithfulness, alignment_mean, nss_mean, spearman_mean,
    occ_pearson_mean, occ_spearman_mean (agreement with the occlusion reference map),
    del_<pct>... and ins_<pct>... (by increasing percentage), del_auc, ins_auc, any other
    column of ``summary.parquet``, run_id. Counts stay integers, an all-null column is float.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from lookright.data.schema import POPE_SPLITS
from lookright.report.collect import (
    KEY_COLUMNS,
    EvalDir,
    EvalOutputs,
    finite_or_none,
    load_keyed,
    read_json,
    read_parquet,
    with_keys,
)

POPE_FIELDS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
# chair.parquet column -> (answers column, metrics.json key used when the table is absent)
CHAIR_FIELDS = {
    "chair_s": ("chair_s", "chair_s"),
    "chair_i": ("chair_i", "chair_i"),
    "recall": ("chair_recall", "chair_recall"),
    "mean_length": ("caption_length", "caption_mean_length"),
}
LATENCY_FIELDS = {
    "time_per_sample_s/pope": "latency_pope_s",
    "time_per_sample_s/caption": "latency_caption_s",
}
# evaluate_saliency's thought faithfulness (metrics.json key -> answers column), measured
# once per model x source like the VQA accuracy
THOUGHT_FIELDS = {
    "thought/location": "thought_location",
    "thought/shape": "thought_shape",
    "thought/color": "thought_color",
    "thought/answer_follows": "thought_answer_follows",
    "thought/cot_share": "thought_cot_share",
}
POPE_SPLIT_COUNTS = tuple(f"pope_n_{split}" for split in POPE_SPLITS)
CHAIR_COUNT = "chair_mentions"
ANSWER_METRICS = (
    *(f"pope_{name}" for name in POPE_FIELDS),
    *(out for out, _ in CHAIR_FIELDS.values()),
    *LATENCY_FIELDS.values(),
)
ANSWER_COUNTS = (*POPE_SPLIT_COUNTS, CHAIR_COUNT)
SALIENCY_LEADING = (
    "method",
    "n_maps",
    "n_faithfulness",
    "alignment_mean",
    "nss_mean",
    "spearman_mean",
    "occ_pearson_mean",
    "occ_spearman_mean",
)
FRACTION_COLUMN = re.compile(r"^(del|ins)_?(\d+(?:\.\d+)?)$", re.IGNORECASE)
HIDDEN_COLUMNS = ("reward_set", "run_id")

LABELS = {
    "model": "Model",
    "source": "Source",
    "strategy": "Strategy",
    "method": "Method",
    "n_maps": "Maps",
    "n_faithfulness": "Faith. samples",
    "alignment_mean": "Alignment",
    "nss_mean": "NSS",
    "spearman_mean": "Spearman",
    "del_auc": "Del AUC",
    "ins_auc": "Ins AUC",
    "vqa_accuracy": "VQA acc.",
    "thought_location": "Thought: location",
    "thought_shape": "Thought: shape",
    "thought_color": "Thought: colour",
    "thought_answer_follows": "Answer = thought",
    "thought_cot_share": "CoT share",
    "occ_pearson_mean": "Occl. r",
    "occ_spearman_mean": "Occl. rho",
    "pope_accuracy": "POPE acc.",
    "pope_precision": "POPE prec.",
    "pope_recall": "POPE rec.",
    "pope_f1": "POPE F1",
    "pope_yes_ratio": "POPE yes-ratio",
    "pope_n_random": "POPE n (random)",
    "pope_n_popular": "POPE n (popular)",
    "pope_n_adversarial": "POPE n (adversarial)",
    "chair_mentions": "CHAIR mentions",
    "chair_s": "CHAIRs",
    "chair_i": "CHAIRi",
    "chair_recall": "CHAIR rec.",
    "caption_length": "Caption len.",
    "latency_pope_s": "s/sample (POPE)",
    "latency_caption_s": "s/sample (caption)",
}
HIGHER_IS_BETTER = {
    "thought_location",
    "thought_shape",
    "thought_color",
    "thought_answer_follows",
    "occ_pearson_mean",
    "occ_spearman_mean",
    "alignment_mean",
    "nss_mean",
    "spearman_mean",
    "ins_auc",
    "vqa_accuracy",
    "pope_accuracy",
    "pope_precision",
    "pope_recall",
    "pope_f1",
    "chair_recall",
}
LOWER_IS_BETTER = {"del_auc", "chair_s", "chair_i", "latency_pope_s", "latency_caption_s"}


# -- answers ------------------------------------------------------------------------------


def _run_id(d: EvalDir) -> str | None:
    record = read_json(d.path / "run.json")
    return None if record is None else record.get("run_id")


def vqa_metrics(metrics: dict[str, Any] | None) -> dict[str, float | None]:
    """``vqa_accuracy``, every ``vqa_accuracy/<subset>`` and the thought-faithfulness columns
    (:data:`THOUGHT_FIELDS`) of a saliency evaluation's metrics dict."""
    metrics = metrics or {}
    values = {
        key: finite_or_none(value)
        for key, value in metrics.items()
        if key == "vqa_accuracy" or key.startswith("vqa_accuracy/")
    }
    thought = {out: finite_or_none(metrics.get(key)) for key, out in THOUGHT_FIELDS.items()}
    for key, value in metrics.items():  # per subset: thought/color/bias_conflicting
        name, _, subset = key.rpartition("/")
        if subset and name in THOUGHT_FIELDS and not subset.startswith("n_"):
            thought[f"{THOUGHT_FIELDS[name]}/{subset}"] = finite_or_none(value)
    return values | thought if values or any(v is not None for v in thought.values()) else values


def pope_average(d: EvalDir, metrics: dict[str, Any]) -> dict[str, float | None]:
    """POPE metrics of the ``average`` split: pope.parquet, else ``pope/average/*`` metrics."""
    table = read_parquet(d.path / "pope.parquet")
    row: dict[str, Any] = {}
    if table is not None:
        split = next((c for c in ("split", "pope_split") if c in table.column_names), None)
        rows = [r for r in table.to_pylist() if split and r[split] == "average"]
        row = rows[0] if rows else {}
    return {
        f"pope_{name}": finite_or_none(row.get(name, metrics.get(f"pope/average/{name}")))
        for name in POPE_FIELDS
    }


def pope_split_counts(d: EvalDir, metrics: dict[str, Any]) -> dict[str, int | None]:
    """How many answers each POPE split has (pope.parquet, else ``pope/<split>/n``).

    0 for a split missing from the answers (the average is then over the others); None when
    there is no POPE result at all."""
    table = read_parquet(d.path / "pope.parquet")
    counts: dict[str, Any] = {}
    if table is not None and "n" in table.column_names:
        split = next((c for c in ("split", "pope_split") if c in table.column_names), None)
        counts = {r[split]: r["n"] for r in table.to_pylist()} if split else {}
    else:
        counts = {s: metrics.get(f"pope/{s}/n") for s in POPE_SPLITS}
    if not any(v is not None for v in counts.values()):
        return dict.fromkeys(POPE_SPLIT_COUNTS)
    return {f"pope_n_{s}": int(counts.get(s) or 0) for s in POPE_SPLITS}


def chair_values(d: EvalDir, metrics: dict[str, Any]) -> dict[str, float | None]:
    """CHAIRs / CHAIRi / recall / mean caption length: chair.parquet, else metrics.json."""
    table = read_parquet(d.path / "chair.parquet")
    row = table.slice(0, 1).to_pylist()[0] if table is not None and len(table) else {}
    values: dict[str, Any] = {
        out: finite_or_none(row[name] if name in row else metrics.get(key))
        for name, (out, key) in CHAIR_FIELDS.items()
    }
    mentions = row.get("n_mentions", metrics.get("chair_n_mentions"))
    values[CHAIR_COUNT] = None if mentions is None else int(mentions)
    return values


def answer_row(d: EvalDir, vqa: dict[str, float | None]) -> dict[str, Any]:
    """The answers-table row of one strategy folder (``vqa``: the saliency evaluation's)."""
    metrics = read_json(d.path / "metrics.json") or {}
    own_vqa = vqa_metrics(metrics)
    row: dict[str, Any] = {**d.keys(), "strategy": d.kind, **(own_vqa or vqa)}
    for column in [c for c in vqa if c.startswith("thought_")]:  # the saliency evaluation's
        if row.get(column) is None:
            row[column] = vqa[column]
    row |= pope_average(d, metrics) | pope_split_counts(d, metrics) | chair_values(d, metrics)
    row |= {out: finite_or_none(metrics.get(key)) for key, out in LATENCY_FIELDS.items()}
    row["run_id"] = _run_id(d)
    return row


def _answers_schema(rows: Sequence[dict[str, Any]]) -> pa.Schema:
    subsets = sorted({k for r in rows for k in r if k.startswith("vqa_accuracy/")})
    thought_subsets = sorted(
        {k for r in rows for k in r if k.startswith("thought_") and "/" in k},
        key=lambda k: (list(THOUGHT_FIELDS.values()).index(k.split("/")[0]), k),
    )
    numeric = [
        "vqa_accuracy",
        *subsets,
        *THOUGHT_FIELDS.values(),
        *thought_subsets,
        *ANSWER_METRICS,
    ]
    pope_end = numeric.index("pope_yes_ratio") + 1
    chair_end = numeric.index("chair_recall") + 1
    columns = (
        [(name, pa.float64()) for name in numeric[:pope_end]]
        + [(name, pa.int64()) for name in POPE_SPLIT_COUNTS]
        + [(name, pa.float64()) for name in numeric[pope_end:chair_end]]
        + [(CHAIR_COUNT, pa.int64())]
        + [(name, pa.float64()) for name in numeric[chair_end:]]
    )
    return pa.schema(
        [(name, pa.string()) for name in (*KEY_COLUMNS, "strategy")]
        + columns
        + [("run_id", pa.string())]
    )


def answers_table(outputs: EvalOutputs) -> pa.Table | None:
    """One row per model x source x strategy (see the module docstring); None when empty."""
    saliency = {(d.model, d.source): d for d in outputs.saliency}
    rows = []
    for pair in outputs.model_sources():
        strategies = [d for d in outputs.answers if (d.model, d.source) == pair]
        sal = saliency.get(pair)
        vqa = vqa_metrics(read_json(sal.path / "metrics.json")) if sal else {}
        rows += [answer_row(d, vqa) for d in strategies]
        if sal is not None and not strategies and any(v is not None for v in vqa.values()):
            rows.append({**sal.keys(), "strategy": None, **vqa, "run_id": _run_id(sal)})
    if not rows:
        return None
    schema = _answers_schema(rows)
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)


# -- saliency -----------------------------------------------------------------------------


def fraction_key(name: str) -> tuple[int, float] | None:
    """``del_5`` -> (0, 5.0), ``ins_30`` -> (1, 30.0); None for other columns."""
    match = FRACTION_COLUMN.match(name)
    if match is None:
        return None
    return (0 if match.group(1).lower() == "del" else 1, float(match.group(2)))


def saliency_column_order(names: Iterable[str]) -> list[str]:
    """Keys, method, n_maps, alignment, NSS, Spearman, Del.../Ins... by %, AUCs, the rest."""
    names = list(names)
    leading = [*KEY_COLUMNS, *SALIENCY_LEADING]
    fractions = sorted((n for n in names if fraction_key(n)), key=lambda n: fraction_key(n))
    trailing = ["del_auc", "ins_auc"]
    ordered = [n for n in [*leading, *fractions, *trailing] if n in names]
    return (
        ordered
        + [n for n in names if n not in ordered and n != "run_id"]
        + (["run_id"] if "run_id" in names else [])
    )


def _with_run_id(d: EvalDir) -> pa.Table | None:
    table = read_parquet(d.path / "summary.parquet")
    if table is None:
        return None
    table = with_keys(table, d.keys())
    return table.append_column("run_id", pa.array([_run_id(d)] * len(table), pa.string()))


def saliency_table(outputs: EvalOutputs) -> pa.Table | None:
    """One row per model x source x method (see the module docstring); None when empty."""
    tables = [t for t in (_with_run_id(d) for d in outputs.saliency) if t is not None]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    table = table.select(saliency_column_order(table.column_names))
    for index, name in enumerate(table.column_names):
        if pa.types.is_null(table[name].type):  # a column null in every file
            table = table.set_column(index, name, table[name].cast(pa.float64()))
    return table


def curves_table(outputs: EvalOutputs) -> pa.Table | None:
    """Every ``curves.parquet`` stacked with model/source/reward_set columns."""
    return load_keyed(outputs.saliency, "curves.parquet")


# -- presentation -------------------------------------------------------------------------


def label(column: str) -> str:
    """A column's display name (``del_15`` -> ``Del 15``, ``vqa_accuracy/x`` -> ``VQA acc. (x)``)."""
    if column in LABELS:
        return LABELS[column]
    if column.startswith("vqa_accuracy/"):
        return f"VQA acc. ({column.split('/', 1)[1]})"
    name, _, subset = column.partition("/")
    if subset and name in LABELS:  # thought_color/bias_conflicting
        return f"{LABELS[name]} ({subset})"
    key = fraction_key(column)
    if key is not None:
        return f"{'Del' if key[0] == 0 else 'Ins'} {key[1]:g}"
    return column


def direction(column: str) -> int:
    """+1 when higher is better, -1 when lower is, 0 when neither (or unknown)."""
    if column in HIGHER_IS_BETTER or column.startswith("vqa_accuracy/"):
        return 1
    if column.split("/")[0] in HIGHER_IS_BETTER:  # thought_color/<subset>
        return 1
    if column in LOWER_IS_BETTER:
        return -1
    key = fraction_key(column)
    if key is not None:
        return -1 if key[0] == 0 else 1
    return 0


def format_value(value: Any) -> str:
    """Cell text: ``—`` for null/NaN, 1 decimal from 10 up (Del/Ins %), else 3 decimals."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"


def display_columns(table: pa.Table) -> list[str]:
    """The columns shown in Markdown/HTML (reward_set and run_id stay in the Parquet file)."""
    return [c for c in table.column_names if c not in HIDDEN_COLUMNS]


def best_cells(table: pa.Table, group: str = "model") -> set[tuple[int, str]]:
    """(row, column) of the best value of each ranked column within each ``group`` value."""
    rows = table.to_pylist()
    best: set[tuple[int, str]] = set()
    for column in table.column_names:
        sign = direction(column)
        if sign == 0:
            continue
        for key in {r[group] for r in rows}:
            values = [
                (i, r[column])
                for i, r in enumerate(rows)
                if r[group] == key and finite_or_none(r[column]) is not None
            ]
            if len({v for _, v in values}) < 2:  # one value, or all tied: nothing stands out
                continue
            top = max(sign * v for _, v in values)
            best |= {(i, column) for i, v in values if sign * v == top}
    return best


def markdown_table(table: pa.Table) -> str:
    """A GitHub Markdown table of the display columns; best values per model in bold."""
    columns = display_columns(table)
    best = best_cells(table)
    lines = [
        "| " + " | ".join(label(c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for i, row in enumerate(table.to_pylist()):
        cells = []
        for c in columns:
            text = format_value(row[c]).replace("|", "\\|")
            cells.append(f"**{text}**" if (i, c) in best else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
