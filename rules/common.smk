# Helpers shared by the rules: result paths, per-job config as JSON (its rerun trigger) and
# code fingerprints. The logic lives in lookright.stages.branches and .fingerprint (unit-tested);
# they are loaded from this workflow's own src/, so a rule's fingerprint is that of the code
# its job will run.
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

RESULTS = config.get("results_dir", "results")
LOGS = config.get("logs_dir", "logs")
PACKAGE = Path(workflow.basedir) / "src" / "lookright"
sys.path.insert(0, str(PACKAGE.parent))
from lookright.stages import branches  # noqa: E402
from lookright.stages.fingerprint import fingerprint  # noqa: E402

# Where every stage logs: config tracking.uri, else $MLFLOW_TRACKING_URI, else a SQLite file
# in the results folder. Handed to the jobs through their shell environment (local and SLURM
# jobs alike), not as a param, so moving the store never reruns a stage.
TRACKING_URI = (
    config["tracking"].get("uri")
    or os.environ.get("MLFLOW_TRACKING_URI")
    or f"sqlite:///{os.path.abspath(RESULTS)}/mlflow.db"
)
EXPERIMENT = config["tracking"].get("experiment", "lookright")
SYSTEM_METRICS_S = config["tracking"].get("system_metrics_interval_s", 10)
# One id per `snakemake` invocation, tagged on every run (lookright.invocation): set once by
# the main process; SLURM jobs inherit it with the environment and keep it.
INVOCATION = os.environ.setdefault(
    "LOOKRIGHT_INVOCATION", time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
)
shell.prefix(
    "set -euo pipefail; "
    f"export MLFLOW_TRACKING_URI={shlex.quote(TRACKING_URI)} "
    f"MLFLOW_EXPERIMENT_NAME={shlex.quote(EXPERIMENT)} "
    f"LOOKRIGHT_SYSTEM_METRICS_S={float(SYSTEM_METRICS_S)} "
    f"LOOKRIGHT_INVOCATION={shlex.quote(INVOCATION)}; "
)


def stage_code(stage, *modules):
    """Fingerprint of the source files job of ``stage`` runs: its module's import closure,
    the CLI, and ``modules`` (imported by name at run time, e.g. a branch's rewards)."""
    return fingerprint(
        f"lookright.stages.{stage}", "lookright.cli", *modules, root=PACKAGE
    )


def stage_config(*sections):
    """The config sections a stage reads, as canonical JSON (its rerun trigger)."""
    return branches.stage_config(config, *sections)


def stage_config_for_model(model, *sections):
    return branches.stage_config(config, *sections, model=model)


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


def get_base_run(wildcards):
    """``--upstream pretrain=...`` when the base comes from the pretrain stage."""
    if config["models"][wildcards.model]["base"] == "pretrain":
        return f"--upstream pretrain={RESULTS}/pretrain/{wildcards.model}/run.json"
    return ""


def get_debug_flags(rule_name):
    """``--fail-for-test`` for rules listed in ``debug.fail_rules`` (failure/resume tests)."""
    failing = config.get("debug", {}).get("fail_rules", [])
    return "--fail-for-test" if rule_name in failing else ""


def get_final_outputs():
    outputs = [f"{RESULTS}/data/samples.parquet"]
    for model in get_run_models():
        outputs.append(f"{RESULTS}/sft/{model}/model/config.json")
    outputs += get_grpo_outputs()
    outputs += get_decode_outputs()
    outputs += get_evaluate_outputs()
    outputs.append(f"{RESULTS}/report/report.html")
    return outputs


# Stage grpo: one branch per (model, reward set), each from the same SFT checkpoint.
def get_reward_sets():
    return list(config["grpo"].get("run_reward_sets", []))


def get_grpo_outputs():
    return [
        f"{RESULTS}/grpo/{model}/{reward_set}/model/config.json"
        for model in get_run_models()
        for reward_set in get_reward_sets()
    ]


def get_grpo_samples():
    return [
        f"{RESULTS}/grpo/{model}/{reward_set}/samples.parquet"
        for model in get_run_models()
        for reward_set in get_reward_sets()
    ]


# Stage decode: one branch per (model, source, strategy); source = "sft" or "grpo-<set>".
DECODE_BRANCH = branches.decode_strategy_pattern()  # sgrs, sgrs@3, ...


def decode_model_dir(wildcards):
    """The checkpoint folder a source names: the SFT model or a GRPO branch's model."""
    if wildcards.source == "sft":
        return f"{RESULTS}/sft/{wildcards.model}/model"
    return f"{RESULTS}/grpo/{wildcards.model}/{wildcards.source[len('grpo-'):]}/model"


def decode_upstream(wildcards):
    folder = decode_model_dir(wildcards).rsplit("/", 1)[0]
    stage = "sft" if wildcards.source == "sft" else "grpo"
    return f"--upstream {stage}={folder}/run.json"


def get_decode_outputs():
    return [
        f"{RESULTS}/decode/{model}/{source}/{strategy}/answers.parquet"
        for model in get_run_models()
        for source in branches.decode_sources(config)
        for strategy in config["decode"].get("run_strategies", [])
    ]


# Stage evaluate: evaluate_saliency per (model, source), evaluate_answers per (model, source,
# strategy). Each reads only its own keys of the `evaluate` section.
def ablation_params(wildcards):
    """``--param`` flags that line the ablations up in MLflow's compare view."""
    pairs = branches.ablation_params(config, dict(wildcards.items()))
    return " ".join(shlex.quote(f"--param={k}={v}") for k, v in pairs.items())


def get_evaluation_folders():
    """Every evaluation folder of the run (the report reads exactly these)."""
    sources = ["sft"] + [f"grpo-{r}" for r in get_reward_sets()]
    folders = []
    for model in get_run_models():
        folders += [f"{RESULTS}/eval/{model}/{source}/saliency" for source in sources]
        folders += [
            f"{RESULTS}/eval/{model}/{source}/{strategy}"
            for source in branches.decode_sources(config)
            for strategy in config["decode"].get("run_strategies", [])
        ]
    return folders


def get_evaluate_outputs():
    return [f"{folder}/metrics.json" for folder in get_evaluation_folders()]
