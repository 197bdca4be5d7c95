# Helpers shared by the rules: result paths, per-stage config as JSON, code fingerprints.
import hashlib
import json
import os
import secrets
import shlex
import time
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


CORE_CODE = ("cli", "config", "io", "tracking", "stage", "launch")
# The sample selection every model stage shares: roles, stratified subsamples, the schema.
DATA_ACCESS_CODE = ("train/datasets", "data/schema", "data/subsample")
TRAIN_CODE = (*CORE_CODE, "models", "train/common", *DATA_ACCESS_CODE, "eval/accuracy")


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
    outputs += get_grpo_outputs()
    outputs += get_decode_outputs()
    outputs += get_evaluate_outputs()
    outputs.append(f"{RESULTS}/report/report.html")
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


# Stage grpo: one branch per (model, reward set), each from the same SFT checkpoint.
# A branch's params hold only its own reward set (weights + the options of the rewards it
# uses) and the code it runs, so adding a reward set to config adds only its branch.
GRPO_SHARED_KEYS = (
    "reward_sets",
    "run_reward_sets",
    "reward_options",
    "reward_set_options",
)
MODEL_REWARDS = ("saliency_alignment", "region_attention")
GRPO_CODE = (*TRAIN_CODE, "train/grpo", "rewards/__init__", "rewards/base")
GRPO_REWARD_CODE = {
    "accuracy": ("rewards/accuracy",),
    "format": ("rewards/format",),
    "saliency_alignment": (
        "rewards/policy",
        "rewards/saliency",
        "saliency",
        "eval/localisation",
    ),
    "region_attention": (
        "rewards/policy",
        "rewards/saliency",
        "rewards/region_attention",
        "saliency",
        "eval/localisation",
    ),
}


def get_reward_sets():
    return list(config["grpo"].get("run_reward_sets", []))


def split_seeded(reward_set):
    """``"acc+fmt+sal@2"`` -> ``("acc+fmt+sal", 2)``: a branch of that set with seed 2 (its
    own GRPO run from the same SFT checkpoint); without ``@N`` the global seed applies.
    """
    name, sep, seed = reward_set.rpartition("@")
    if not sep:
        return reward_set, None
    if not seed.isdigit():
        raise ValueError(
            f"reward set branch {reward_set!r}: the part after '@' must be a seed (integer)"
        )
    return name, int(seed)


def grpo_rewards_used(reward_set):
    """Reward names a branch computes: its set, plus the monitored alignment if enabled."""
    reward_set = split_seeded(reward_set)[0]
    section = config["grpo"]
    if reward_set not in section["reward_sets"]:
        raise ValueError(
            f"reward set {reward_set!r} is not defined under grpo.reward_sets; "
            f"defined: {sorted(section['reward_sets'])}"
        )
    used = list(section["reward_sets"][reward_set])
    if section.get("monitor_alignment") and "saliency_alignment" not in used:
        used.append("saliency_alignment")
    return used


def grpo_stage_config(model, reward_set):
    """The branch's stage config as canonical JSON (its rerun trigger)."""
    section = config["grpo"]
    base, seed = split_seeded(reward_set)
    branch = {k: v for k, v in section.items() if k not in GRPO_SHARED_KEYS}
    branch["reward_set"] = reward_set
    branch["rewards"] = dict(section["reward_sets"][base])
    options = section.get("reward_options", {})
    overrides = section.get("reward_set_options", {}).get(base, {})
    branch["reward_options"] = {
        name: {**options.get(name, {}), **overrides.get(name, {})}
        for name in grpo_rewards_used(reward_set)
        if name in options or name in overrides
    }
    chosen = {
        "seed": config["seed"] if seed is None else seed,
        "model": model_config(model),
        "grpo": branch,
    }
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def grpo_code(reward_set):
    """Fingerprint of the modules the branch runs (saliency code only for model rewards)."""
    modules = list(GRPO_CODE)
    for name in grpo_rewards_used(reward_set):
        modules += [m for m in GRPO_REWARD_CODE[name] if m not in modules]
    return code_fingerprint(*modules)


def get_grpo_outputs():
    return [
        f"{RESULTS}/grpo/{model}/{reward_set}/model/config.json"
        for model in get_run_models()
        for reward_set in get_reward_sets()
    ]


# Stage decode: one branch per (model, source, strategy); source = "sft" or "grpo-<reward_set>".
# A branch's params hold only the decode keys its strategy reads and the code it runs, so
# adding a strategy to decode.run_strategies adds only its branch, and editing one strategy's
# parameters (decode.sgrs, decode.locore, decode.num_beams) reruns only the branches using them.
DECODE_STRATEGIES = ("greedy", "beam", "sample", "locore", "sgrs", "sgrs+locore")
DECODE_SHARED_KEYS = ("run_strategies", "run_sources", "sgrs", "locore", "num_beams")
DECODE_CODE = (
    *CORE_CODE,
    "models",
    *DATA_ACCESS_CODE,
    "decoding",
    "saliency/attention_math",
    "saliency/batch",
    "eval/pope",
)


