"""Aggregate a multi-seed experiment: mean, std, bootstrap CI and paired effects over seeds.

The experiment (``config/experiment.yaml``) runs the whole pipeline once per seed into
``results-experiment/seed<N>/``; each seed's ``report`` stage writes ``report/answers.parquet``
and ``report/saliency.parquet`` (:mod:`lookright.report.tables`). This module stacks them and
summarises over seeds::

    lookright experiment-summary \\
        --seed-dir results-experiment/seed0 results-experiment/seed1 results-experiment/seed2 \\
        --out results-experiment/summary [--reference grpo-acc+fmt --reference sft] \\
        [--method cot_bottleneck --method logit_decomposition] [--strategy greedy]

(``--seed-dir`` takes one or more folders and may be repeated.) Writes into ``--out``:

``answers_by_seed.parquet`` / ``saliency_by_seed.parquet``
    every seed's table stacked, with a leading ``seed`` column (``N`` of a folder named
    ``seed<N>``, else the folder name) and ``train_run_id``: the run id of the stage that
    trained the source model (``sft/<model>/run.json`` or ``grpo/<model>/<reward_set>/run.json``
    of the seed folder; null when absent).
``answers_summary.parquet`` / ``saliency_summary.parquet``
    long format, one row per group x numeric metric. Groups: model x source x strategy
    (answers) and model x source x method (saliency). Columns: the group keys, reward_set,
    metric, mean, std (sample std, ddof=1), n (seeds with a value), ci_lo / ci_hi (95%
    percentile bootstrap interval of the mean: numpy, rng seed 0, 2000 resamples), n_seeds
    (seeds with a row for the group), and per seed of the group (same order): seeds,
    run_ids (the evaluation runs) and train_run_ids. std and the CI are null when n < 2.
``effects.parquet``
    paired differences over seeds (:func:`effects`).
``summary.md``
    the summaries as Markdown tables of cells ``mean ± std [lo, hi] (n)`` (3 decimals), the
    effects, groups missing from some seeds, and the MLflow run ids of every group.

Seeds whose groups differ are allowed (a warning names the groups with fewer rows than seeds);
a seed folder without its report tables is a ``FileNotFoundError`` naming folder and file.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lookright.config import ConfigError
from lookright.io import atomic_write_table
from lookright.report.collect import read_json, reward_set_of, source_order, strategy_order
from lookright.report.files import atomic_write_text
from lookright.report.statistics import RESAMPLES, RNG_SEED, describe, finite
from lookright.report.tables import label

REPORT_FILES = {"answers": "report/answers.parquet", "saliency": "report/saliency.parquet"}
GROUPS = {
    "answers": ("model", "source", "strategy"),
    "saliency": ("model", "source", "method"),
}
NON_METRICS = {"seed", "model", "source", "reward_set", "strategy", "method"}
DEFAULT_REFERENCES = ("grpo-acc+fmt", "sft")
# Q1 asks for bias-conflicting accuracy OR thought faithfulness (docs/methods.md#thought_faithfulness)
DEFAULT_ANSWER_METRICS = (
    "vqa_accuracy",
    "vqa_accuracy/bias_conflicting",
    "thought_location",
    "thought_answer_follows",
)
DEFAULT_METHODS = (
    "cot_bottleneck",
    "cot_bottleneck_generating",
    "logit_decomposition",
    "logit_decomposition_centered",
)
SHARED_SEED = "shared"  # rows of a model every seeded branch shares (the SFT checkpoint)
_SEEDED_SOURCE = re.compile(r"^(grpo-.+)@(\d+)$")
_SEEDED_STRATEGY = re.compile(r"^(.+)@(\d+)$")
DEFAULT_SALIENCY_METRIC = "alignment_mean"
DEFAULT_STRATEGY = "greedy"
# Q3 (LVLMs-Saliency): SGRS against top-K sampling with the same K and the same seeds
DEFAULT_STRATEGY_REFERENCES = ("sample",)
DEFAULT_DECODE_METRICS = ("pope_f1", "chair_s", "pope_yes_ratio")
SUMMARY_SCHEMA_TAIL = [
    ("reward_set", pa.string()),
    ("metric", pa.string()),
    ("mean", pa.float64()),
    ("std", pa.float64()),
    ("n", pa.int64()),
    ("ci_lo", pa.float64()),
    ("ci_hi", pa.float64()),
    ("n_seeds", pa.int64()),
]
EFFECTS_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("model", pa.string()),
        ("metric", pa.string()),
        ("method", pa.string()),
        ("strategy", pa.string()),
        ("source", pa.string()),
        ("reference", pa.string()),
        ("n", pa.int64()),
        ("mean", pa.float64()),
        ("std", pa.float64()),
        ("ci_lo", pa.float64()),
        ("ci_hi", pa.float64()),
        ("n_positive", pa.int64()),
        ("n_negative", pa.int64()),
        ("seeds", pa.list_(pa.string())),
    ]
)
_SEED_DIR = re.compile(r"^seed(\d+)$")


# -- reading ------------------------------------------------------------------------------


def seed_of(seed_dir: Path) -> int | str:
    """``seed3`` -> 3; any other folder name is kept as it is."""
    match = _SEED_DIR.match(Path(seed_dir).name)
    return int(match.group(1)) if match else Path(seed_dir).name


def seed_key(seed: Any) -> tuple[int, Any]:
    """Sort key of seeds: numbers by value, then names."""
    return (0, seed) if isinstance(seed, int) else (1, str(seed))


def _train_run_id(seed_dir: Path, model: Any, source: Any) -> str | None:
    if model is None or source is None:
        return None
    reward_set = reward_set_of(source)
    folder = seed_dir / "sft" / model if source == "sft" else None
    if reward_set is not None:
        folder = seed_dir / "grpo" / model / reward_set
    record = read_json(folder / "run.json") if folder is not None else None
    return None if record is None else record.get("run_id")


def read_seed(seed_dir: str | Path, kind: str) -> pa.Table:
    """One seed's ``report/<kind>.parquet`` with ``seed`` and ``train_run_id`` columns."""
    seed_dir = Path(seed_dir)
    path = seed_dir / REPORT_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"seed folder {seed_dir}: missing {REPORT_FILES[kind]} (run the report stage of "
            f"this seed first)"
        )
    table = pq.read_table(path)
    for name in (*GROUPS[kind], "reward_set", "run_id"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), pa.string()))
    rows = table.select(["model", "source"]).to_pylist()
    train = [_train_run_id(seed_dir, r["model"], r["source"]) for r in rows]
    table = table.append_column("train_run_id", pa.array(train, pa.string()))
    seed = seed_of(seed_dir)
    return table.add_column(0, "seed", pa.array([str(seed)] * len(table), pa.string()))


