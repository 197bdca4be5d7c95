"""Multi-seed aggregation (lookright.report.experiment) on hand-made report tables.

Three seed folders, one model ``tiny``; numbers chosen so every statistic is known by hand:

    answers  sft/greedy            vqa 0.2, 0.4, 0.6   (mean 0.4, std 0.2, CI [0.2, 0.6])
             sft/beam              vqa greedy + 0.3 (its own), pope_f1 0.8 in every seed
             grpo-acc+fmt/—        vqa 0.3, 0.5, 0.5   (no decoded answers: null strategy)
             grpo-acc+fmt+sal/—    vqa 0.5, 0.6, 0.7
    saliency cot_bottleneck        alignment sft 0.5, 0.5, 0.5; acc+fmt 0.5, 0.6, 0.4;
                                   acc+fmt+sal 0.7, 0.8, 0.6
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookright.report.experiment import (
    add_cli_arguments,
    aggregate,
    aggregate_branches,
    cli_main,
    effects,
    format_cell,
    seed_of,
    write_summary,
)
from lookright.report.statistics import bootstrap_ci, describe

SFT, ACC, SAL = "sft", "grpo-acc+fmt", "grpo-acc+fmt+sal"
VQA = {SFT: (0.2, 0.4, 0.6), ACC: (0.3, 0.5, 0.5), SAL: (0.5, 0.6, 0.7)}
CONFLICTING = {SFT: (0.1, 0.1, 0.1), ACC: (0.2, 0.0, 0.3), SAL: (0.4, 0.3, 0.2)}
ALIGN = {SFT: (0.5, 0.5, 0.5), ACC: (0.5, 0.6, 0.4), SAL: (0.7, 0.8, 0.6)}
ANSWER_SCHEMA = pa.schema(
    [(k, pa.string()) for k in ("model", "source", "reward_set", "strategy")]
    + [(k, pa.float64()) for k in ("vqa_accuracy", "vqa_accuracy/bias_conflicting", "pope_f1")]
    + [("run_id", pa.string())]
)
SALIENCY_SCHEMA = pa.schema(
    [(k, pa.string()) for k in ("model", "source", "reward_set", "method")]
    + [("n_maps", pa.int64()), ("alignment_mean", pa.float64()), ("del_auc", pa.float64())]
    + [("run_id", pa.string())]
)


def _reward_set(source: str) -> str | None:
    return source.removeprefix("grpo-") if source != SFT else None


def answer_rows(i: int) -> list[dict[str, Any]]:
    rows = []
    for source, strategy, f1 in [(SFT, "greedy", 0.7 + 0.1 * i), (SFT, "beam", 0.8)]:
        rows.append(
            dict(model="tiny", source=source, reward_set=None, strategy=strategy, pope_f1=f1)
        )
    rows += [dict(model="tiny", source=s, reward_set=_reward_set(s)) for s in (ACC, SAL)]
    for row in rows:  # beam's own VQA accuracy differs: effects compare the greedy row
        row["vqa_accuracy"] = VQA[row["source"]][i] + (0.3 if row.get("strategy") == "beam" else 0)
        row["vqa_accuracy/bias_conflicting"] = CONFLICTING[row["source"]][i]
        row["run_id"] = f"ans-{row['source']}-{row.get('strategy')}-s{i}"
    return rows


def saliency_rows(i: int) -> list[dict[str, Any]]:
    return [
        dict(
            model="tiny",
            source=source,
            reward_set=_reward_set(source),
            method=method,
            n_maps=10 + i,
            alignment_mean=ALIGN[source][i] if method == "cot_bottleneck" else 0.1 * (i + 1),
            del_auc=40.0 + i,
            run_id=f"sal-{source}-s{i}",
        )
        for source in (SFT, ACC, SAL)
        for method in ("cot_bottleneck", "logit_decomposition")
    ]


def write_seed(
    folder: Path, answers: list[dict[str, Any]], saliency: list[dict[str, Any]] | None
) -> Path:
    (folder / "report").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(answers, ANSWER_SCHEMA), folder / "report/answers.parquet")
    if saliency is not None:
        table = pa.Table.from_pylist(saliency, SALIENCY_SCHEMA)
        pq.write_table(table, folder / "report/saliency.parquet")
    for sub in ("sft/tiny", "grpo/tiny/acc+fmt+sal"):
        (folder / sub).mkdir(parents=True)
        run_id = f"train-{sub.split('/')[-1]}-{folder.name}"
        (folder / sub / "run.json").write_text(json.dumps({"run_id": run_id}))
    return folder


@pytest.fixture
def seed_dirs(tmp_path: Path) -> list[Path]:
    return [write_seed(tmp_path / f"seed{i}", answer_rows(i), saliency_rows(i)) for i in range(3)]


def stats(summary: pa.Table, metric: str, **keys: Any) -> dict[str, Any]:
    rows = [
        r
        for r in summary.to_pylist()
        if r["metric"] == metric and all(r[k] == v for k, v in keys.items())
    ]
    assert len(rows) == 1, rows
    return rows[0]


def effect(effects_table: pa.Table, **keys: Any) -> dict[str, Any]:
    rows = [r for r in effects_table.to_pylist() if all(r[k] == v for k, v in keys.items())]
    assert len(rows) == 1, rows
    return rows[0]


# -- statistics ---------------------------------------------------------------------------


def test_describe_matches_hand_computation() -> None:
    got = describe([0.2, 0.4, 0.6])
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(0.4)
    assert got["std"] == pytest.approx(0.2)  # sqrt((0.04 + 0 + 0.04) / 2)
    # n = 3: each extreme resample (all three draws equal) has probability 1/27 > 2.5%, so the
    # 2.5% / 97.5% percentiles of the bootstrap means are the smallest / largest value
    assert (got["ci_lo"], got["ci_hi"]) == pytest.approx((0.2, 0.6))


def test_bootstrap_uses_seed_0_and_2000_resamples() -> None:
    values = np.array([0.1, 0.35, 0.2, 0.9, 0.55, 0.4, 0.05, 0.7])
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(2000, len(values)))].mean(axis=1)
    expected = tuple(np.percentile(means, [2.5, 97.5]))
    lo, hi = bootstrap_ci(values)
    assert (lo, hi) == pytest.approx(expected)
    assert values.min() < lo < values.mean() < hi < values.max()
    assert bootstrap_ci(values) == (lo, hi)  # deterministic


def test_identical_values_collapse_and_short_samples_are_null() -> None:
    same = describe([0.7, 0.7, 0.7])
    assert same["std"] == pytest.approx(0.0)
    assert same["ci_lo"] == same["ci_hi"] == pytest.approx(0.7)
    one = describe([0.5, None, float("nan")])
    assert (one["n"], one["mean"], one["std"], one["ci_lo"], one["ci_hi"]) == (
        1,
        0.5,
        None,
        None,
        None,
    )
    assert describe([])["mean"] is None


def test_format_cell() -> None:
    assert format_cell(describe([0.2, 0.4, 0.6])) == "0.400 ± 0.200 [0.200, 0.600] (3)"
    assert format_cell(describe([0.25])) == "0.250 (1)"
    assert format_cell(describe([None])) == "—"


def test_seed_of_folder_names(tmp_path: Path) -> None:
    assert seed_of(tmp_path / "seed12") == 12
    assert seed_of(tmp_path / "baseline") == "baseline"


# -- aggregate ----------------------------------------------------------------------------


def test_aggregate_stacks_seeds_and_summarises(seed_dirs: list[Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every group is in every seed: no warning
        tables = aggregate(seed_dirs)
    by_seed = tables["answers_by_seed"]
    assert by_seed.column_names[0] == "seed"
    assert by_seed.schema.field("seed").type == pa.int64()
    assert sorted(set(by_seed["seed"].to_pylist())) == [0, 1, 2]
    assert len(by_seed) == 12 and len(tables["saliency_by_seed"]) == 18

    summary = tables["answers_summary"]
    greedy = stats(summary, "vqa_accuracy", source=SFT, strategy="greedy")
    assert greedy["mean"] == pytest.approx(0.4) and greedy["std"] == pytest.approx(0.2)
    assert (greedy["n"], greedy["n_seeds"]) == (3, 3)
    assert greedy["ci_lo"] <= greedy["mean"] <= greedy["ci_hi"]
    assert greedy["seeds"] == [0, 1, 2]
    assert greedy["run_ids"] == [f"ans-sft-greedy-s{i}" for i in range(3)]
    assert greedy["train_run_ids"] == [f"train-tiny-seed{i}" for i in range(3)]

    beam = stats(summary, "pope_f1", source=SFT, strategy="beam")
    assert beam["ci_lo"] == beam["ci_hi"] == pytest.approx(0.8)
    no_pope = stats(summary, "pope_f1", source=ACC, strategy=None)
    assert (no_pope["n"], no_pope["mean"], no_pope["std"]) == (0, None, None)
    # GRPO branch without run.json of its training: null train run ids, reward set kept
    assert no_pope["train_run_ids"] == [None] * 3 and no_pope["reward_set"] == "acc+fmt"

    maps = stats(tables["saliency_summary"], "n_maps", source=SFT, method="cot_bottleneck")
    assert maps["mean"] == pytest.approx(11.0) and maps["std"] == pytest.approx(1.0)
    # the report's order: sft first, then the GRPO branches
    assert [r["source"] for r in summary.to_pylist()][0] == SFT


def test_effects_paired_differences_and_sign_counts(seed_dirs: list[Path]) -> None:
    table = aggregate(seed_dirs)["effects"]
    # grpo-acc+fmt - sft on VQA: 0.1, 0.1, -0.1 (the GRPO rows have no strategy)
    acc = effect(table, table="answers", metric="vqa_accuracy", source=ACC, reference=SFT)
    assert (acc["n"], acc["n_positive"], acc["n_negative"]) == (3, 2, 1)
    assert acc["mean"] == pytest.approx(0.1 / 3)
    assert acc["strategy"] == "greedy" and acc["seeds"] == ["0", "1", "2"]
    # grpo-acc+fmt+sal - grpo-acc+fmt: 0.2, 0.1, 0.2
    sal = effect(table, table="answers", metric="vqa_accuracy", source=SAL, reference=ACC)
    assert sal["n_positive"] == 3 and sal["mean"] == pytest.approx(0.5 / 3)
    assert sal["ci_lo"] == pytest.approx(0.1) and sal["ci_hi"] == pytest.approx(0.2)
    # the bias-conflicting subset: sft - grpo-acc+fmt = -0.1, 0.1, -0.2
    sub = effect(table, metric="vqa_accuracy/bias_conflicting", source=SFT, reference=ACC)
    assert (sub["n_positive"], sub["n_negative"]) == (1, 2)
    assert sub["mean"] == pytest.approx(-0.2 / 3)
    # saliency: acc+fmt+sal - acc+fmt on cot_bottleneck alignment = 0.2 in every seed
    cot = effect(table, table="saliency", method="cot_bottleneck", source=SAL, reference=ACC)
    assert cot["n_positive"] == 3 and cot["std"] == pytest.approx(0.0, abs=1e-12)
    assert (cot["ci_lo"], cot["ci_hi"]) == pytest.approx((0.2, 0.2))
    # acc+fmt - sft: 0, +0.1, -0.1 -> a tie counts as neither sign
    tie = effect(table, table="saliency", method="cot_bottleneck", source=ACC, reference=SFT)
    assert (tie["n_positive"], tie["n_negative"], tie["n"]) == (1, 1, 3)
    assert {r["method"] for r in table.to_pylist() if r["table"] == "saliency"} == {
        "cot_bottleneck",
        "logit_decomposition",
    }


def test_effects_options_and_underscore_alias(seed_dirs: list[Path]) -> None:
    tables = aggregate(seed_dirs)
    table = effects(
        tables,
        references=["sft", "grpo-missing"],
        answer_metrics=["vqa_accuracy_bias_conflicting", "not_a_column"],
        methods=["logit_decomposition"],
    )
    rows = table.to_pylist()
    assert {r["reference"] for r in rows} == {"sft"}
    beam = effects(tables, references=["sft"], methods=[], strategy="beam")
    row = effect(beam, metric="vqa_accuracy", source=ACC)  # beam: sft + 0.3 in every seed
    assert row["strategy"] == "beam" and row["n_negative"] == 3
    assert row["mean"] == pytest.approx(0.1 / 3 - 0.3)
    # sft was not decoded with "sample" (and has no strategy-less row): nothing to pair with
    assert effects(tables, references=["sft"], methods=[], strategy="sample").num_rows == 0
    assert {r["metric"] for r in rows} == {"vqa_accuracy/bias_conflicting", "alignment_mean"}
    assert {(r["source"], r["table"]) for r in rows} == {
        (s, t) for s in (ACC, SAL) for t in ("answers", "saliency")
    }


def test_groups_missing_from_a_seed_warn_and_give_null_std(tmp_path: Path) -> None:
    dirs = [write_seed(tmp_path / f"seed{i}", answer_rows(i), saliency_rows(i)) for i in range(2)]
    extra = answer_rows(2) + [
        dict(model="tiny", source="grpo-sayo", reward_set="sayo", vqa_accuracy=0.25)
    ]
    dirs.append(write_seed(tmp_path / "seed2", extra, saliency_rows(2)))
    with pytest.warns(
        UserWarning, match=r"answers: 1 group.*tiny / grpo-sayo / — \(n=1, seeds 2\)"
    ):
        tables = aggregate(dirs)
    lone = stats(tables["answers_summary"], "vqa_accuracy", source="grpo-sayo")
    assert (lone["n"], lone["n_seeds"], lone["mean"]) == (1, 1, 0.25)
    assert lone["std"] is None and lone["ci_lo"] is None and lone["ci_hi"] is None
    text = write_summary(tables, tmp_path / "out")["summary_md"].read_text()
    assert "0.250 (1)" in text
    assert "- answers: tiny / grpo-sayo / — only in seeds 2" in text


def test_missing_report_table_names_folder_and_file(tmp_path: Path) -> None:
    good = write_seed(tmp_path / "seed0", answer_rows(0), saliency_rows(0))
    broken = write_seed(tmp_path / "seed1", answer_rows(1), None)
    with pytest.raises(
        FileNotFoundError, match=r"seed folder .*seed1: missing report/saliency\.parquet"
    ):
        aggregate([good, broken])
    with pytest.raises(
        FileNotFoundError, match=r"seed folder .*seed7: missing report/answers\.parquet"
    ):
        aggregate([good, tmp_path / "seed7"])


# -- writing and CLI ----------------------------------------------------------------------


def test_write_summary_files_and_markdown(seed_dirs: list[Path], tmp_path: Path) -> None:
    tables = aggregate(seed_dirs)
    written = write_summary(tables, tmp_path / "summary")
    names = {p.name for p in (tmp_path / "summary").iterdir()}
    assert names == {
        "answers_by_seed.parquet",
        "answers_summary.parquet",
        "saliency_by_seed.parquet",
        "saliency_summary.parquet",
        "effects.parquet",
        "summary.md",
    }
    assert pq.read_table(written["answers_summary"]).equals(tables["answers_summary"])
    assert pq.read_table(written["effects"]).num_rows == tables["effects"].num_rows
    text = written["summary_md"].read_text()
    assert "| Model | Source | Strategy | VQA acc. |" in text
    assert "| tiny | sft | greedy | 0.400 ± 0.200 [0.200, 0.600] (3) |" in text
    assert "0.800 ± 0.000 [0.800, 0.800] (3)" in text  # beam's POPE F1
    assert "11.000 ± 1.000" in text  # n_maps, an integer column
    assert (
        "| saliency | tiny | Alignment | cot_bottleneck | grpo-acc+fmt+sal | grpo-acc+fmt |" in text
    )
    assert "| 3/3 |" in text
    line = next(x for x in text.splitlines() if x.startswith("- tiny / sft / greedy:"))
    assert "seed 1: `ans-sft-greedy-s1` (trained by `train-tiny-seed1`)" in line
    assert "`sal-grpo-acc+fmt+sal-s2`" in text
    assert "missing from some seeds" not in text
    assert not [p for p in (tmp_path / "summary").iterdir() if p.name.endswith(".tmp")]


def test_cli_repeatable_seed_dirs(seed_dirs: list[Path], tmp_path: Path, capsys) -> None:
    parser = add_cli_arguments(argparse.ArgumentParser())
    out = tmp_path / "cli"
    args = parser.parse_args(
        ["--seed-dir", str(seed_dirs[0]), str(seed_dirs[1]), "--seed-dir", str(seed_dirs[2]),
         "--out", str(out), "--reference", "sft", "--method", "cot_bottleneck"]
    )  # fmt: skip
    assert args.seed_dirs == seed_dirs
    assert cli_main(args) == 0
    assert "3 seeds" in capsys.readouterr().out
    table = pq.read_table(out / "effects.parquet").to_pylist()
    assert {r["reference"] for r in table} == {"sft"}
    assert {r["method"] for r in table} == {None, "cot_bottleneck"}
    assert not math.isnan(table[0]["mean"])


def test_seed_column_falls_back_to_folder_names(tmp_path: Path) -> None:
    dirs = [
        write_seed(tmp_path / name, answer_rows(i), saliency_rows(i))
        for i, name in enumerate(("seed3", "rerun"))
    ]
    by_seed = aggregate(dirs)["answers_by_seed"]
    assert by_seed.schema.field("seed").type == pa.string()
    assert set(by_seed["seed"].to_pylist()) == {"3", "rerun"}


def test_seeded_branches_pair_every_seed_with_the_shared_sft(tmp_path: Path) -> None:
    """One folder, GRPO branches ``grpo-<set>@<N>`` and one SFT model shared by all seeds."""
    rows = [
        {"model": "m", "source": "sft", "reward_set": None, "strategy": None, "vqa_accuracy": 0.5},
        *(
            {"model": "m", "source": f"grpo-acc@{seed}", "reward_set": f"acc@{seed}",
             "strategy": None, "vqa_accuracy": value}
            for seed, value in ((0, 0.6), (1, 0.4), (2, 0.8))
        ),
    ]  # fmt: skip
    saliency = [
        {"model": "m", "source": "sft", "method": "random", "alignment_mean": 0.1},
        {"model": "m", "source": "grpo-acc@0", "method": "random", "alignment_mean": 0.2},
    ]
    (tmp_path / "report").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "report" / "answers.parquet")
    pq.write_table(pa.Table.from_pylist(saliency), tmp_path / "report" / "saliency.parquet")
    tables = aggregate_branches(tmp_path)
    by_seed = tables["answers_by_seed"].to_pylist()
    assert {(r["seed"], r["source"], r["reward_set"]) for r in by_seed} == {
        ("shared", "sft", None),
        ("0", "grpo-acc", "acc"),
        ("1", "grpo-acc", "acc"),
        ("2", "grpo-acc", "acc"),
    }
    effect = next(
        r
        for r in tables["effects"].to_pylist()
        if r["table"] == "answers" and r["reference"] == "sft" and r["source"] == "grpo-acc"
    )
    assert effect["n"] == 3
    assert effect["mean"] == pytest.approx(0.1)  # (0.1 - 0.1 + 0.3) / 3
    assert (effect["n_positive"], effect["n_negative"]) == (2, 1)
    summary = tables["answers_summary"].to_pylist()
    grpo = next(r for r in summary if r["source"] == "grpo-acc" and r["metric"] == "vqa_accuracy")
    assert grpo["n"] == 3 and grpo["mean"] == pytest.approx(0.6)


def test_cli_needs_exactly_one_kind_of_input(tmp_path: Path) -> None:
    from lookright.cli import main

    assert main(["experiment-summary", "--out", str(tmp_path / "x")]) == 2
    both = ["--branches", str(tmp_path), "--seed-dir", str(tmp_path)]
    assert main(["experiment-summary", *both, "--out", str(tmp_path / "x")]) == 2


def test_seeded_decode_branches_pair_sgrs_with_sample_seed_by_seed(tmp_path: Path) -> None:
    """``sample@N`` / ``sgrs@N`` rows of one SFT model: Q3's comparison, paired over seeds."""
    f1 = {"sample": (0.60, 0.70, 0.50), "sgrs": (0.65, 0.68, 0.60)}
    rows = [
        {"model": "m", "source": "sft", "reward_set": None, "strategy": "greedy", "pope_f1": 0.9},
        *(
            {"model": "m", "source": "sft", "reward_set": None, "strategy": f"{s}@{seed}",
             "pope_f1": values[seed]}
            for s, values in f1.items()
            for seed in range(3)
        ),
    ]  # fmt: skip
    saliency = [{"model": "m", "source": "sft", "method": "random", "alignment_mean": 0.1}]
    (tmp_path / "report").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "report" / "answers.parquet")
    pq.write_table(pa.Table.from_pylist(saliency), tmp_path / "report" / "saliency.parquet")
    tables = aggregate_branches(tmp_path)
    by_seed = {(r["seed"], r["strategy"]) for r in tables["answers_by_seed"].to_pylist()}
    assert by_seed == {("shared", "greedy")} | {
        (str(seed), s) for s in ("sample", "sgrs") for seed in range(3)
    }
    sgrs = effect(tables["effects"], metric="pope_f1", strategy="sgrs", reference="sample")
    assert sgrs["source"] == "sft" and sgrs["n"] == 3
    assert sgrs["mean"] == pytest.approx((0.05 - 0.02 + 0.10) / 3)
    assert (sgrs["n_positive"], sgrs["n_negative"]) == (2, 1)
    # greedy is decoded once: it is never paired against the seeded reference
    assert not [r for r in tables["effects"].to_pylist() if r["strategy"] == "greedy"]
    summary = stats(tables["answers_summary"], "pope_f1", strategy="sample")
    assert summary["n"] == 3 and summary["mean"] == pytest.approx(0.6)


def test_a_row_seeded_twice_is_an_error(tmp_path: Path) -> None:
    rows = [{"model": "m", "source": "grpo-acc@1", "reward_set": "acc@1",
             "strategy": "sample@2", "pope_f1": 0.5}]  # fmt: skip
    (tmp_path / "report").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "report" / "answers.parquet")
    with pytest.raises(ValueError, match=r"grpo-acc@1/sample@2: .* two seeds"):
        aggregate_branches(tmp_path)
