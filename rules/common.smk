# Helpers shared by the rules: result paths, per-stage config as JSON, code fingerprints.
import hashlib
import json
import os
import shlex
from pathlib import Path

RESULTS = config.get("results_dir", "results")
LOGS = config.get("logs_dir", "logs")
PACKAGE = Path(workflow.basedir) / "src" / "lookright"
# Where every stage logs: config tracking.uri, else $MLFLOW_TRACKING_URI, else a SQLite file
# in the results folder. Handed to the jobs through their shell environment (local and SLURM
# jobs alike), not as a param, so moving the store never reruns a stage.
TRACKING_URI = (
    config["tracking"].get("uri")
    or os.environ.get("MLFLOW_TRACKING_URI")
    or f"sqlite:///{os.path.abspath(RESULTS)}/mlflow.db"
)
EXPERIMENT = config["tracking"].get("experiment", "lookright")
shell.prefix(
    "set -euo pipefail; "
    f"export MLFLOW_TRACKING_URI={shlex.quote(TRACKING_URI)} "
    f"MLFLOW_EXPERIMENT_NAME={shlex.quote(EXPERIMENT)}; "
)


def code_fingerprint(*modules):
    """SHA-256 over the given src/lookright modules (files or packages), first 16 hex.

    Snakemake's code trigger does not see edits inside an imported package; each rule takes
    this as a param, so editing the code a stage uses reruns that stage and only those.
    """
    digest = hashlib.sha256()
    for module in modules:
        path = PACKAGE / module
        files = (
            sorted(path.rglob("*.py"))
            if path.is_dir()
            else [path.parent / f"{path.name}.py"]
        )
        for file in files:
            digest.update(str(file.relative_to(PACKAGE)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


CORE_CODE = ("cli", "config", "io", "tracking", "stage")
TRAIN_CODE = (*CORE_CODE, "models", "train/common", "train/datasets", "eval/accuracy")


def stage_config(*sections):
    """The config sections a stage reads, as canonical JSON (its rerun trigger)."""
    chosen = {name: config[name] for name in ("seed", *sections)}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def model_config(model):
    """One entry of ``models`` with its name, as the ``model`` section of a stage."""
    if model not in config["models"]:
        raise ValueError(
            f"model {model!r} is not defined under 'models'; defined: {sorted(config['models'])}"
        )
    return {**config["models"][model], "name": model}


def stage_config_for_model(model, *sections):
    chosen = {name: config[name] for name in ("seed", *sections)}
    chosen["model"] = model_config(model)
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def get_run_models():
    return list(config["run_models"])


def get_base_model(wildcards):
    """The folder SFT starts from: the pretrain output, or a real checkpoint path/hub id."""
    base = config["models"][wildcards.model]["base"]
    if base == "pretrain":
        return f"{RESULTS}/pretrain/{wildcards.model}/model/config.json"
    return []


def get_base_argument(wildcards):
    base = config["models"][wildcards.model]["base"]
    return f"{RESULTS}/pretrain/{wildcards.model}/model" if base == "pretrain" else base


def get_final_outputs():
    outputs = [f"{RESULTS}/data/samples.parquet"]
    for model in get_run_models():
        outputs.append(f"{RESULTS}/sft/{model}/model/config.json")
    return outputs


def get_base_run(wildcards):
    """``--upstream pretrain=...`` when the base comes from the pretrain stage."""
    if config["models"][wildcards.model]["base"] == "pretrain":
        return f"--upstream pretrain={RESULTS}/pretrain/{wildcards.model}/run.json"
    return ""


def get_debug_flags(rule_name):
    """``--fail-for-test`` for rules listed in ``debug.fail_rules`` (failure/resume tests)."""
    failing = config.get("debug", {}).get("fail_rules", [])
    return "--fail-for-test" if rule_name in failing else ""
