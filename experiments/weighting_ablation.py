"""Token-weighting ablation on finished embedded-default runs (issue 17, docs/methods.md#token_weighting).

    python experiments/weighting_ablation.py --runs results results-seed1 --out results-weighting

For each ``--runs`` folder (a finished ``make run`` / ``make run-seed1``), runs the
``evaluate-saliency`` stage on that run's SFT model with every method of the registry,
``occlusion`` included, and all four token weightings (uniform, answer, evidence, occlusion),
with deletion/insertion of every weighted map; the stage config is the run's own
``config/config.yaml`` section (as its rule builds it) plus those overrides. Then prints one
Markdown table: per method and weighting, NSS, alignment and Spearman agreement with occlusion,
as the mean over runs with each run's value. Nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
WEIGHTINGS = ["uniform", "answer", "evidence", "occlusion"]
COLUMNS = (
    ("NSS", "nss_mean"),
    ("alignment", "alignment_mean"),
    ("occl. Spearman", "occ_spearman_mean"),
)


def stage_config(config: dict, model: str, seed: int) -> str:
    from lookright.saliency.api import available_methods
    from lookright.stages import branches

    chosen = json.loads(branches.evaluate_saliency_config(config, model))
    evaluate = chosen["evaluate"]
    evaluate["methods"] = list(available_methods())
    evaluate["token_weightings"] = WEIGHTINGS
    evaluate["faithfulness"]["variants"] = True
    chosen["seed"] = seed
    return json.dumps(chosen)


def evaluate(run: Path, out: Path, config: dict, model: str) -> Path:
    sft = json.loads((run / "sft" / model / "run.json").read_text())
    from mlflow import MlflowClient

    params = MlflowClient(sft["tracking_uri"]).get_run(sft["run_id"]).data.params
    seed = int(json.loads(params.get("seed", "0")))
    target = out / run.name
    if not (target / "summary.parquet").is_file():
        command = [
            sys.executable, "-m", "lookright.cli", "evaluate-saliency",
            "--config-json", stage_config(config, model, seed),
            "--data", str(run / "data"), "--model-dir", str(run / "sft" / model / "model"),
            "--out", str(target), "--results-dir", str(out / "store"),
        ]  # fmt: skip
        subprocess.run(command, check=True)
    return target


def table(folders: list[Path]) -> str:
    rows = [
        {r["method"]: r for r in pq.read_table(f / "summary.parquet").to_pylist()} for f in folders
    ]
    methods = [m for m in rows[0] if "." not in m]
    header = "| method | weighting | " + " | ".join(label for label, _ in COLUMNS) + " |"
    lines = [header, "| --- | --- |" + " --- |" * len(COLUMNS)]
    for method in methods:
        for weighting in WEIGHTINGS:
            name = method if weighting == "uniform" else f"{method}.{weighting}"
            if name not in rows[0]:
                continue
            cells = []
            for _, key in COLUMNS:
                values = [r[name].get(key) for r in rows if name in r]
                known = [v for v in values if v is not None]
                mean = sum(known) / len(known) if known else None
                each = ", ".join("n/a" if v is None else f"{v:.2f}" for v in values)
                cells.append("n/a" if mean is None else f"{mean:.2f} ({each})")
            lines.append(f"| {method} | {weighting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results-weighting"))
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    model = config["run_models"][0]
    folders = [evaluate(run, args.out, config, model) for run in args.runs]
    print(f"runs: {', '.join(str(r) for r in args.runs)} (values per run in brackets)")
    print(table(folders))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
