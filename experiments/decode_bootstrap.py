"""Question 3 with intervals: POPE F1 and CHAIR of each decoding strategy, bootstrapped over
the test prompts, and each strategy's paired difference to greedy on the same prompts.

    python experiments/decode_bootstrap.py results-experiment tiny-qwen2.5-vl sft

Decoding is deterministic for greedy/beam/locore, so seeds give no spread; the uncertainty
is which prompts were drawn. Reads ``decode/<model>/<source>/<strategy>/answers.parquet``
(POPE answers, parsed with :func:`lookright.metrics.pope.parse_yes_no`) and
``eval/<model>/<source>/<strategy>/captions.parquet`` (per-caption CHAIR counts); resamples
prompts with replacement (2000 times, numpy rng seed 0) and prints Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from lookright.metrics.pope import parse_yes_no

RESAMPLES = 2000


def pope_arrays(path: Path) -> dict[str, tuple[bool, bool]]:
    """sample_id -> (predicted yes, label yes) of the POPE rows of an answers table."""
    rows = pq.read_table(path, columns=["sample_id", "task", "answer", "reference"]).to_pylist()
    return {
        r["sample_id"]: (parse_yes_no(r["answer"]) == "yes", r["reference"].lower() == "yes")
        for r in rows
        if r["task"] == "pope"
    }


def f1(pred: np.ndarray, label: np.ndarray) -> float:
    tp = float(np.sum(pred & label))
    fp, fn = float(np.sum(pred & ~label)), float(np.sum(~pred & label))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def chair_arrays(path: Path) -> dict[str, tuple[int, int]]:
    """sample_id -> (hallucinated mentions, mentions) of each caption."""
    rows = pq.read_table(path).to_pylist()
    return {r["sample_id"]: (r["n_hallucinated_mentions"], r["n_mentions"]) for r in rows}


def chair_s(h: np.ndarray, m: np.ndarray) -> float:
    return float(np.mean(h > 0)) if len(h) else 0.0


def chair_i(h: np.ndarray, m: np.ndarray) -> float:
    return float(h.sum() / m.sum()) if m.sum() else 0.0


def interval(values: list[float]) -> str:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return f"[{lo:.3f}, {hi:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("model")
    parser.add_argument("source")
    args = parser.parse_args()
    decode = args.results / "decode" / args.model / args.source
    evals = args.results / "eval" / args.model / args.source
    strategies = sorted(p.name for p in decode.iterdir() if (p / "answers.parquet").is_file())
    pope = {s: pope_arrays(decode / s / "answers.parquet") for s in strategies}
    chair = {s: chair_arrays(evals / s / "captions.parquet") for s in strategies}
    pope_ids = sorted(set.intersection(*(set(p) for p in pope.values())))
    cap_ids = sorted(set.intersection(*(set(c) for c in chair.values())))
    rng = np.random.default_rng(0)
    pope_draws = rng.integers(0, len(pope_ids), (RESAMPLES, len(pope_ids)))
    cap_draws = rng.integers(0, len(cap_ids), (RESAMPLES, len(cap_ids)))

    def arrays(s):
        p = np.array([pope[s][i] for i in pope_ids])
        c = np.array([chair[s][i] for i in cap_ids])
        return p[:, 0], p[:, 1], c[:, 0], c[:, 1]

    base = arrays("greedy")
    print(
        f"{len(pope_ids)} POPE questions, {len(cap_ids)} captions; 95% bootstrap intervals "
        f"({RESAMPLES} resamples of the prompts); Δ = strategy − greedy on the same prompts.\n"
    )
    print("| strategy | POPE F1 | Δ F1 vs greedy | CHAIRs | Δ CHAIRs | CHAIRi | Δ CHAIRi |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in strategies:
        pred, label, h, m = arrays(s)
        cells = []
        for metric, own, ref, draws in (
            (f1, (pred, label), (base[0], base[1]), pope_draws),
            (chair_s, (h, m), (base[2], base[3]), cap_draws),
            (chair_i, (h, m), (base[2], base[3]), cap_draws),
        ):
            value = metric(*own)
            boot = [metric(*(a[d] for a in own)) for d in draws]
            diff = [metric(*(a[d] for a in own)) - metric(*(a[d] for a in ref)) for d in draws]
            delta = value - metric(*ref)
            cells += [f"{value:.3f} {interval(boot)}", f"{delta:+.3f} {interval(diff)}"]
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
