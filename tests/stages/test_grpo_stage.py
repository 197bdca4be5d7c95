"""Stage ``grpo`` through its CLI: every reward set, resume after a kill, NaN stops, MLflow.

A tiny base (smoke sizes) is pretrained and briefly fine-tuned on the CoT format once for the
module (so some rollouts are well formed and get a saliency map); each GRPO run is 2-4 steps
of 4 completions.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from lookright import tracking
from lookright.cli import main
from lookright.models import get_adapter, load_model
from tests.interruption import interrupted_after_step_2

pytestmark = pytest.mark.slow  # real (tiny) trainings, ~1-2 min for the module

REWARD_SETS = {
    "acc": ["accuracy"],
    "acc+fmt": ["accuracy", "format"],
    "acc+fmt+sal": ["accuracy", "format", "saliency_alignment"],
    "sayo": ["region_attention"],
    "acc+fmt+sayo": ["accuracy", "format", "region_attention"],
}
GRPO = {
    "steps": 2,
    "batch_size": 4,
    "num_generations": 2,
    "max_completion_length": 40,
    "temperature": 0.7,
    "save_steps": 2,
    "logging_steps": 1,
    "eval_samples": 4,
    "max_new_tokens": 40,
    "lora": {"r": 4, "alpha": 8},
}


def grpo_cli(argv: list[str]) -> int:
    """``lookright grpo ...`` through the CLI's entry point."""
    return main(["grpo", *argv])


