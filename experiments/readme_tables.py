"""Write the README's measured tables from finished `make run` results: nothing typed by hand.

    python experiments/readme_tables.py --runs results results-seed1 --readme README.md

Each ``--runs`` folder is one finished run of the embedded default (``make run`` = seed 0 into
``results/``, ``make run-seed1`` = seed 1 into ``results-seed1/``). The script reads the
report tables (``report/answers.parquet``, ``report/saliency.parquet``), the training
metrics, Snakemake's per-rule benchmarks and the MLflow store of each folder, and replaces the
text between ``<!-- readme-tables:NAME -->`` and ``<!-- /readme-tables:NAME -->`` in the README
for NAME in ``run`` (wall time, per-stage times, held-out accuracy), ``summary`` (the summary
table, one value per seed and the largest difference between seeds) and ``provenance``.
With ``--timing results-timing`` (``make run-timing``: the same DAG from nothing on an idle
machine, with the load average before and after), also ``timing``: its wall time and the time
of each stage, per job and summed.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

SUMMARY_COLUMNS = (
    ("VQA acc.", "answers", "vqa_accuracy", "greedy"),
    ("POPE F1 greedy", "answers", "pope_f1", "greedy"),
    ("POPE F1 sgrs+locore", "answers", "pope_f1", "sgrs+locore"),
    ("CHAIRs greedy", "answers", "chair_s", "greedy"),
    ("CHAIRi greedy", "answers", "chair_i", "greedy"),
    ("alignment: centred logit decomposition", "saliency", "logit_decomposition_centered", None),
    ("alignment: CoT bottleneck", "saliency", "cot_bottleneck", None),
)
STAGES = ("prepare_data", "pretrain", "sft", "grpo", "decode", "evaluate_saliency",
          "evaluate_answers", "report")  # fmt: skip


def summary_values(results: Path) -> dict[str, dict[str, float | None]]:
    """``{source: {column label: value}}`` of one run's report tables."""
    answers = pq.read_table(results / "report" / "answers.parquet").to_pylist()
    saliency = pq.read_table(results / "report" / "saliency.parquet").to_pylist()
    values: dict[str, dict[str, float | None]] = defaultdict(dict)
    for label, table, key, strategy in SUMMARY_COLUMNS:
        if table == "answers":
            for row in answers:
                if row["strategy"] == strategy:
                    values[row["source"]][label] = row.get(key)
        else:
            for row in saliency:
                if row["method"] == key:
                    values[row["source"]][label] = row.get("alignment_mean")
    return dict(values)


def _cell(values: list[float | None]) -> str:
    return " / ".join("n/a" if v is None else f"{v:.3f}" for v in values)


def summary_table(runs: list[Path]) -> str:
    per_run = [summary_values(r) for r in runs]
    sources = sorted({s for values in per_run for s in values}, key=lambda s: (s != "sft", s))
    labels = [c[0] for c in SUMMARY_COLUMNS]
    lines = [
        "| model (source) | " + " | ".join(labels) + " |",
        "| --- |" + " --- |" * len(labels),
    ]
    spread: dict[str, float] = {}
    for source in sources:
        cells = []
        for label in labels:
            values = [v.get(source, {}).get(label) for v in per_run]
            cells.append(_cell(values))
            known = [v for v in values if v is not None]
            if len(known) == len(values) > 1:
                spread[label] = max(spread.get(label, 0.0), max(known) - min(known))
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    if len(runs) > 1:
        lines.append(
            "| largest seed-to-seed difference | "
            + " | ".join(f"{spread[label]:.3f}" if label in spread else "n/a" for label in labels)
            + " |"
        )
    return "\n".join(lines)


def benchmark_seconds(results: Path) -> dict[str, list[float]]:
    """``{rule: [wall seconds per job]}`` from Snakemake's ``benchmark:`` files."""
    seconds: dict[str, list[float]] = defaultdict(list)
    rss: list[float] = []
    for path in sorted((results / "benchmarks").rglob("*.tsv")):
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        rule = path.relative_to(results / "benchmarks").parts[0].removesuffix(".tsv")
        if rule == "eval":  # eval/<model>/<source>/saliency.tsv or .../<strategy>.tsv
            rule = "evaluate_saliency" if path.stem == "saliency" else "evaluate_answers"
        seconds[rule].append(float(row["s"]))
        if row.get("max_rss") not in (None, "", "NA", "-"):
            rss.append(float(row["max_rss"]))
    seconds["_max_rss_mb"] = [max(rss)] if rss else []
    return dict(seconds)


