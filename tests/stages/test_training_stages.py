"""Training stages through the real CLI: TRL trainers, tiny models, a real MLflow SQLite store.

Sizes come from config/smoke.yaml; every stage runs in-process via ``lookright.cli.main``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from transformers import TrainerControl, TrainerState, TrainingArguments

from lookright import tracking
from lookright.cli import main
from lookright.config import GateError
from lookright.metrics.accuracy import accuracy, exact_match
from lookright.models import get_adapter, load_model
from lookright.train.common import (
    PREDICTIONS,
    MlflowStepLogger,
    NonFiniteLossError,
    check_min_accuracy,
    require_gate_rows,
)
from tests.interruption import interrupted_after_step_2


@pytest.fixture(scope="module")
def env():
    """No tracking URI or experiment from the environment: the default store in results/."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        yield patch


@pytest.fixture(scope="module")
def pipeline(env, smoke_config, tmp_path_factory) -> dict:
    """prepare-data then pretrain with the smoke sizes, once for the module."""
    results = tmp_path_factory.mktemp("results")
    data, pretrain = results / "data", results / "pretrain" / "tiny"
    common = ["--results-dir", str(results)]
    prepare = ["prepare-data", "--out", str(data), *common]
    prepare += ["--config-json", json.dumps({"data": smoke_config["data"]})]
    assert main(prepare) == 0
    section = {"pretrain": smoke_config["pretrain"], "model": {"name": "tiny"}}
    pretrain_args = ["pretrain", "--data", str(data), "--out", str(pretrain), *common]
    pretrain_args += ["--config-json", json.dumps(section), "--tag", "snakemake.rule=pretrain"]
    pretrain_args += ["--upstream", f"prepare_data={data / 'run.json'}"]
    assert main(pretrain_args) == 0
    uri = f"sqlite:///{results.resolve()}/mlflow.db"
    return {"results": results, "data": data, "pretrain": pretrain, "uri": uri}


