"""Screenshots of the MLflow UI on a finished run's store, taken with headless Chromium.

    python experiments/mlflow_screenshots.py --results results --out docs/img

Starts ``mlflow ui`` on ``<results>/mlflow.db``, then saves what a researcher sees:

- ``mlflow-runs.png``: the ``lookright`` experiment's runs table, opened with
  ``?workflowType=machine_learning`` (MLflow 3.17 keeps a per-browser "GenAI | Model training"
  switch, GenAI by default, and a direct link to an experiment in GenAI mode lands on the
  traces overview whatever the experiment's kind);
- ``mlflow-compare.png``: the compare view of the ``evaluate_answers`` runs of one model and
  strategy (``greedy``), one column per GRPO reward set, ablation params lined up.

Needs ``chromium`` on PATH (or ``--chromium``). Used for the MLflow issue's closing note and
docs; nothing in the pipeline depends on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from mlflow import MlflowClient

MODEL_TRAINING = "workflowType=machine_learning"


def wait_for(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer at {url} within {seconds:.0f} s")


def screenshot(chromium: str, url: str, path: Path, size: str = "1600,1000") -> None:
    subprocess.run(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={size}", "--virtual-time-budget=25000", f"--screenshot={path}", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    print(f"{path}: {url}")


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])}
    )
    return f"{base}/#/compare-runs?{query}&{MODEL_TRAINING}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--port", type=int, default=5057)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    uri = f"sqlite:///{(args.results / 'mlflow.db').resolve()}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lookright")
    runs = client.search_runs(
        [experiment.experiment_id],
        "tags.`lookright.stages.base` = 'evaluate_answers' and params.strategy = 'greedy'",
        max_results=100,
    )
    if not runs:
        raise SystemExit(f"no evaluate_answers runs with strategy greedy in {uri}")
    model = runs[0].data.params["model"]
    chosen = [r.info.run_id for r in runs if r.data.params.get("model") == model]
    args.out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
         "--port", str(args.port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(f"{base}/health")
        runs_url = f"{base}/#/experiments/{experiment.experiment_id}?{MODEL_TRAINING}"
        screenshot(args.chromium, runs_url, args.out / "mlflow-runs.png")
        screenshot(args.chromium, compare_url(base, experiment.experiment_id, chosen),
                   args.out / "mlflow-compare.png", size="1600,1400")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