def mlflow_runs(results: Path) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{(results / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("lookright")
    return client.search_runs([experiment.experiment_id], max_results=5000)


def wall_time(runs: list[Any]) -> tuple[int, float]:
    """(jobs, seconds from the first run's start to the last run's end) of the store's main
    ``snakemake`` invocation (the largest group of runs by tag ``lookright.invocation``), so
    a stage run by hand into the same store later does not stretch the wall time."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        groups[run.data.tags.get("lookright.invocation", "")].append(run)
    runs = max(groups.values(), key=len)
    start = min(r.info.start_time for r in runs)
    end = max(r.info.end_time or r.info.start_time for r in runs)
    return len(runs), (end - start) / 1000.0


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


def held_out(results: Path, stage: str) -> dict[str, float]:
    folder = next((results / stage).iterdir())
    return json.loads((folder / "metrics.json").read_text())


def run_table(runs: list[Path]) -> str:
    lines = ["| what | " + " | ".join(f"seed {i}" for i in range(len(runs))) + " |",
             "| --- |" + " --- |" * len(runs)]  # fmt: skip
    walls, per_stage, accuracy = [], defaultdict(list), defaultdict(list)
    for results in runs:
        jobs, seconds = wall_time(mlflow_runs(results))
        bench = benchmark_seconds(results)
        walls.append(f"{jobs} jobs, **{_minutes(seconds)}** wall, largest max RSS "
                     f"{bench['_max_rss_mb'][0] / 1024:.1f} GB" if bench["_max_rss_mb"] else
                     f"{jobs} jobs, **{_minutes(seconds)}** wall")  # fmt: skip
        for stage in STAGES:
            times = bench.get(stage, [])
            per_stage[stage].append(
                f"{statistics.mean(times):.0f} s x {len(times)}" if times else "n/a"
            )
        pretrain, sft = held_out(results, "pretrain"), held_out(results, "sft")
        accuracy["pretrain: held-out VQA accuracy"].append(f"{pretrain['val_vqa_accuracy']:.3f}")
        accuracy["sft: held-out VQA accuracy"].append(f"{sft['val_vqa_accuracy']:.3f}")
        accuracy["sft: format rate"].append(f"{sft['val_format_rate']:.3f}")
    lines.append("| the whole DAG | " + " | ".join(walls) + " |")
    for stage, cells in per_stage.items():
        lines.append(f"| {stage} (mean per job) | " + " | ".join(cells) + " |")
    for name, cells in accuracy.items():
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def timing_table(results: Path) -> str:
    """The ``timing`` block: one run's wall time and each stage's job times."""
    found = mlflow_runs(results)
    jobs, seconds = wall_time(found)
    bench = benchmark_seconds(results)
    commits = sorted({r.data.tags.get("lookright.git_commit", "?")[:7] for r in found})
    load = [
        (results / f"loadavg-{when}.txt").read_text().split()[:3]
        if (results / f"loadavg-{when}.txt").is_file()
        else ["n/a"] * 3
        for when in ("before", "after")
    ]
    lines = [
        f"`make run-timing` (`{results}/`, code {', '.join(commits)}, {_cpu_name()}; load "
        f"average before {' / '.join(load[0])}, after {' / '.join(load[1])} (1/5/15 min)): "
        f"**{_minutes(seconds)}** wall for {jobs} jobs.",
        "",
        "| stage | jobs | mean per job (s) | sum over jobs (s) |",
        "| --- | --- | --- | --- |",
    ]
    for stage in STAGES:
        times = bench.get(stage, [])
        if times:
            lines.append(
                f"| {stage} | {len(times)} | {statistics.mean(times):.0f} | {sum(times):.0f} |"
            )
    return "\n".join(lines)


def provenance(runs: list[Path]) -> str:
    lines = []
    cpu = _cpu_name()
    for index, results in enumerate(runs):
        found = mlflow_runs(results)
        report = next(r for r in found if r.data.tags.get("lookright.stages.base") == "report")
        commits = sorted({r.data.tags.get("lookright.git_commit", "?")[:7] for r in found})
        seed = json.loads(
            next(
                r for r in found if r.data.tags.get("lookright.stages.base") == "sft"
            ).data.params.get("seed", "null")
        )
        lines.append(
            f"- seed {index}: `{results}/` (config seed {seed}), code {', '.join(commits)}, "
            f"report run `{report.info.run_id}`"
        )
    lines.append(f"- machine: {cpu}, Python {platform.python_version()}")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = re.search(r"model name\s*:\s*(.+)", text)
    cores = len(re.findall(r"^processor\s*:", text, re.M))
    return f"{name.group(1).strip() if name else platform.machine()}, {cores} cores"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(
        rf"(<!-- readme-tables:{name} -->\n).*?(\n<!-- /readme-tables:{name} -->)", re.S
    )
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- readme-tables:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--timing", type=Path, help="a `make run-timing` results folder")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    if args.timing is not None:
        text = replace_block(text, "timing", timing_table(args.timing))
    text = replace_block(text, "run", run_table(args.runs))
    text = replace_block(text, "summary", summary_table(args.runs))
    text = replace_block(text, "provenance", provenance(args.runs))
    args.readme.write_text(text)
    print(f"{args.readme}: tables from {', '.join(map(str, args.runs))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
