# Helpers shared by the rules: result paths, per-stage config as JSON, code fingerprints.
import hashlib
import json
from pathlib import Path

RESULTS = config.get("results_dir", "results")
LOGS = config.get("logs_dir", "logs")
PACKAGE = Path(workflow.basedir) / "src" / "lookright"
TRACKING_ARGS = (
    f"--tracking-uri {config['tracking']['uri']}" if config["tracking"].get("uri") else ""
) + f" --experiment {config['tracking'].get('experiment', 'lookright')}"


def code_fingerprint(*modules):
    """SHA-256 over the given src/lookright modules (files or packages), first 16 hex.

    Snakemake's code trigger does not see edits inside an imported package; each rule takes
    this as a param, so editing the code a stage uses reruns that stage and only those.
    """
    digest = hashlib.sha256()
    for module in modules:
        path = PACKAGE / module
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path.with_suffix(".py")]
        for file in files:
            digest.update(str(file.relative_to(PACKAGE)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


CORE_CODE = ("cli", "config", "io", "tracking", "stage")


def stage_config(*sections):
    """The config sections a stage reads, as canonical JSON (its rerun trigger)."""
    chosen = {name: config[name] for name in ("seed", "tracking", *sections)}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def model_config(model):
    """One entry of ``models`` with its name, as the ``model`` section of a stage."""
    if model not in config["models"]:
        raise ValueError(f"model {model!r} is not defined under 'models'; defined: {sorted(config['models'])}")
    return {**config["models"][model], "name": model}


def stage_config_for_model(model, *sections):
    chosen = {name: config[name] for name in ("seed", "tracking", *sections)}
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
