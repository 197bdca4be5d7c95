"""PNG plots of the report (matplotlib's Agg renderer, no pyplot state).

* Deletion / insertion curves, one file per model x source: two panels (deletion,
  insertion), one line per saliency method, a band of +-1 std when known.
* GRPO reward curves, one file per model x reward set: the mean of the weighted total reward
  and of each ``reward_<name>`` column per step, smoothed by a trailing moving average
  (raw means drawn faintly behind); and per model with several reward sets, one panel per
  reward with one line per reward set (the ablation at a glance).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lookright.report.collect import GrpoRun
from lookright.report.files import atomic_write_bytes, safe_name

KINDS = ("deletion", "insertion")


@dataclass
class Plot:
    """A PNG written by this module."""

    title: str
    path: Path


def save_png(figure: Figure, path: Path) -> Path:
    """Render ``figure`` to PNG bytes and write them atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def _groups(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


# -- deletion / insertion -----------------------------------------------------------------


def _curve_panel(ax, rows: list[dict], kind: str) -> None:
    for (method,), points in _groups([r for r in rows if r["kind"] == kind], ("method",)).items():
        points = sorted(points, key=lambda r: r["fraction"])
        x = np.array([100 * r["fraction"] for r in points], dtype=float)
        y = np.array([np.nan if r["score_mean"] is None else r["score_mean"] for r in points])
        (line,) = ax.plot(x, y, marker="o", markersize=3, label=method)
        std = [r.get("score_std") for r in points]
        if all(s is not None for s in std):
            band = np.asarray(std, dtype=float)
            ax.fill_between(x, y - band, y + band, color=line.get_color(), alpha=0.12)
    verb = "removed" if kind == "deletion" else "restored"
    ax.set(title=kind, xlabel=f"% of patches {verb}", ylabel="score (% of original p(answer))")
    ax.grid(alpha=0.3)


def faithfulness_plots(curves: pa.Table | None, out_dir: str | Path) -> list[Plot]:
    """One deletion/insertion figure per model x source in ``out_dir``."""
    if curves is None or len(curves) == 0:
        return []
    plots = []
    for (model, source), rows in _groups(curves.to_pylist(), ("model", "source")).items():
        figure = Figure(figsize=(10, 4), layout="constrained")
        axes = figure.subplots(1, 2)
        for ax, kind in zip(axes, KINDS, strict=True):
            _curve_panel(ax, rows, kind)
        axes[1].legend(fontsize=7, loc="best")
        title = f"Deletion / insertion: {model} / {source}"
        figure.suptitle(title)
        path = Path(out_dir) / f"{safe_name('faithfulness', model, source)}.png"
        plots.append(Plot(title, save_png(figure, path)))
    return plots


# -- GRPO rewards -------------------------------------------------------------------------


def reward_columns(table: pa.Table) -> list[str]:
    """``reward`` (the weighted total) first, then every ``reward_<name>`` column present."""
    total = ["reward"] if "reward" in table.column_names else []
    return total + [c for c in table.column_names if c.startswith("reward_")]


def reward_curves(samples: pa.Table) -> pa.Table:
    """Mean of each reward column per step (nulls skipped; all-null step -> null), by step."""
    columns = reward_columns(samples)
    table = pa.table({"step": samples["step"]})
    for name in columns:
        table = table.append_column(name, samples[name].cast(pa.float64()))
    grouped = table.group_by("step").aggregate([(c, "mean") for c in columns])
    grouped = grouped.rename_columns([c.removesuffix("_mean") for c in grouped.column_names])
    return grouped.select(["step", *columns]).sort_by("step")


def smooth(values: Sequence[float | None], window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points, ignoring missing values (NaN)."""
    raw = np.array([np.nan if v is None else v for v in values], dtype=float)
    out = np.full(raw.shape, np.nan)
    for i in range(raw.size):
        chunk = raw[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        if chunk.size:
            out[i] = chunk.mean()
    return out


def reward_label(column: str) -> str:
    return "total (weighted)" if column == "reward" else column.removeprefix("reward_")


def _reward_panel(ax, curves: pa.Table, column: str, window: int, name: str) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    steps = np.asarray(curves["step"].to_pylist(), dtype=float)
    values = curves[column].to_pylist()
    if window > 1:
        raw = np.array([np.nan if v is None else v for v in values], dtype=float)
        (line,) = ax.plot(steps, smooth(values, window), label=name)
        ax.plot(steps, raw, color=line.get_color(), alpha=0.25, linewidth=0.8)
    else:
        ax.plot(steps, smooth(values, 1), label=name)


def reward_plots(runs: list[GrpoRun], window: int, out_dir: str | Path) -> list[Plot]:
    """One reward-curve figure per GRPO branch, plus one comparison figure per model."""
    plots = []
    curves = {(run.model, run.reward_set): reward_curves(run.samples) for run in runs}
    for (model, reward_set), table in curves.items():
        figure = Figure(figsize=(7, 4), layout="constrained")
        ax = figure.subplots()
        for column in reward_columns(table):
            _reward_panel(ax, table, column, window, reward_label(column))
        smoothing = f", {window}-step moving average" if window > 1 else ""
        title = f"GRPO rewards: {model} / {reward_set}"
        ax.set(title=title, xlabel="step", ylabel=f"mean reward{smoothing}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = Path(out_dir) / f"{safe_name('grpo_rewards', model, reward_set)}.png"
        plots.append(Plot(title, save_png(figure, path)))
    for model in sorted({m for m, _ in curves}):
        tables = {r: t for (m, r), t in curves.items() if m == model}
        if len(tables) >= 2:
            plots.append(_comparison(model, tables, window, out_dir))
    return plots


def _comparison(model: str, tables: dict[str, pa.Table], window: int, out_dir) -> Plot:
    columns = list(dict.fromkeys(c for t in tables.values() for c in reward_columns(t)))
    figure = Figure(figsize=(4 * len(columns), 3.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(columns)))
    for ax, column in zip(axes, columns, strict=True):
        for reward_set, table in tables.items():
            if column in table.column_names:
                _reward_panel(ax, table, column, window, reward_set)
        ax.set(title=reward_label(column), xlabel="step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = f"GRPO reward sets compared: {model}"
    figure.suptitle(title)
    path = Path(out_dir) / f"{safe_name('grpo_compare', model)}.png"
    return Plot(title, save_png(figure, path))