def decode_branch_config(model, strategy):
    """The branch's stage config as canonical JSON (its rerun trigger)."""
    section = config["decode"]
    branch = {k: v for k, v in section.items() if k not in DECODE_SHARED_KEYS}
    scored = section.get("token_saliency", True) and strategy != "beam"
    if strategy == "beam":
        branch["num_beams"] = section["num_beams"]
        branch.pop("token_saliency", None)
    sgrs = section.get("sgrs", {})
    if strategy in ("sgrs", "sgrs+locore"):
        branch["sgrs"] = sgrs
    else:
        picked = {}
        if strategy == "sample" and "top_k" in sgrs:
            picked["top_k"] = sgrs["top_k"]
        if scored and "layers" in sgrs:  # the layers that score the baselines' tokens
            picked["layers"] = sgrs["layers"]
        if picked:
            branch["sgrs"] = picked
    if strategy in ("locore", "sgrs+locore"):
        branch["locore"] = section.get("locore", {})
    chosen = {"seed": config["seed"], "model": model_config(model), "decode": branch}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def decode_model_dir(wildcards):
    """The checkpoint folder a source names: the SFT model or a GRPO branch's model."""
    if wildcards.source == "sft":
        return f"{RESULTS}/sft/{wildcards.model}/model"
    return f"{RESULTS}/grpo/{wildcards.model}/{wildcards.source[len('grpo-'):]}/model"


def decode_upstream(wildcards):
    folder = decode_model_dir(wildcards).rsplit("/", 1)[0]
    stage = "sft" if wildcards.source == "sft" else "grpo"
    return f"--upstream {stage}={folder}/run.json"


def get_decode_sources():
    sources = config["decode"].get("run_sources")
    if sources is None:
        sources = ["sft"] + [
            f"grpo-{r}" for r in config["grpo"].get("run_reward_sets", [])
        ]
    return list(sources)


def get_decode_outputs():
    return [
        f"{RESULTS}/decode/{model}/{source}/{strategy}/answers.parquet"
        for model in get_run_models()
        for source in get_decode_sources()
        for strategy in config["decode"].get("run_strategies", [])
    ]


# Stage evaluate: evaluate_saliency per (model, source) (accuracy, maps of every method,
# alignment, human alignment, deletion/insertion) and evaluate_answers per (model, source,
# strategy) (POPE, CHAIR, latency of the decoded answers). Each reads only its own keys of
# the `evaluate` section, so editing CHAIR's vocabulary does not recompute saliency maps.
EVALUATE_ANSWERS_KEYS = ("chair",)
EVALUATE_SALIENCY_CODE = (
    *CORE_CODE,
    "models",
    "train/common",
    *DATA_ACCESS_CODE,
    "saliency",
    "eval/__init__",
    "eval/config",
    "eval/saliency_stage",
    "eval/accuracy",
    "eval/localisation",
    "eval/human_alignment",
    "eval/faithfulness",
)
EVALUATE_ANSWERS_CODE = (
    *CORE_CODE,
    "data/schema",
    "eval/__init__",
    "eval/config",
    "eval/answers_stage",
    "eval/pope",
    "eval/chair",
)


def evaluate_saliency_config(model):
    section = {
        k: v
        for k, v in config.get("evaluate", {}).items()
        if k not in EVALUATE_ANSWERS_KEYS
    }
    chosen = {"seed": config["seed"], "model": model_config(model), "evaluate": section}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def evaluate_answers_config(model):
    section = {
        k: v
        for k, v in config.get("evaluate", {}).items()
        if k in EVALUATE_ANSWERS_KEYS
    }
    chosen = {"seed": config["seed"], "model": model_config(model), "evaluate": section}
    return json.dumps(chosen, sort_keys=True, separators=(",", ":"))


def ablation_params(wildcards):
    """``--param`` flags that line the ablations up in MLflow's compare view."""
    reward_set, seed = (
        ("none", None)
        if wildcards.source == "sft"
        else split_seeded(wildcards.source[len("grpo-") :])
    )
    pairs = {
        "model": wildcards.model,
        "source": wildcards.source,
        "reward_set": reward_set,
        "grpo_seed": config["seed"] if seed is None else seed,
    }
    if "strategy" in wildcards.keys():
        pairs["strategy"] = wildcards.strategy
    return " ".join(shlex.quote(f"--param={k}={v}") for k, v in pairs.items())


def get_evaluate_outputs():
    """Saliency evaluation of every trained model (SFT + each GRPO branch); answer
    evaluation of every decoded (source, strategy)."""
    models = ["sft"] + [f"grpo-{r}" for r in get_reward_sets()]
    outputs = []
    for model in get_run_models():
        outputs += [
            f"{RESULTS}/eval/{model}/{source}/saliency/metrics.json"
            for source in models
        ]
        outputs += [
            f"{RESULTS}/eval/{model}/{source}/{strategy}/metrics.json"
            for source in get_decode_sources()
            for strategy in config["decode"].get("run_strategies", [])
        ]
    return outputs
