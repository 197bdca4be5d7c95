"""The tables of EXPERIMENTS.md from ``lookright experiment-summary``'s output.

    python experiments/experiment_tables.py results-experiment/summary

Reads ``answers_summary.parquet``, ``saliency_summary.parquet``, ``effects.parquet`` and
``saliency_by_seed.parquet`` (long format: one row per group x metric with mean, std, n and
the bootstrap interval) and prints Markdown: cells are ``mean ± std [lo, hi] (n)``, or
``mean (1)`` for a single seed. Q6 (token weighting) pairs each ``<method>.<weighting>`` map
with the same method's uniform map, evaluation by evaluation, over the seeds of one arm.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from lookright.decoding.params import STRATEGIES
from lookright.report.experiment import format_cell, paired
from lookright.report.statistics import describe, finite

MODEL_ARMS = (
    "sft",
    "grpo-acc",
    "grpo-acc+fmt",
    "grpo-acc+fmt+sal",
    "grpo-acc+fmt+sal-cot",
    "grpo-acc+fmt+sayo",
    "grpo-acc+fmt+sayo-rho0.2",
    "grpo-acc+fmt+sayo-rho1.0",
)
SUBSETS = ("vqa_accuracy", "vqa_accuracy/bias_conflicting", "vqa_accuracy/bias_aligned")
THOUGHT = (
    "thought_location",
    "thought_color",
    "thought_color/bias_conflicting",
    "thought_answer_follows",
    "thought_cot_share",
)
ALIGNMENT_METHODS = ("logit_decomposition_centered", "cot_bottleneck")
DECODE_METRICS = (
    "pope_accuracy",
    "pope_f1",
    "pope_yes_ratio",
    "chair_s",
    "chair_i",
    "chair_recall",
    "caption_length",
    "latency_caption_s",
)
FAITHFULNESS = ("del_5", "del_15", "del_30", "ins_30", "del_auc", "ins_auc")
HUMAN = ("nss_mean", "spearman_mean")
OCCLUSION = ("occ_spearman_mean", "occ_pearson_mean", "nss_mean", "del_auc", "ins_auc")
WEIGHTINGS = ("answer", "evidence", "occlusion")


def _index(path: Path, keys: Sequence[str]) -> dict[tuple, dict]:
    table = pq.read_table(path).to_pylist()
    return {(*(row[k] for k in keys), row["metric"]): row for row in table}


def _cell(index: dict, key: tuple) -> str:
    row = index.get(key)
    return "—" if row is None else format_cell(row)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def training_table(answers: dict, saliency: dict, model: str, arms: Sequence[str]) -> str:
    """Q1/Q2: VQA accuracy overall and on the bias subsets, alignment of two maps, per arm."""
    header = ["arm", *SUBSETS, *(f"alignment: {m}" for m in ALIGNMENT_METHODS)]
    rows = []
    for arm in arms:
        strategy = "greedy" if arm == "sft" else None
        cells = [_cell(answers, (model, arm, strategy, metric)) for metric in SUBSETS]
        cells += [_cell(saliency, (model, arm, m, "alignment_mean")) for m in ALIGNMENT_METHODS]
        rows.append([arm, *cells])
    return _markdown(header, rows)


def thought_table(answers: dict, model: str, arms: Sequence[str]) -> str:
    """Q1: thought faithfulness per arm (docs/methods.md#thought_faithfulness)."""
    rows = []
    for arm in arms:
        strategy = "greedy" if arm == "sft" else None
        rows.append([arm, *(_cell(answers, (model, arm, strategy, m)) for m in THOUGHT)])
    return _markdown(["arm", *THOUGHT], rows)


def decode_table(answers: dict, model: str) -> str:
    """Q3: POPE and CHAIR of each decoding strategy on the SFT model."""
    strategies = sorted({k[2] for k in answers if k[1] == "sft" and k[2]})
    rows = [
        [s, *(_cell(answers, (model, "sft", s, metric)) for metric in DECODE_METRICS)]
        for s in strategies
    ]
    return _markdown(["strategy", *DECODE_METRICS], rows)


def method_table(saliency: dict, model: str, source: str, metrics: Sequence[str]) -> str:
    """Q4/Q5: one row per saliency method of one source."""
    methods = sorted({k[2] for k in saliency if k[1] == source})
    rows = [
        [m, *(_cell(saliency, (model, source, m, metric)) for metric in metrics)] for m in methods
    ]
    return _markdown(["method", *metrics], rows)


def weighting_table(by_seed: Path, model: str, source: str, metric: str) -> str:
    """Q6: ``<method>.<weighting>`` − ``<method>`` (uniform) of ``metric``, paired per
    evaluation over the seeds of ``source``; the uniform value's mean in the first column."""
    values = {  # (seed, model, map) -> value, the keys report.experiment.paired pairs on
        (r["seed"], model, r["method"]): float(r[metric])
        for r in pq.read_table(by_seed).to_pylist()
        if r["model"] == model and r["source"] == source and finite([r.get(metric)]).size
    }
    names = {name for _, _, name in values}
    methods = sorted(n for n in names if "." not in n and n not in ("occlusion", "random"))
    rows = []
    for method in methods:
        uniform = [v for (_, _, name), v in values.items() if name == method]
        cells = [format_cell(describe(uniform)) if uniform else "—"]
        for weighting in WEIGHTINGS:
            _, diffs = paired(values, model, f"{method}.{weighting}", method)
            positive = sum(d > 0 for d in diffs)
            cells.append(
                f"{format_cell(describe(diffs))} {positive}/{len(diffs)}" if diffs else "—"
            )
        rows.append([method, *cells])
    header = ["method", f"{metric} (uniform)", *(f"Δ {w} − uniform" for w in WEIGHTINGS)]
    return _markdown(header, rows)


def effects_table(path: Path) -> str:
    rows = []
    for r in pq.read_table(path).to_pylist():
        label = r["metric"] + (f" ({r['method']})" if r["method"] else "")
        by_strategy = r["reference"] in STRATEGIES  # strategy − reference strategy, one source
        rows.append(
            [
                f"{r['strategy']} − {r['reference']} ({r['source']})"
                if by_strategy
                else f"{r['source']} − {r['reference']}",
                label,
                format_cell(r),
                f"{r['n_positive']}/{r['n']}",
            ]
        )
    return _markdown(["arms", "metric", "paired difference", "seeds > 0"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summary", type=Path, help="experiment-summary output folder")
    parser.add_argument("--model", default="tiny-qwen2.5-vl")
    args = parser.parse_args()
    answers = _index(args.summary / "answers_summary.parquet", ("model", "source", "strategy"))
    saliency = _index(args.summary / "saliency_summary.parquet", ("model", "source", "method"))
    arms = [a for a in MODEL_ARMS if any(k[1] == a for k in saliency)]
    print("### Q1/Q2: GRPO arms\n")
    print(training_table(answers, saliency, args.model, arms))
    print("\n### Q1: thought faithfulness\n")
    print(thought_table(answers, args.model, arms))
    print("\n### Paired effects\n")
    print(effects_table(args.summary / "effects.parquet"))
    print("\n### Q3: decoding strategies (SFT model)\n")
    print(decode_table(answers, args.model))
    for source in ("sft", "grpo-acc+fmt"):
        print(f"\n### Q4/Q5: agreement with occlusion, human maps, faithfulness ({source})\n")
        print(method_table(saliency, args.model, source, OCCLUSION))
        print(f"\n### Q4: deletion / insertion ({source})\n")
        print(method_table(saliency, args.model, source, ("alignment_mean", *FAITHFULNESS)))
    by_seed = args.summary / "saliency_by_seed.parquet"
    for source in ("sft", "grpo-acc+fmt"):
        for metric in ("occ_spearman_mean", "nss_mean", "del_auc"):
            print(f"\n### Q6: token weighting, {metric} ({source})\n")
            print(weighting_table(by_seed, args.model, source, metric))


if __name__ == "__main__":
    main()
