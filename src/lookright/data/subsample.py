"""Deterministic, stratified subsamples of ``samples`` rows for evaluation.

Every stage that scores a subsample (``decode.max_samples``, ``evaluate.max_samples``,
``evaluate.faithfulness.max_samples``, the ``eval_samples`` of pretrain / sft / grpo) takes
it with :func:`stratified_subsample`, never as "the first N": sorted ids put whole groups
first (POPE's "pope-adversarial-*" before "pope-popular-*" before "pope-random-*",
saliency-r1-8k before vqa-hat), so the first N of real data is one POPE split or one source.

Strata are what the metrics average over: task x source dataset x POPE split x subset
(:func:`stratum_of`). Each stratum gets an EQUAL share of ``n`` (a stratum with fewer rows
keeps all of them and its unused share goes to the others: water-filling), because the
reported figure is the unweighted mean over strata (POPE's average over its three splits;
NSS only on the source with human maps). Within a stratum the share is split over the
labels (POPE's yes/no) in proportion to their counts (largest remainder), so the yes-ratio
of the data is kept. Rows of a stratum x label cell are drawn with a generator seeded by
``seed`` and the cell, after sorting by ``sample_id``: the result depends on the seed and
the rows only, not on their order or on other cells.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

STRATUM_COLUMNS = ("task", "source", "pope_split", "subset")
"""Columns whose values (together) name a row's stratum."""
COLUMNS = ("sample_id", "answer", *STRATUM_COLUMNS)
"""Columns :func:`stratified_subsample` reads."""


def stratum_of(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The stratum of a samples row: its task, source, POPE split and subset."""
    return tuple(row.get(column) for column in STRATUM_COLUMNS)


def label_of(row: Mapping[str, Any]) -> str | None:
    """The label shares are kept for: the yes/no answer of a POPE row, else none."""
    return str(row["answer"]).strip().lower() if row.get("task") == "pope" else None


def equal_shares(sizes: Mapping[Any, int], n: int) -> dict[Any, int]:
    """``n`` split equally over the strata, none above its size (water-filling).

    Strata are served from the smallest up (ties in key order); each takes its size or an
    equal part of what is left, so the shares sum to ``min(n, total)``.
    """
    order = sorted(sizes, key=lambda key: (sizes[key], repr(key)))
    shares, left = {}, min(n, sum(sizes.values()))
    for k, key in enumerate(order):
        shares[key] = min(sizes[key], left // (len(order) - k))
        left -= shares[key]
    return shares


def proportional_shares(counts: Mapping[Any, int], n: int) -> dict[Any, int]:
    """``n`` (<= total) split over the labels in proportion to their counts (largest
    remainder; ties to the larger label, then in key order)."""
    total = sum(counts.values())
    exact = {key: n * count / total for key, count in counts.items()}
    shares = {key: int(value) for key, value in exact.items()}
    order = sorted(counts, key=lambda key: (shares[key] - exact[key], -counts[key], repr(key)))
    for key in order[: n - sum(shares.values())]:
        shares[key] += 1
    return shares


def _cell_generator(seed: int, cell: tuple[Any, ...]) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(repr(cell).encode())])


def stratified_indices(rows: Sequence[Mapping[str, Any]], n: int | None, seed: int) -> list[int]:
    """Indices into ``rows`` of the subsample (see the module docstring), in ``sample_id``
    order; all rows when ``n`` is None or not smaller than their number."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["sample_id"])
    if n is None or n >= len(rows):
        return order
    if n < 0:
        raise ValueError(f"subsample size must be >= 0, got {n}")
    cells: dict[tuple[Any, ...], dict[Any, list[int]]] = {}
    for i in order:
        cells.setdefault(stratum_of(rows[i]), {}).setdefault(label_of(rows[i]), []).append(i)
    sizes = {key: sum(len(v) for v in labels.values()) for key, labels in cells.items()}
    chosen: list[int] = []
    for stratum, share in equal_shares(sizes, n).items():
        labels = cells[stratum]
        per_label = proportional_shares({k: len(v) for k, v in labels.items()}, share)
        for label, count in per_label.items():
            members = labels[label]
            picks = _cell_generator(seed, (*stratum, label)).permutation(len(members))[:count]
            chosen += [members[int(p)] for p in picks]
    return sorted(chosen, key=lambda i: rows[i]["sample_id"])


def stratified_subsample(table: pa.Table, n: int | None, seed: int) -> pa.Table:
    """The rows of a samples table chosen by :func:`stratified_indices`."""
    rows = table.select([c for c in COLUMNS if c in table.column_names]).to_pylist()
    return table.take(pa.array(stratified_indices(rows, n, seed), type=pa.int64()))


def stratum_counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{"task/source/pope_split/subset": n}`` of rows (for logs and metrics)."""
    counts: dict[str, int] = {}
    for row in rows:
        key = "/".join(str(v) for v in stratum_of(row) if v is not None)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