@pytest.fixture(scope="module")
def one_thread():
    """2 shared cores: one torch thread is several times faster than two under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        yield patch


@pytest.fixture(scope="module")
def pipeline(env, one_thread, smoke_config, tmp_path_factory) -> dict:
    """prepare-data, pretrain and a short CoT SFT (VQA only) with the smoke sizes."""
    results = tmp_path_factory.mktemp("results")
    data, pretrain, sft = results / "data", results / "pretrain", results / "sft"
    common = ["--results-dir", str(results)]
    assert main(["prepare-data", "--out", str(data), *common, "--config-json",
                 json.dumps({"data": smoke_config["data"]})]) == 0  # fmt: skip
    section = {"pretrain": smoke_config["pretrain"], "model": {"name": "tiny"}}
    assert main(["pretrain", "--data", str(data), "--out", str(pretrain), *common,
                 "--config-json", json.dumps(section)]) == 0  # fmt: skip
    sft_section = {
        **smoke_config["sft"],
        "steps": 80,
        "batch_size": 8,
        "learning_rate": 0.01,
        "task_mix": ["vqa"],
        "save_steps": 1000,
        "logging_steps": 20,
    }
    assert main(["sft", "--data", str(data), "--base", str(pretrain / "model"),
                 "--out", str(sft), *common, "--config-json",
                 json.dumps({"sft": sft_section, "model": {"name": "tiny"}})]) == 0  # fmt: skip
    uri = f"sqlite:///{results.resolve()}/mlflow.db"
    return {"results": results, "data": data, "sft": sft, "uri": uri}


def _args(pipeline: dict, out: Path, reward_set: str, **overrides) -> list[str]:
    weights = {name: 1.0 for name in REWARD_SETS.get(reward_set, [])}
    section = {**GRPO, "reward_set": reward_set, "rewards": weights, **overrides}
    return [
        "--config-json",
        json.dumps({"grpo": section, "model": {"name": "tiny"}}),
        "--data",
        str(pipeline["data"]),
        "--base",
        str(pipeline["sft"] / "model"),
        "--out",
        str(out),
        "--results-dir",
        str(pipeline["results"]),
        "--upstream",
        f"sft={pipeline['sft'] / 'run.json'}",
        "--tag",
        "snakemake.rule=grpo",
    ]


def _history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    """A metric's (step, value) history; TRL's ``a/b`` names are stored as ``a_b``."""
    key = name.replace("/", "_")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _run_id(folder: Path) -> str:
    return json.loads((folder / "run.json").read_text())["run_id"]


@pytest.mark.parametrize("reward_set", list(REWARD_SETS))
def test_grpo_trains_each_reward_set(pipeline, reward_set):
    out = pipeline["results"] / "grpo" / "tiny" / reward_set
    names = REWARD_SETS[reward_set]
    monitor = reward_set == "acc"  # alignment logged (weight 0) though not rewarded
    assert grpo_cli(_args(pipeline, out, reward_set, monitor_alignment=monitor)) == 0
    logged = names + (["saliency_alignment"] if monitor else [])

    loaded = load_model(out / "model")
    assert loaded.adapter is get_adapter("qwen2_5_vl")
    assert not any("lora" in n for n, _ in loaded.model.named_parameters())  # merged
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 0 and metrics["n_val"] == GRPO["eval_samples"]
    assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0 and 0.0 <= metrics["val_format_rate"] <= 1
    assert metrics["n_rollouts"] == GRPO["steps"] * GRPO["batch_size"]

    samples = pq.read_table(out / "samples.parquet").to_pylist()
    assert len(samples) == GRPO["steps"] * GRPO["batch_size"]
    assert sorted({r["step"] for r in samples}) == [0, 1]
    reward_columns = sorted(k for k in samples[0] if k.startswith("reward_"))
    assert reward_columns == sorted(f"reward_{n}" for n in logged)
    for row in samples:
        assert row["sample_id"] and row["question"] and row["answer"] is not None
        parts = [row[f"reward_{n}"] for n in names if row[f"reward_{n}"] is not None]
        if parts:  # the weighted total; monitored alignment has weight 0
            assert row["reward"] == pytest.approx(sum(parts))
        for n in ("accuracy", "format"):
            if n in names:
                assert row[f"reward_{n}"] in (0.0, 1.0)
        if "region_attention" in names:
            assert -1.0 < row["reward_region_attention"] < 1.0  # every VQA sample has a box

    client = MlflowClient(tracking_uri=pipeline["uri"])
    run = client.get_run(_run_id(out))
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["grpo.reward_set"] == reward_set
    assert params["reward_names"] == ",".join(logged)
    assert params["grpo.beta"] == str(GRPO.get("beta", 0.001))
    for option in ("accuracy", "saliency_alignment", "region_attention"):
        own = [k for k in params if k.startswith(f"grpo.reward_options.{option}.")]
        if option in logged:  # the branch logs its own rewards' options only
            assert own, option
        else:
            assert not own and params[f"grpo.reward_options.{option}"] == "None", option
    assert tags["lookright.reward_set"] == reward_set
    assert tags["lookright.upstream.sft"] == _run_id(pipeline["sft"])
    per_step = ["kl", "completions/mean_length", "step_time_s", "reward", "loss"]
    per_step += [
        f"rewards/{n}/{s}" for n in names for s in ("mean", "std") if n != "saliency_alignment"
    ]
    if "saliency_alignment" in logged:
        per_step += ["time_saliency_alignment_s", "saliency_no_map_fraction"]
    if "region_attention" in names:
        per_step.append("time_region_attention_s")
    for name in per_step:
        history = _history(client, run.info.run_id, name)
        assert [s for s, _ in history] == [1, 2], name
        assert all(math.isfinite(v) for _, v in history), name
    # TRL's completion tables (rewards, advantages), one MLflow table per logging step
    tables = sorted(a.path for a in client.list_artifacts(run.info.run_id, "completions"))
    assert tables == ["completions/step_00001.json", "completions/step_00002.json"]
    table = json.loads(Path(client.download_artifacts(run.info.run_id, tables[-1])).read_text())
    assert {"prompt", "completion", "advantage", *names} <= set(table["columns"])
    assert len(table["data"]) == GRPO["batch_size"]
    if "saliency_alignment" in logged:
        aligned = [r["reward_saliency_alignment"] for r in samples]
        # a step without any map logs no score (None is skipped, never a silent 0)
        steps_with_map = sorted({r["step"] + 1 for r in samples if r["reward_saliency_alignment"]
                                 is not None})  # fmt: skip
        for name in ("alignment_score", "rewards/saliency_alignment/mean"):
            history = _history(client, run.info.run_id, name)
            assert [s for s, _ in history] == steps_with_map, name
            assert all(0.0 <= v <= 1.0 for _, v in history)
        assert any(a is None for a in aligned) or steps_with_map == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "samples.parquet"} <= artifacts


def test_alignment_score_is_logged_per_step(pipeline):
    """Rollouts with a map get a score, logged per step (logit decomposition: always a map).

    On the smoke model the CoT-bottleneck map of a well-formed rollout has no positive mass
    (every two-hop contribution is negative), so its reward is None; the whole-completion
    logit-decomposition map (the method option's ablation) exists for every rollout.
    """
    out = pipeline["results"] / "grpo" / "tiny" / "sal-logit"
    options = {"saliency_alignment": {"method": "logit_decomposition", "batch_size": 3}}
    args = _args(pipeline, out, "sal", rewards={}, reward_options=options)
    assert grpo_cli(args) == 0
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    scores = [r["reward_saliency_alignment"] for r in samples]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores)
    assert all(r["reward"] == r["reward_saliency_alignment"] for r in samples)
    client = MlflowClient(tracking_uri=pipeline["uri"])
    run_id = _run_id(out)
    alignment = _history(client, run_id, "alignment_score")
    assert [s for s, _ in alignment] == [1, 2]
    for step, value in alignment:
        batch = [r["reward_saliency_alignment"] for r in samples if r["step"] == step - 1]
        assert value == pytest.approx(sum(batch) / len(batch), rel=1e-5)
    trl_mean = _history(client, run_id, "rewards/saliency_alignment/mean")
    assert [v for _, v in trl_mean] == pytest.approx([v for _, v in alignment])
    assert [v for _, v in _history(client, run_id, "saliency_no_map_fraction")] == [0.0, 0.0]
    assert client.get_run(run_id).data.params["grpo.reward_options.saliency_alignment.method"] == (
        "logit_decomposition"
    )


def test_grpo_resumes_after_interruption(pipeline, monkeypatch):
    out = pipeline["results"] / "grpo" / "resumed" / "acc+fmt+sal"
    args = _args(pipeline, out, "acc+fmt+sal", steps=4)
    client = MlflowClient(tracking_uri=pipeline["uri"])
    run_key = f"grpo:{out.resolve()}"
    with interrupted_after_step_2():
        grpo_cli(args)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model").exists() and not (out / "run.json").exists()
    (first,) = tracking.find_runs(
        pipeline["uri"], stage="grpo", filter_tags={"lookright.run_key": run_key}
    )
    assert first.info.status == "KILLED"
    assert [s for s, _ in _history(client, first.info.run_id, "rewards/accuracy/mean")] == [1, 2]

    assert grpo_cli(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2
    assert _run_id(out) == first.info.run_id  # the same MLflow run, continued
    run = client.get_run(first.info.run_id)
    assert run.info.status == "FINISHED"
    for name in ("rewards/accuracy/mean", "rewards/format/std", "time_saliency_alignment_s", "kl"):
        assert [s for s, _ in _history(client, run.info.run_id, name)] == [1, 2, 3, 4], name
    samples = pq.read_table(out / "samples.parquet").to_pylist()
    assert sorted({r["step"] for r in samples}) == [0, 1, 2, 3]
    assert len(samples) == 4 * GRPO["batch_size"]
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]


@pytest.mark.parametrize("where", ["reward", "loss"])
def test_non_finite_reward_or_loss_stops_and_keeps_last_checkpoint(
    pipeline, monkeypatch, capsys, where
):
    from trl import GRPOTrainer

    from lookright.rewards.format import FormatReward

    out = pipeline["results"] / "grpo" / f"nan-{where}" / "acc+fmt"
    if where == "reward":
        original = FormatReward.score

        def score(self, prompts, completions, completion_ids=None, **kwargs):
            values = original(self, prompts, completions, completion_ids, **kwargs)
            late = kwargs["trainer_state"].global_step >= 2
            return [float("nan")] * len(values) if late else values

        monkeypatch.setattr(FormatReward, "score", score)
    else:
        original_step = GRPOTrainer.training_step

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = original_step(self, model, inputs, num_items_in_batch)
            return loss * float("nan") if self.state.global_step >= 2 else loss

        monkeypatch.setattr(GRPOTrainer, "training_step", training_step)
    assert grpo_cli(_args(pipeline, out, "acc+fmt", steps=4)) == 1
    error = capsys.readouterr().err
    expected = "reward 'format' is nan" if where == "reward" else "non-finite GRPO loss nan"
    assert f"lookright grpo: failed: {expected}" in error
    assert "last good checkpoint" in error
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model").exists() and not (out / "run.json").exists()
    (run,) = tracking.find_runs(
        pipeline["uri"], stage="grpo", filter_tags={"lookright.run_key": f"grpo:{out.resolve()}"}
    )
    assert run.info.status == "FAILED"


def test_unknown_reward_is_a_config_error(pipeline, capsys):
    out = pipeline["results"] / "grpo" / "bad"
    assert grpo_cli(_args(pipeline, out, "acc+nope")) == 2
    assert "unknown reward 'nope'" in capsys.readouterr().err
    assert not (out / "run.json").exists()
    assert not tracking.find_runs(
        pipeline["uri"], stage="grpo", filter_tags={"lookright.run_key": f"grpo:{out.resolve()}"}
    )


def test_the_plain_trl_example_trains_with_lookrights_rewards(pipeline, tmp_path):
    """examples/grpo_with_lookright_rewards.py: a user's own GRPOTrainer on their own JSONL
    dataset with lookright's four rewards, 2 steps on the tiny SFT model."""
    import subprocess

    samples = pq.read_table(pipeline["data"] / "samples.parquet").to_pylist()
    images = {
        r["image_id"]: r for r in pq.read_table(pipeline["data"] / "images.parquet").to_pylist()
    }
    rows = [s for s in samples if s["split"] == "train" and s["task"] == "vqa" and s["boxes"]][:8]
    lines = []
    for row in rows:
        image = images[row["image_id"]]
        path = tmp_path / f"{row['image_id']}.{image['image_format'].lower()}"
        path.write_bytes(image["image_bytes"])
        lines.append(
            json.dumps(
                {"image": str(path), "question": row["question"], "answer": row["answer"],
                 "boxes": row["boxes"]}
            )
        )  # fmt: skip
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[2] / "examples" / "grpo_with_lookright_rewards.py"
    result = subprocess.run(
        [sys.executable, str(script), "--model", str(pipeline["sft"] / "model"),
         "--data", str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "out"),
         "--steps", "2", "--logging-steps", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads(next((tmp_path / "out").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = {k for entry in state["log_history"] for k in entry}
    for name in ("accuracy", "format", "saliency_alignment", "region_attention"):
        assert f"rewards/{name}/mean" in logged, sorted(logged)
    assert (tmp_path / "out" / "config.json").is_file()


# --------------------------------------------------------------------------- prompts by role

REAL = Path(__file__).parents[1] / "fixtures" / "real"


def _real_data(tmp_path: Path, llava_roles: list[str]) -> Path:
    from lookright.config import load_stage_config
    from lookright.data.prepare import prepare
    from lookright.stages.prepare_data import PrepareDataConfig

    real = [
        {
            "reader": "saliency_r1",
            "source": str(REAL / "saliency_r1" / "train.parquet"),
            "holdout": 0,
        },
        {
            "reader": "llava_conversations",
            "json_path": str(REAL / "llava" / "sft.json"),
            "image_root": str(REAL / "images"),
            "roles": llava_roles,
        },
    ]
    section = {"source": "real", "max_rejected_fraction": 0.9, "real": real}
    prepare(load_stage_config(PrepareDataConfig, {"data": section}).data, tmp_path / "data")
    return tmp_path / "data"


def test_grpo_prompts_are_the_rl_rows_with_boxes(tmp_path):
    """task_mix [vqa] used to take every VQA train row: the cold-start rows (no box, so no
    saliency reward) with the boxed saliency-r1-8k prompts."""
    from lookright.train.grpo import GrpoSection, grpo_prompts

    data = _real_data(tmp_path, ["sft"])
    section = GrpoSection(reward_set="acc+fmt+sal")
    prompts = grpo_prompts(data, section).to_pylist()
    assert len(prompts) == 6 and all(p["boxes"] for p in prompts)
    assert {p["source"] for p in prompts} == {"saliency-r1-8k"}


def test_grpo_refuses_prompts_without_boxes_for_box_rewards(tmp_path):
    from lookright.config import ConfigError
    from lookright.train.grpo import GrpoSection, grpo_prompts

    data = _real_data(tmp_path, ["sft", "rl"])  # cold-start rows also given to GRPO
    with pytest.raises(ConfigError, match=r"3 of 9 prompts \(role 'rl'\) have no evidence box"):
        grpo_prompts(data, GrpoSection(reward_set="acc+fmt+sal"))
    with pytest.raises(ConfigError, match=r"\['region_attention'\]"):
        grpo_prompts(data, GrpoSection(reward_set="sayo"))
    assert grpo_prompts(data, GrpoSection(reward_set="acc+fmt")).num_rows == 9  # no box needed
    monitored = GrpoSection(reward_set="acc", monitor_alignment=True)
    with pytest.raises(ConfigError, match="saliency_alignment"):
        grpo_prompts(data, monitored)
