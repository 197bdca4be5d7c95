"""The five tables of EXPERIMENTS.md from ``lookright experiment-summary``'s output.

    python experiments/experiment_tables.py results-experiment/summary

Reads ``answers_summary.parquet``, ``saliency_summary.parquet`` and ``effects.parquet``
(long format: one row per group x metric with mean, std, n and the bootstrap interval) and
prints Markdown: cells are ``mean ± std [lo, hi] (n)``, or ``mean (1)`` for a single seed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from lookright.report.experiment import format_cell

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


def effects_table(path: Path) -> str:
    rows = []
    for r in pq.read_table(path).to_pylist():
        label = r["metric"] + (f" ({r['method']})" if r["method"] else "")
        rows.append(
            [
                f"{r['source']} − {r['reference']}",
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
    print("\n### Paired effects\n")
    print(effects_table(args.summary / "effects.parquet"))
    print("\n### Q3: decoding strategies (SFT model)\n")
    print(decode_table(answers, args.model))
    for source in ("sft", "grpo-acc+fmt"):
        print(f"\n### Q4: faithfulness ({source})\n")
        print(method_table(saliency, args.model, source, ("alignment_mean", *FAITHFULNESS)))
        print(f"\n### Q5: human alignment ({source})\n")
        print(method_table(saliency, args.model, source, HUMAN))


if __name__ == "__main__":
    main()
