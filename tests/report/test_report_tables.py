"""Table builders, curves and config of the report stage on hand-made inputs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from report_inputs import (
    CHAIR,
    GRPO,
    LATENCY,
    MODEL,
    POPE_AVG,
    SFT,
    SUMMARY,
    THOUGHT,
    VQA,
    Inputs,
)

from lookright.config import ConfigError
from lookright.report.collect import ReportInputError, discover, load_grpo, reward_set_of
from lookright.report.gallery import choose_columns, choose_samples
from lookright.report.plots import reward_curves, smooth
from lookright.report.tables import (
    answers_table,
    best_cells,
    format_value,
    label,
    markdown_table,
    saliency_table,
)
from lookright.stages.report import load_report_config


def _rows(table: pa.Table) -> dict[tuple, dict]:
    keys = [c for c in ("source", "strategy", "method") if c in table.column_names]
    return {tuple(r[k] for k in keys): r for r in table.to_pylist()}


def test_answers_table_puts_numbers_in_their_cells(inputs: Inputs) -> None:
    table = answers_table(discover(inputs.eval_dir))
    assert [(r["source"], r["strategy"]) for r in table.to_pylist()] == [
        (SFT, "greedy"),
        (SFT, "sgrs"),
        (GRPO, "greedy"),
    ]
    rows = _rows(table)
    for source, strategy in rows:
        row = rows[(source, strategy)]
        acc, prec, rec, f1, yes = POPE_AVG[strategy]
        assert (row["pope_accuracy"], row["pope_precision"], row["pope_recall"]) == (acc, prec, rec)
        assert (row["pope_f1"], row["pope_yes_ratio"]) == (f1, yes)
        chair_s, chair_i, recall, length = CHAIR[strategy]
        assert (row["chair_s"], row["chair_i"]) == (chair_s, chair_i)
        assert (row["chair_recall"], row["caption_length"]) == (recall, length)
        assert (row["latency_pope_s"], row["latency_caption_s"]) == LATENCY[strategy]
        overall, aligned, conflicting = VQA[source]
        assert row["vqa_accuracy"] == overall
        assert row["vqa_accuracy/bias_aligned"] == aligned
        assert row["vqa_accuracy/bias_conflicting"] == conflicting
        assert row["model"] == MODEL
        assert row["run_id"] == f"run-{source}-{strategy}"
    assert rows[(GRPO, "greedy")]["reward_set"] == "acc+fmt+sal"
    assert rows[(SFT, "greedy")]["reward_set"] is None


def test_answers_table_shows_n_per_pope_split_and_chair_mentions(inputs: Inputs) -> None:
    """The POPE average of a run with the popular split missing must say so: n per split."""
    table = answers_table(discover(inputs.eval_dir))
    names = table.column_names
    pope_n = ["pope_n_random", "pope_n_popular", "pope_n_adversarial"]
    assert names[names.index("pope_yes_ratio") + 1 : names.index("pope_yes_ratio") + 4] == pope_n
    assert names[names.index("chair_recall") + 1] == "chair_mentions"
    assert all(table.schema.field(n).type == pa.int64() for n in [*pope_n, "chair_mentions"])
    for row in table.to_pylist():
        if row["source"] == GRPO:  # metrics.json only: counts unknown
            assert row["pope_n_random"] is None and row["chair_mentions"] is None
            continue
        assert [row[n] for n in pope_n] == [20, 0, 10]
        assert row["chair_mentions"] == 17
    markdown = markdown_table(table)
    assert "POPE n (random) | POPE n (popular) | POPE n (adversarial)" in markdown
    assert "CHAIR mentions" in markdown


def test_answers_prefers_a_strategys_own_vqa_accuracy(inputs: Inputs) -> None:
    path = inputs.eval_dir / MODEL / SFT / "sgrs" / "metrics.json"
    path.write_text(path.read_text().replace("{", '{"vqa_accuracy": 0.25, ', 1))
    rows = _rows(answers_table(discover(inputs.eval_dir)))
    assert rows[(SFT, "sgrs")]["vqa_accuracy"] == 0.25
    assert rows[(SFT, "sgrs")]["vqa_accuracy/bias_aligned"] is None
    assert rows[(SFT, "greedy")]["vqa_accuracy"] == VQA[SFT][0]


def test_answers_carry_the_thought_faithfulness_of_the_saliency_evaluation(
    inputs: Inputs,
) -> None:
    """Measured once per model x source (evaluate_saliency), shown on every strategy's row,
    also where the strategy reports its own VQA accuracy."""
    path = inputs.eval_dir / MODEL / SFT / "sgrs" / "metrics.json"
    path.write_text(path.read_text().replace("{", '{"vqa_accuracy": 0.25, ', 1))
    table = answers_table(discover(inputs.eval_dir))
    names = table.column_names
    columns = ["thought_location", "thought_color", "thought_answer_follows", "thought_cot_share"]
    assert names.index("thought_location") > names.index("vqa_accuracy/bias_conflicting")
    for (source, _), row in _rows(table).items():
        assert [row[c] for c in columns] == list(THOUGHT[source])
        assert row["thought_shape"] is None  # not in the metrics: null, not 0
        assert row["thought_color/bias_conflicting"] == THOUGHT[source][1] / 2
    assert "thought_n_checked/bias_conflicting" not in names
    assert names.index("thought_color/bias_conflicting") > names.index("thought_cot_share")
    markdown = markdown_table(table)
    assert "Thought: location" in markdown and "Answer = thought" in markdown
    assert "Thought: colour (bias_conflicting)" in markdown


def test_answers_without_decoding_keep_one_vqa_row_per_source(tmp_path: Path) -> None:
    from report_inputs import build_inputs

    inputs = build_inputs(tmp_path, answers=False)
    table = answers_table(discover(inputs.eval_dir))
    assert table.column("strategy").to_pylist() == [None, None]
    assert table.column("vqa_accuracy").to_pylist() == [VQA[SFT][0], VQA[GRPO][0]]
    assert table.column("pope_f1").null_count == 2


def test_saliency_table_has_saliency_r1_shape(inputs: Inputs) -> None:
    table = saliency_table(discover(inputs.eval_dir))
    assert table.column_names == [
        "model", "source", "reward_set", "method", "n_maps", "n_faithfulness",
        "alignment_mean", "nss_mean", "spearman_mean", "del_5", "del_15", "del_30", "del_50",
        "ins_30", "del_auc", "ins_auc", "run_id",
    ]  # fmt: skip
    assert len(table) == 4
    for (source, method), row in _rows(table).items():
        for column, value in SUMMARY[(source, method)].items():
            assert row[column] == value, (source, method, column)
    assert _rows(table)[(SFT, "random")]["del_50"] is None  # only the GRPO files have it
    assert table.schema.field("del_50").type == pa.float64()
    assert table.schema.field("n_maps").type == pa.int64()
    assert table.column("run_id").to_pylist()[0] == f"run-{SFT}-saliency"


def test_best_cells_and_markdown(inputs: Inputs) -> None:
    table = saliency_table(discover(inputs.eval_dir))
    best = best_cells(table)
    index = {key: i for i, key in enumerate(_rows(table))}
    assert (index[(GRPO, "logit_decomposition")], "alignment_mean") in best
    assert (index[(GRPO, "logit_decomposition")], "del_5") in best  # lower deletion is better
    assert (index[(SFT, "random")], "del_5") not in best
    assert not any(column in ("n_maps", "method") for _, column in best)
    text = markdown_table(table)
    lines = text.splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| Model | Source | Method | Maps |")
    assert "Del 5" in lines[0] and "Ins 30" in lines[0] and "run_id" not in lines[0]
    assert "| **0.830** |" in lines[4]  # GRPO logit_decomposition alignment
    assert "| — |" in lines[5]  # GRPO random NSS is null


def test_labels_and_formatting() -> None:
    assert label("del_15") == "Del 15" and label("ins_2.5") == "Ins 2.5"
    assert label("vqa_accuracy/bias_conflicting") == "VQA acc. (bias_conflicting)"
    assert format_value(None) == "—" and format_value(math.nan) == "—"
    assert format_value(0.12345) == "0.123" and format_value(71.04) == "71.0"
    assert format_value(10) == "10"


def test_discover_names_the_folder_when_empty(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match=str(tmp_path / "missing")):
        discover(tmp_path / "missing")
    (tmp_path / "eval" / "tiny" / "sft" / "saliency").mkdir(parents=True)
    with pytest.raises(ReportInputError, match=f"{tmp_path / 'eval'}: no evaluation outputs"):
        discover(tmp_path / "eval")


def test_reward_set_of() -> None:
    assert reward_set_of("grpo-acc+fmt+sal") == "acc+fmt+sal"
    assert reward_set_of("sft") is None


def test_reward_curves_mean_per_step_and_smoothing(inputs: Inputs) -> None:
    runs = {r.reward_set: r for r in load_grpo(inputs.grpo_samples())}
    curves = reward_curves(runs["acc+fmt+sal"].samples)
    assert curves.column_names == [
        "step", "reward", "reward_accuracy", "reward_format", "reward_saliency_alignment",
    ]  # fmt: skip
    assert curves.column("step").to_pylist() == [0, 1, 2]
    assert curves.column("reward_accuracy").to_pylist() == pytest.approx([0.05, 1.05, 2.05])
    # step 1: rollout 0's saliency reward is null, so the mean is rollout 1's alone
    assert curves.column("reward_saliency_alignment").to_pylist()[1] == pytest.approx(1.1)
    assert curves.column("reward").to_pylist()[1] == pytest.approx(((1 + 1) + (1.1 * 3)) / 2)
    smoothed = smooth([1.0, None, 3.0, 5.0], 2)
    np.testing.assert_allclose(smoothed, [1.0, 1.0, 3.0, 4.0])
    np.testing.assert_allclose(smooth([None, 2.0], 3), [np.nan, 2.0])


def test_gallery_choices(inputs: Inputs) -> None:
    import pyarrow.parquet as pq

    maps = {
        source: pq.read_table(inputs.eval_dir / MODEL / source / "saliency" / "maps.parquet")
        for source in (GRPO, SFT)
    }
    maps[GRPO] = maps[GRPO].filter(pa.compute.not_equal(maps[GRPO]["sample_id"], "s0"))
    assert choose_samples(maps, 2) == ["s1", "s2"]  # in both sources first
    assert choose_columns(maps, ["random"]) == [(SFT, "random"), (GRPO, "random")]
    assert choose_columns(maps, None)[:2] == [(SFT, "logit_decomposition"), (SFT, "random")]


def test_config_validation_names_the_key() -> None:
    cfg = load_report_config('{"report": {"gallery_samples": 2, "smooth_window": 1}}')
    assert (cfg.report.gallery_samples, cfg.report.smooth_window) == (2, 1)
    assert cfg.report.gallery_methods is None
    with pytest.raises(ConfigError, match="report.smooth_window"):
        load_report_config({"report": {"smooth_window": 0}})
    with pytest.raises(ConfigError, match="report.gallery_samples"):
        load_report_config({"report": {"gallery_samples": -1}})
    with pytest.raises(ConfigError, match="report.gallery_methods.*nope"):
        load_report_config({"report": {"gallery_methods": ["random", "nope"]}})
    with pytest.raises(ConfigError, match="report.gallery_methods"):
        load_report_config({"report": {"gallery_methods": []}})
    with pytest.raises(ConfigError, match="report.smoth_window"):
        load_report_config({"report": {"smoth_window": 3}})


def test_discover_ignores_incomplete_folders(inputs: Inputs) -> None:
    shutil.rmtree(inputs.eval_dir / MODEL / GRPO / "greedy")
    (inputs.eval_dir / MODEL / GRPO / "beam").mkdir()  # created, nothing written yet
    outputs = discover(inputs.eval_dir)
    assert [(d.source, d.kind) for d in outputs.answers] == [(SFT, "greedy"), (SFT, "sgrs")]
    assert len(outputs.saliency) == 2