def stack(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate per-seed tables (missing columns null); ``seed`` int64 when all numeric."""
    table = pa.concat_tables(tables, promote_options="permissive")
    for index, name in enumerate(table.column_names):
        if pa.types.is_null(table[name].type):  # a column null in every file
            table = table.set_column(index, name, table[name].cast(pa.float64()))
    seeds = table["seed"].to_pylist()
    if all(s.isdigit() for s in seeds):
        table = table.set_column(0, "seed", pa.array([int(s) for s in seeds], pa.int64()))
    return table


def metric_columns(table: pa.Table) -> list[str]:
    """The numeric columns of a by-seed table (keys, seed and run ids excluded)."""
    return [
        f.name
        for f in table.schema
        if f.name not in NON_METRICS
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
    ]


# -- summaries ----------------------------------------------------------------------------


def _group_sort_key(kind: str, key: tuple[Any, ...]) -> tuple[Any, ...]:
    model, source, third = key
    third_key = (
        strategy_order(third or "") if kind == "answers" else (0, third or "")
    )  # a null strategy (VQA only) sorts first
    return (model or "", source_order(source or ""), third_key)


def groups_of(table: pa.Table, kind: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """By-seed rows grouped by the kind's group keys, in report order (sft, GRPO, ...)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        groups.setdefault(tuple(row[k] for k in GROUPS[kind]), []).append(row)
    return {k: groups[k] for k in sorted(groups, key=lambda k: _group_sort_key(kind, k))}


def _summary_schema(kind: str, seed_type: pa.DataType) -> pa.Schema:
    return pa.schema(
        [(k, pa.string()) for k in GROUPS[kind]]
        + SUMMARY_SCHEMA_TAIL
        + [
            ("seeds", pa.list_(seed_type)),
            ("run_ids", pa.list_(pa.string())),
            ("train_run_ids", pa.list_(pa.string())),
        ]
    )


def summarize(by_seed: pa.Table, kind: str) -> pa.Table:
    """One row per group x metric of a stacked table (columns: see the module docstring)."""
    rows = []
    for key, members in groups_of(by_seed, kind).items():
        common = {
            **dict(zip(GROUPS[kind], key, strict=True)),
            "reward_set": next((r["reward_set"] for r in members if r["reward_set"]), None),
            "n_seeds": len({r["seed"] for r in members}),
            "seeds": [r["seed"] for r in members],
            "run_ids": [r["run_id"] for r in members],
            "train_run_ids": [r["train_run_id"] for r in members],
        }
        for metric in metric_columns(by_seed):
            stats = describe(r[metric] for r in members)
            rows.append({**common, "metric": metric, **stats})
    schema = _summary_schema(kind, by_seed.schema.field("seed").type)
    return pa.Table.from_pylist(rows, schema=schema)


def incomplete_groups(by_seed: pa.Table, kind: str) -> list[tuple[tuple[Any, ...], list[Any]]]:
    """(group key, its seeds) of every group present in fewer seeds than the table has."""
    all_seeds = set(by_seed["seed"].to_pylist())
    return [
        (key, sorted({r["seed"] for r in members}, key=seed_key))
        for key, members in groups_of(by_seed, kind).items()
        if len({r["seed"] for r in members}) < len(all_seeds)
    ]


def _group_text(key: Sequence[Any]) -> str:
    return " / ".join("—" if part is None else str(part) for part in key)


def _warn_incomplete(by_seed: pa.Table, kind: str, n_seeds: int) -> None:
    missing = incomplete_groups(by_seed, kind)
    if missing:
        listed = "; ".join(
            f"{_group_text(key)} (n={len(seeds)}, seeds {', '.join(map(str, seeds))})"
            for key, seeds in missing
        )
        warnings.warn(
            f"{kind}: {len(missing)} group(s) not in all {n_seeds} seeds: {listed}",
            UserWarning,
            stacklevel=3,
        )


def _branch_seed(row: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(seed, source, strategy) of a report row: the seed of its GRPO branch
    (``grpo-<set>@<N>``) or of its decode branch (``<strategy>@<N>``), else shared."""
    source, strategy = row["source"] or "", row.get("strategy")
    by_source = _SEEDED_SOURCE.match(source)
    by_strategy = _SEEDED_STRATEGY.match(strategy or "")
    if by_source and by_strategy:
        raise ValueError(
            f"report row {row['model']}/{source}/{strategy}: a seeded GRPO branch decoded with "
            f"a seeded strategy has two seeds; seed one of the two"
        )
    if by_strategy:
        return by_strategy.group(2), row["source"], by_strategy.group(1)
    if by_source:
        return by_source.group(2), by_source.group(1), strategy
    return SHARED_SEED, row["source"], strategy


def read_branches(results_dir: str | Path, kind: str) -> pa.Table:
    """One results folder whose branches carry their seed: GRPO branches (``grpo-<set>@<N>``)
    or decode branches (``<strategy>@<N>``, e.g. ``sgrs@3``).

    The source becomes ``grpo-<set>`` (the strategy ``<strategy>``) with ``seed`` N; rows
    without a seed suffix (the SFT model all branches start from, a deterministic decode) get
    ``seed`` :data:`SHARED_SEED` and are paired with every seed in :func:`paired`.
    ``train_run_id`` as in :func:`read_seed`.
    """
    results_dir = Path(results_dir)
    path = results_dir / REPORT_FILES[kind]
    if not path.is_file():
        raise FileNotFoundError(
            f"results folder {results_dir}: missing {REPORT_FILES[kind]} (run its report stage)"
        )
    table = pq.read_table(path)
    for name in (*GROUPS[kind], "reward_set", "run_id"):
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(len(table), pa.string()))
    rows = table.select([c for c in ("model", "source", "strategy") if c in GROUPS[kind]])
    rows = rows.to_pylist()
    train = [_train_run_id(results_dir, r["model"], r["source"]) for r in rows]
    triples = [_branch_seed(row) for row in rows]
    seeds, sources, strategies = ([t[k] for t in triples] for k in range(3))
    index = table.column_names.index("source")
    table = table.set_column(index, "source", pa.array(sources, pa.string()))
    if "strategy" in GROUPS[kind]:
        index = table.column_names.index("strategy")
        table = table.set_column(index, "strategy", pa.array(strategies, pa.string()))
    if "reward_set" in table.column_names:
        sets = [None if s == "sft" else (s or "")[len("grpo-") :] or None for s in sources]
        position = table.column_names.index("reward_set")
        table = table.set_column(position, "reward_set", pa.array(sets, pa.string()))
    table = table.append_column("train_run_id", pa.array(train, pa.string()))
    return table.add_column(0, "seed", pa.array(seeds, pa.string()))


def aggregate_branches(results_dir: str | Path) -> dict[str, pa.Table]:
    """:func:`aggregate` for seeds that are GRPO branches (``@N``) of one results folder."""
    tables: dict[str, pa.Table] = {}
    for kind in GROUPS:
        by_seed = read_branches(results_dir, kind)
        tables[f"{kind}_by_seed"] = by_seed
        tables[f"{kind}_summary"] = summarize(by_seed, kind)
    tables["effects"] = effects(tables)
    return tables


def aggregate(seed_dirs: Sequence[str | Path]) -> dict[str, pa.Table]:
    """Stack and summarise every seed's report tables; effects with the defaults.

    Returns ``answers_by_seed``, ``answers_summary``, ``saliency_by_seed``,
    ``saliency_summary`` and ``effects`` (:func:`effects` with its default arguments).
    """
    if not seed_dirs:
        raise ValueError("no seed folders given")
    dirs = [Path(d) for d in seed_dirs]
    tables: dict[str, pa.Table] = {}
    for kind in GROUPS:
        by_seed = stack([read_seed(d, kind) for d in dirs])
        _warn_incomplete(by_seed, kind, len(dirs))
        tables[f"{kind}_by_seed"] = by_seed
        tables[f"{kind}_summary"] = summarize(by_seed, kind)
    tables["effects"] = effects(tables)
    return tables


# -- paired effects -----------------------------------------------------------------------


def resolve_metric(name: str, columns: Sequence[str]) -> str | None:
    """``name`` if a column, else its ``vqa_accuracy/<subset>`` spelling; None if neither."""
    if name in columns:
        return name
    alias = re.sub(r"^vqa_accuracy_", "vqa_accuracy/", name)
    return alias if alias in columns else None


def answer_values(by_seed: pa.Table, metric: str, strategy: str) -> dict[tuple, float]:
    """``(seed, model, source) -> value``: the ``strategy`` row, else the row without strategy.

    VQA accuracy is measured once per model x source (greedy), so a source with no decoded
    answers (its row has a null strategy) is compared on that row.
    """
    chosen: dict[tuple, tuple[int, Any]] = {}
    for row in by_seed.to_pylist():
        rank = 0 if row["strategy"] == strategy else 1 if row["strategy"] is None else None
        key = (row["seed"], row["model"], row["source"])
        if rank is not None and (key not in chosen or rank < chosen[key][0]):
            chosen[key] = (rank, row[metric])
    return {k: float(v) for k, (_, v) in chosen.items() if finite([v]).size}


def saliency_values(by_seed: pa.Table, metric: str, method: str) -> dict[tuple, float]:
    """``(seed, model, source) -> value`` of one saliency method."""
    return {
        (r["seed"], r["model"], r["source"]): float(r[metric])
        for r in by_seed.to_pylist()
        if r["method"] == method and finite([r[metric]]).size
    }


def paired(
    values: Mapping[tuple, float], model: str, source: str, reference: str
) -> tuple[list[Any], list[float]]:
    """(seeds, source - reference) over the seeds where both have a value.

    A reference measured once for all seeds (seed :data:`SHARED_SEED`) pairs with each seed.
    """
    seeds = sorted({s for s, m, _ in values if m == model}, key=seed_key)
    pairs = []
    for s in seeds:
        ref = values.get((s, model, reference), values.get((SHARED_SEED, model, reference)))
        if (s, model, source) in values and ref is not None:
            pairs.append((s, values[(s, model, source)] - ref))
    return [s for s, _ in pairs], [d for _, d in pairs]


def _source_key(source: str | None) -> tuple[int, str]:
    return source_order(source or "")


def _effect_rows(
    values: Mapping[tuple, float], references: Sequence[str], common: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for model in sorted({m for _, m, _ in values}, key=lambda m: m or ""):
        sources = sorted({src for _, m, src in values if m == model}, key=_source_key)
        for reference in (r for r in references if r in sources):
            for source in (s for s in sources if s != reference):
                seeds, diffs = paired(values, model, source, reference)
                if not diffs:
                    continue
                stats = describe(diffs)
                rows.append(
                    {
                        **common,
                        "model": model,
                        "source": source,
                        "reference": reference,
                        **stats,
                        "n_positive": sum(d > 0 for d in diffs),
                        "n_negative": sum(d < 0 for d in diffs),
                        "seeds": [str(s) for s in seeds],
                    }
                )
    return rows


def strategy_effects(
    answers: pa.Table,
    references: Sequence[str] = DEFAULT_STRATEGY_REFERENCES,
    metrics: Sequence[str] = DEFAULT_DECODE_METRICS,
) -> list[dict[str, Any]]:
    """Paired differences ``strategy - reference strategy`` over seeds, per model x source.

    Rows of the effects table with ``strategy`` = the compared strategy, ``reference`` = the
    reference strategy (default ``sample``: SGRS's control, the same top-K and seeds) and
    ``source`` = the decoded model. A strategy pairs with the reference seed by seed; one
    decoded once (deterministic, seed shared) is compared only as the reference.
    """
    rows: list[dict[str, Any]] = []
    records = answers.to_pylist()
    for name in metrics:
        metric = resolve_metric(name, answers.column_names)
        if metric is None:
            continue
        for model, source in sorted({(r["model"], r["source"]) for r in records}, key=str):
            values = {
                (r["seed"], model, r["strategy"]): float(r[metric])
                for r in records
                if (r["model"], r["source"]) == (model, source)
                and r["strategy"] is not None
                and finite([r[metric]]).size
            }
            common = {"table": "answers", "metric": metric, "method": None}
            for row in _effect_rows(values, references, common):
                rows.append({**row, "strategy": row["source"], "source": source})
    return rows


def effects(
    tables: Mapping[str, pa.Table],
    references: Sequence[str] = DEFAULT_REFERENCES,
    answer_metrics: Sequence[str] = DEFAULT_ANSWER_METRICS,
    methods: Sequence[str] = DEFAULT_METHODS,
    saliency_metric: str = DEFAULT_SALIENCY_METRIC,
    strategy: str = DEFAULT_STRATEGY,
    strategy_references: Sequence[str] = DEFAULT_STRATEGY_REFERENCES,
) -> pa.Table:
    """Paired differences ``source - reference`` over seeds, per model.

    For each reference source present (default ``grpo-acc+fmt`` and ``sft``) every other
    source of the same model is paired with it seed by seed:

    * answers: each of ``answer_metrics`` that is a column (``vqa_accuracy``,
      ``vqa_accuracy/bias_conflicting``, also accepted as ``vqa_accuracy_bias_conflicting``,
      ``thought_location``, ``thought_answer_follows``),
      on the ``strategy`` row (else the row without strategy, see :func:`answer_values`);
    * saliency: ``saliency_metric`` (``alignment_mean``) of each of ``methods``;
    * decoding: each strategy against ``strategy_references`` on the same model
      (:func:`strategy_effects`; ``reference`` is then a strategy).

    A row per (table, model, metric, method, source, reference) with at least one pair:
    n (paired seeds), mean / std / bootstrap CI of the differences (as :func:`describe`),
    n_positive and n_negative (seeds where source beats / trails the reference), seeds.
    """
    rows: list[dict[str, Any]] = []
    answers = tables.get("answers_by_seed")
    if answers is not None and len(answers):
        for name in answer_metrics:
            metric = resolve_metric(name, answers.column_names)
            if metric is None:
                continue
            values = answer_values(answers, metric, strategy)
            common = {"table": "answers", "metric": metric, "method": None, "strategy": strategy}
            rows += _effect_rows(values, references, common)
        rows += strategy_effects(answers, strategy_references)
    saliency = tables.get("saliency_by_seed")
    if saliency is not None and len(saliency) and saliency_metric in saliency.column_names:
        for method in methods:
            values = saliency_values(saliency, saliency_metric, method)
            common = {"table": "saliency", "metric": saliency_metric, "method": method}
            rows += _effect_rows(values, references, {**common, "strategy": None})
    return pa.Table.from_pylist(rows, schema=EFFECTS_SCHEMA)


# -- Markdown -----------------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_cell(stats: Mapping[str, Any]) -> str:
    """``mean ± std [lo, hi] (n)`` with 3 decimals; ``mean (1)`` for one seed, ``—`` for none."""
    if not stats.get("n"):
        return "—"
    if stats.get("std") is None:
        return f"{_number(stats['mean'])} ({stats['n']})"
    return (
        f"{_number(stats['mean'])} ± {_number(stats['std'])} "
        f"[{_number(stats['ci_lo'])}, {_number(stats['ci_hi'])}] ({stats['n']})"
    )


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def summary_markdown_table(summary: pa.Table, kind: str) -> str:
    """A group per row, a metric per column (metrics with no value anywhere left out)."""
    records = summary.to_pylist()
    metrics = list(dict.fromkeys(r["metric"] for r in records if r["n"]))
    cells: dict[tuple, dict[str, str]] = {}
    for r in records:
        key = tuple(r[k] for k in GROUPS[kind])
        cells.setdefault(key, {})[r["metric"]] = format_cell(r)
    header = [label(k) for k in GROUPS[kind]] + [label(m) for m in metrics]
    body = [
        ["—" if part is None else str(part) for part in key] + [row.get(m, "—") for m in metrics]
        for key, row in cells.items()
    ]
    return _markdown(header, body)


def effects_markdown_table(table: pa.Table) -> str:
    """One row per effect: Δ = source − reference (or strategy − reference strategy, when the
    reference is a strategy) as ``mean ± std [lo, hi] (n)``."""
    header = ["Table", "Model", "Metric", "Method / strategy", "Source", "Reference"]
    header += ["Δ (source or strategy − reference)", "Seeds Δ > 0"]
    body = [
        [
            r["table"],
            r["model"],
            label(r["metric"]),
            r["method"] or r["strategy"] or "—",
            r["source"],
            r["reference"],
            format_cell(r),
            f"{r['n_positive']}/{r['n']}",
        ]
        for r in table.to_pylist()
    ]
    return _markdown(header, body)


def _run_id_lines(summary: pa.Table, kind: str) -> list[str]:
    lines, seen = [], set()
    for r in summary.to_pylist():
        key = tuple(r[k] for k in GROUPS[kind])
        if key in seen:
            continue
        seen.add(key)
        per_seed = [
            f"seed {s}: `{run or '—'}`" + (f" (trained by `{train}`)" if train else "")
            for s, run, train in zip(r["seeds"], r["run_ids"], r["train_run_ids"], strict=True)
        ]
        lines.append(f"- {_group_text(key)}: " + "; ".join(per_seed))
    return lines


def _incomplete_lines(tables: Mapping[str, pa.Table]) -> list[str]:
    lines = []
    for kind in GROUPS:
        for key, seeds in incomplete_groups(tables[f"{kind}_by_seed"], kind):
            lines.append(f"- {kind}: {_group_text(key)} only in seeds {', '.join(map(str, seeds))}")
    return lines


def summary_markdown(tables: Mapping[str, pa.Table]) -> str:
    """``summary.md``: the summary tables, the effects, incomplete groups and run ids."""
    seeds = sorted(
        {s for k in GROUPS for s in tables[f"{k}_by_seed"]["seed"].to_pylist()}, key=seed_key
    )
    parts = [
        "# Experiment summary",
        f"Seeds: {', '.join(map(str, seeds))}. Cells: mean ± std [95% CI] (n seeds); std is "
        f"the sample std (ddof=1), the CI a percentile bootstrap of the mean ({RESAMPLES} "
        f"resamples, rng seed {RNG_SEED}); both need n ≥ 2.",
    ]
    titles = {"answers": "Answers (model × source × strategy)"}
    titles["saliency"] = "Saliency (model × source × method)"
    for kind in GROUPS:
        summary = tables[f"{kind}_summary"]
        body = summary_markdown_table(summary, kind) if len(summary) else "not available"
        parts += [f"## {titles[kind]}", body]
    effect = tables.get("effects")
    parts += ["## Paired effects (source or strategy − reference, per seed)"]
    parts += [effects_markdown_table(effect) if effect is not None and len(effect) else "none"]
    incomplete = _incomplete_lines(tables)
    if incomplete:
        parts += ["## Groups missing from some seeds", "\n".join(incomplete)]
    parts += ["## MLflow run ids"]
    for kind in GROUPS:
        lines = _run_id_lines(tables[f"{kind}_summary"], kind)
        parts += [f"### {kind}", "\n".join(lines) or "none"]
    return "\n\n".join(parts) + "\n"


# -- writing and CLI ----------------------------------------------------------------------


def write_summary(tables: Mapping[str, pa.Table], out_dir: str | Path) -> dict[str, Path]:
    """Write the five Parquet tables and ``summary.md`` atomically; returns name -> path.

    ``effects`` is computed with the defaults when ``tables`` has none.
    """
    out = Path(out_dir)
    tables = dict(tables)
    tables.setdefault("effects", effects(tables))
    written = {}
    for kind in GROUPS:
        for suffix in ("by_seed", "summary"):
            name = f"{kind}_{suffix}"
            written[name] = atomic_write_table(tables[name], out / f"{name}.parquet")
    written["effects"] = atomic_write_table(tables["effects"], out / "effects.parquet")
    written["summary_md"] = atomic_write_text(out / "summary.md", summary_markdown(tables))
    return written


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--seed-dir`` (one or more, repeatable), ``--out`` and the effects' options."""
    parser.add_argument(
        "--branches",
        type=Path,
        default=None,
        metavar="DIR",
        help="one results folder whose GRPO branches are seeded (reward sets named <set>@<N>)",
    )
    parser.add_argument(
        "--seed-dir",
        dest="seed_dirs",
        action="extend",
        nargs="+",
        default=[],
        type=Path,
        metavar="DIR",
        help="a seed's results folder (results-experiment/seed<N>); one or more, repeatable",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder of the summary")
    parser.add_argument(
        "--reference",
        dest="references",
        action="append",
        default=None,
        metavar="SOURCE",
        help=f"reference source of the paired effects; repeatable (default: "
        f"{' '.join(DEFAULT_REFERENCES)})",
    )
    parser.add_argument(
        "--method",
        dest="methods",
        action="append",
        default=None,
        metavar="METHOD",
        help=f"saliency method of the alignment effects; repeatable (default: "
        f"{' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--strategy",
        default=DEFAULT_STRATEGY,
        help="decode strategy whose row the VQA effects compare (default: %(default)s)",
    )
    parser.add_argument(
        "--strategy-reference",
        dest="strategy_references",
        action="append",
        default=None,
        metavar="STRATEGY",
        help=f"reference strategy of the decoding effects (every other strategy of the same "
        f"model is paired with it seed by seed); repeatable (default: "
        f"{' '.join(DEFAULT_STRATEGY_REFERENCES)})",
    )
    return parser


def n_seeds(tables: Mapping[str, pa.Table]) -> int:
    """Distinct seeds of the answers and saliency tables (the shared SFT rows excluded)."""
    seeds = {
        str(s)
        for kind in GROUPS
        for s in tables[f"{kind}_by_seed"]["seed"].to_pylist()
        if str(s) != SHARED_SEED
    }
    return len(seeds)


def cli_main(args: argparse.Namespace) -> int:
    """Entry point of ``lookright experiment-summary`` (no MLflow run)."""
    if bool(args.branches) == bool(args.seed_dirs):
        raise ConfigError(
            "experiment-summary: give either --branches DIR or --seed-dir DIR [DIR ...], not both"
        )
    tables = aggregate_branches(args.branches) if args.branches else aggregate(args.seed_dirs)
    tables["effects"] = effects(
        tables,
        references=args.references or DEFAULT_REFERENCES,
        methods=args.methods or DEFAULT_METHODS,
        strategy=args.strategy,
        strategy_references=args.strategy_references or DEFAULT_STRATEGY_REFERENCES,
    )
    written = write_summary(tables, args.out)
    print(
        f"experiment-summary: {n_seeds(tables)} seeds, "
        f"{len(tables['answers_by_seed'])} answer rows, "
        f"{len(tables['saliency_by_seed'])} saliency rows, "
        f"{len(tables['effects'])} effects -> {written['summary_md']}"
    )
    return 0