def _run_json(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _history(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def _sft_args(pipeline: dict, smoke_config: dict, out: Path, base: Path, **sft) -> list[str]:
    section = {**smoke_config["sft"], **sft}
    return [
        "sft",
        "--config-json",
        json.dumps({"sft": section, "model": {"name": "tiny"}}),
        "--data",
        str(pipeline["data"]),
        "--base",
        str(base),
        "--out",
        str(out),
        "--results-dir",
        str(pipeline["results"]),
        "--upstream",
        f"pretrain={pipeline['pretrain'] / 'run.json'}",
    ]


# --------------------------------------------------------------------------- pretrain


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_pretrain_outputs(pipeline, smoke_config):
    out = pipeline["pretrain"]
    loaded = load_model(out / "model")
    assert loaded.adapter is get_adapter("qwen2_5_vl")
    tiny = smoke_config["pretrain"]["tiny"]
    assert loaded.model.config.text_config.hidden_size == tiny["text_hidden"]
    assert loaded.model.config.text_config.num_hidden_layers == tiny["text_layers"]
    assert loaded.model.config.vision_config.depth == tiny["vision_layers"]
    assert loaded.model.get_input_embeddings().num_embeddings == len(loaded.processor.tokenizer)

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0
    assert {"val_pope_accuracy", "val_caption_accuracy", "train_seconds"} <= set(metrics)
    assert metrics["resumed_from_step"] == 0

    predictions = pq.read_table(out / "val_predictions.parquet")
    assert predictions.schema.names == PREDICTIONS.names
    rows = predictions.to_pylist()
    eval_samples = smoke_config["pretrain"]["eval_samples"]
    assert sorted({r["task"] for r in rows}) == ["caption", "pope", "vqa"]
    assert all(
        sum(r["task"] == t for r in rows) == eval_samples for t in ("caption", "pope", "vqa")
    )
    vqa = [r for r in rows if r["task"] == "vqa"]
    for r in vqa:  # answer template "The {subject} {answer}" of config.yaml's default
        shape = r["question"].removeprefix("What color is the ").removesuffix("?")
        assert r["reference"].startswith(f"The {shape} ")
    assert metrics["val_vqa_accuracy"] == accuracy(
        [r["prediction"] for r in vqa], [r["reference"] for r in vqa]
    )
    assert metrics["val_vqa_accuracy"] == sum(r["correct"] for r in vqa) / len(vqa)

    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]  # save_steps=2, steps=4


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_pretrain_mlflow_run(pipeline, smoke_config):
    out, data = pipeline["pretrain"], pipeline["data"]
    record = _run_json(out)
    assert record["stage"] == "pretrain" and record["tracking_uri"] == pipeline["uri"]
    client = MlflowClient(tracking_uri=pipeline["uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["pretrain.steps"] == str(smoke_config["pretrain"]["steps"]) == "4"
    assert params["pretrain.tiny.text_hidden"] == "32"
    assert params["model.family"] == "qwen2_5_vl" and params["model.name"] == "tiny"
    assert int(params["n_parameters"]) > int(params["n_trainable"]) > 0
    assert tags["lookright.stages.base"] == "pretrain"
    assert tags["lookright.config_hash"] == record["config_hash"]
    assert tags["lookright.upstream.prepare_data"] == _run_json(data)["run_id"]
    assert tags["lookright.run_key"] == f"pretrain:{out.resolve()}"
    assert tags["lookright.checkpoint"] == str((out / "model").resolve())
    assert tags["snakemake.rule"] == "pretrain"

    loss = _history(client, record["run_id"], "loss")
    assert [step for step, _ in loss] == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for _, v in loss)
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["val_vqa_accuracy"] == metrics["val_vqa_accuracy"]
    artifacts = {a.path for a in client.list_artifacts(record["run_id"])}
    assert {"metrics.json", "val_predictions.parquet"} <= artifacts
    assert run.info.artifact_uri.startswith(
        (pipeline["results"] / "mlartifacts").resolve().as_uri()
    )

    data_run = client.get_run(_run_json(data)["run_id"])
    assert data_run.info.status == "FINISHED"
    assert data_run.data.tags["lookright.stages.base"] == "prepare_data"
    assert data_run.data.metrics["n_images"] == sum(
        smoke_config["data"]["shapes"][f"n_{s}"] for s in ("train", "val", "test")
    )


# --------------------------------------------------------------------------- sft resume


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_sft_resumes_after_interruption(pipeline, smoke_config, tmp_path, monkeypatch):
    out = pipeline["results"] / "sft" / "resumed"
    args = _sft_args(
        pipeline,
        smoke_config,
        out,
        pipeline["pretrain"] / "model",
        steps=4,
        save_steps=2,
        logging_steps=1,
    )
    client = MlflowClient(tracking_uri=pipeline["uri"])
    run_key = f"sft:{out.resolve()}"

    with interrupted_after_step_2():
        main(args)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model").exists() and not (out / "run.json").exists()
    (first,) = tracking.find_runs(
        pipeline["uri"], stage="sft", filter_tags={"lookright.run_key": run_key}
    )
    assert first.info.status == "KILLED"
    assert [s for s, _ in _history(client, first.info.run_id, "loss")] == [1, 2]

    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2
    assert 0.0 <= metrics["val_vqa_accuracy"] <= 1.0 and 0.0 <= metrics["val_format_rate"] <= 1.0
    assert metrics["n_val"] == smoke_config["sft"]["eval_samples"]
    record = _run_json(out)
    assert record["run_id"] == first.info.run_id  # the same MLflow run, continued
    runs = tracking.find_runs(
        pipeline["uri"], stage="sft", filter_tags={"lookright.run_key": run_key}
    )
    assert [r.info.run_id for r in runs] == [first.info.run_id]
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["sft.steps"] == "4"
    assert run.data.tags["lookright.config_hash"] == record["config_hash"]
    assert run.data.tags["lookright.upstream.pretrain"] == _run_json(pipeline["pretrain"])["run_id"]
    loss = _history(client, record["run_id"], "loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4]  # one history, continued after step 2
    assert all(math.isfinite(v) for _, v in loss)
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    loaded = load_model(out / "model")
    assert loaded.adapter is get_adapter("qwen2_5_vl")
    # the resumed run continued from checkpoint-2's WEIGHTS (transformers' own resume loads
    # none of a VLM's keys, transformers#43701): it ends where an uninterrupted run ends
    straight = pipeline["results"] / "sft" / "uninterrupted"
    straight_args = _sft_args(
        pipeline, smoke_config, straight, pipeline["pretrain"] / "model", steps=4, save_steps=2
    )
    assert main(straight_args) == 0
    expected = load_model(straight / "model").model.state_dict()
    resumed = loaded.model.state_dict()
    assert expected.keys() == resumed.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, msg=name)

    # a rerun after training finished (snakemake deleted the outputs for a code change)
    # restores checkpoint-4 and trains no step past it (transformers' Trainer would)
    for output in ("model", "run.json", "metrics.json"):
        target = out / output
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == 4
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    rerun = load_model(out / "model").model.state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(rerun[name], tensor, msg=name)
    predictions = pq.read_table(out / "val_predictions.parquet").to_pylist()
    assert len(predictions) == metrics["n_val"] and {r["task"] for r in predictions} == {"vqa"}
    assert metrics["val_vqa_accuracy"] == accuracy(
        [r["prediction"] for r in predictions], [r["reference"] for r in predictions]
    )


# --------------------------------------------------------------------------- failures


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_sft_with_missing_base_fails_clearly(pipeline, smoke_config, tmp_path, capsys):
    base = tmp_path / "not-a-checkpoint"
    base.mkdir()
    out = pipeline["results"] / "sft" / "failing"
    code = main(_sft_args(pipeline, smoke_config, out, base))
    assert code == 2
    assert f"lookright sft: error: {base}: no config.json" in capsys.readouterr().err
    assert not (out / "run.json").exists() and not (out / "model").exists()
    runs = tracking.find_runs(
        pipeline["uri"], stage="sft", filter_tags={"lookright.run_key": f"sft:{out.resolve()}"}
    )
    assert [r.info.status for r in runs] == ["FAILED"]


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_sft_below_min_accuracy_fails_after_writing_its_outputs(pipeline, smoke_config, capsys):
    """The gate stops the DAG before GRPO trains on a broken checkpoint, and keeps the evidence."""
    out = pipeline["results"] / "sft" / "gated"
    args = _sft_args(pipeline, smoke_config, out, pipeline["pretrain"] / "model", min_accuracy=1.0)
    code = main(args)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_vqa_accuracy"] < 1.0  # a 3-step SFT of a 4-step base
    assert code == 1
    message = capsys.readouterr().err
    assert f"held-out VQA accuracy {metrics['val_vqa_accuracy']:.3f}" in message
    assert "sft.min_accuracy=1.0" in message
    predictions = pq.read_table(out / "val_predictions.parquet").to_pylist()
    assert [r["correct"] for r in predictions] == [
        exact_match(r["prediction"], r["reference"]) for r in predictions
    ]  # per-row verdicts, not None
    assert not (out / "run.json").exists()  # snakemake sees a failed job
    (run,) = tracking.find_runs(
        pipeline["uri"], stage="sft", filter_tags={"lookright.run_key": f"sft:{out.resolve()}"}
    )
    assert run.info.status == "FAILED"
    assert run.data.metrics["val_vqa_accuracy"] == metrics["val_vqa_accuracy"]


@pytest.mark.slow  # shares the module's prepare-data + pretrain run (~20 s)
def test_sft_gate_without_val_rows_fails_before_training(pipeline, smoke_config, tmp_path, capsys):
    """With no val row the held-out accuracy was NaN, NaN < min_accuracy is False, and the
    gate let every checkpoint through (a reader could not make a val split)."""
    data = tmp_path / "data"
    shutil.copytree(pipeline["data"], data)
    samples = pq.read_table(data / "samples.parquet")
    splits = ["train" if s == "val" else s for s in samples["split"].to_pylist()]
    pq.write_table(samples.set_column(2, "split", pa.array(splits)), data / "samples.parquet")
    out = tmp_path / "sft"
    args = _sft_args(pipeline, smoke_config, out, pipeline["pretrain"] / "model", min_accuracy=0.5)
    args[args.index("--data") + 1] = str(data)
    assert main(args) == 1
    message = capsys.readouterr().err
    assert "sft.min_accuracy=0.5 but there are no val rows" in message
    assert "data.real[k].val" in message
    assert not (out / "checkpoints").exists() and not (out / "model").exists()


def test_gate_of_no_val_rows_never_passes():
    check_min_accuracy("sft", 0.9, 0.5, "hint", n_val=10)  # measured: passes
    with pytest.raises(GateError, match="measured on 0 val rows"):
        check_min_accuracy("sft", math.nan, 0.5, "hint", n_val=0)
    check_min_accuracy("sft", math.nan, 0.0, "hint", n_val=0)  # no gate asked for
    with pytest.raises(GateError, match="no val rows to measure it"):
        require_gate_rows("sft", 0.5, 0, "split val, task vqa, role sft")
    require_gate_rows("sft", 0.0, 0, "split val")


def test_non_finite_loss_stops_training_and_fails_the_run(tmp_path, env):
    uri = tracking.default_tracking_uri(tmp_path)
    checkpoints = tmp_path / "sft" / "checkpoints"
    args = TrainingArguments(output_dir=str(checkpoints), report_to=[], use_cpu=True)
    control = TrainerControl()
    with pytest.raises(NonFiniteLossError) as caught:
        with tracking.stage_run("sft", config={"sft": {"steps": 9}}, tracking_uri=uri) as run:
            logger = MlflowStepLogger(run)
            logger.on_log(args, TrainerState(global_step=1), control, logs={"loss": 2.5})
            logger.on_log(args, TrainerState(global_step=2), control, logs={"loss": float("nan")})
    message = str(caught.value)
    assert "non-finite training loss nan at step 2" in message
    assert str(checkpoints) in message
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert _history(client, run.run_id, "loss") == [(1, 2.5)]  # the NaN was not logged
    assert [m.step for m in client.get_metric_history(run.run_id, "step_time_s")] == [1]
    with pytest.raises(NonFiniteLossError, match="inf"):
        logger.on_log(args, TrainerState(global_step=3), control, logs={"loss": float("inf")})


def test_checkpoints_of_another_config_are_not_resumed(tmp_path):
    """A rule rerun with changed params must not resume the old run's weights."""
    from lookright.config import load_stage_config
    from lookright.stages.sft import SftConfig
    from lookright.train.common import CONFIG_MARKER, resumable_checkpoint

    first = load_stage_config(SftConfig, {"sft": {"steps": 10}})
    changed = load_stage_config(SftConfig, {"sft": {"steps": 20}})
    moved_store = load_stage_config(SftConfig, {"sft": {"steps": 10}, "tracking": {"uri": "x"}})
    checkpoints = tmp_path / "checkpoints"
    assert resumable_checkpoint(checkpoints, first) is None  # nothing yet; records the config
    (checkpoints / "checkpoint-5").mkdir()
    assert resumable_checkpoint(checkpoints, first).endswith("checkpoint-5")
    assert resumable_checkpoint(checkpoints, moved_store).endswith("checkpoint-5")
    with pytest.warns(UserWarning, match="another config"):
        assert resumable_checkpoint(checkpoints, changed) is None
    assert not (checkpoints / "checkpoint-5").exists()
    assert (checkpoints / CONFIG_MARKER).is_file()
    (checkpoints / "checkpoint-7").mkdir()
    (checkpoints / CONFIG_MARKER).unlink()  # checkpoints without a record: not trusted
    with pytest.warns(UserWarning, match="unrecorded"):
        assert resumable_checkpoint(checkpoints, changed) is None


def test_checkpoints_of_another_base_model_are_not_resumed(tmp_path):
    """A GRPO/SFT rerun on a retrained base must not resume adapters trained on the old one."""
    from lookright.config import load_stage_config
    from lookright.stages.sft import SftConfig
    from lookright.train.common import resumable_checkpoint

    cfg = load_stage_config(SftConfig, {"sft": {"steps": 10}})
    base, data = tmp_path / "sft" / "model", tmp_path / "data" / "samples.parquet"
    base.mkdir(parents=True)
    data.parent.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"old weights")
    data.write_bytes(b"rows")
    checkpoints = tmp_path / "grpo" / "checkpoints"
    assert resumable_checkpoint(checkpoints, cfg, [base, data]) is None
    (checkpoints / "checkpoint-100").mkdir()
    assert resumable_checkpoint(checkpoints, cfg, [base, data]).endswith("checkpoint-100")

    (base / "model.safetensors").write_bytes(b"new weights, retrained")  # the upstream reran
    with pytest.warns(UserWarning, match="another config or base model"):
        assert resumable_checkpoint(checkpoints, cfg, [base, data]) is None
    assert not (checkpoints / "checkpoint-100").exists()

    (checkpoints / "checkpoint-50").mkdir()
    assert resumable_checkpoint(checkpoints, cfg, [base, data]).endswith("checkpoint-50")
    data.write_bytes(b"rows, prepared again")  # new data: start over too
    with pytest.warns(UserWarning, match="another config or base model"):
        assert resumable_checkpoint(checkpoints, cfg, [base, data]) is None

    (checkpoints / "checkpoint-10").mkdir()  # a hub id counts by its name
    with pytest.warns(UserWarning, match="another config or base model"):
        assert resumable_checkpoint(checkpoints, cfg, ["org/model-a"]) is None
    (checkpoints / "checkpoint-20").mkdir()
    assert resumable_checkpoint(checkpoints, cfg, ["org/model-a"]).endswith("checkpoint-20")
