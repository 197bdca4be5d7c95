"""Stratified, seeded subsamples (lookright.data.subsample) and the stage loaders using them."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from lookright.config import load_stage_config
from lookright.data.prepare import prepare
from lookright.data.subsample import (
    equal_shares,
    proportional_shares,
    stratified_indices,
    stratum_counts,
)
from lookright.stages.prepare_data import PrepareDataConfig
from lookright.train.datasets import load_subsample

REAL = Path(__file__).parents[1] / "fixtures" / "real"


def _pope(n_per_split: int, yes_fraction: float = 0.5) -> list[dict]:
    rows = []
    for split in ("random", "popular", "adversarial"):
        for k in range(n_per_split):
            answer = "yes" if k < yes_fraction * n_per_split else "no"
            rows.append(
                {
                    "sample_id": f"pope-{split}-{k}",
                    "task": "pope",
                    "source": "pope",
                    "pope_split": split,
                    "subset": None,
                    "answer": answer,
                }
            )
    return rows


def _vqa(source: str, n: int) -> list[dict]:
    return [
        {
            "sample_id": f"{source}-{k:05d}",
            "task": "vqa",
            "source": source,
            "pope_split": None,
            "subset": None,
            "answer": "red",
        }
        for k in range(n)
    ]


def _picked(rows: list[dict], n: int | None, seed: int = 0) -> list[dict]:
    return [rows[i] for i in stratified_indices(rows, n, seed)]


def test_pope_subsample_covers_every_split_equally():
    """ "pope-adversarial-*" sorts first: the first 60 rows by id are one split alone."""
    rows = _pope(100)
    assert {r["pope_split"] for r in sorted(rows, key=lambda r: r["sample_id"])[:60]} == {
        "adversarial"
    }
    picked = _picked(rows, 60)
    assert Counter(r["pope_split"] for r in picked) == {
        "random": 20,
        "popular": 20,
        "adversarial": 20,
    }
    assert Counter((r["pope_split"], r["answer"]) for r in picked)[("random", "yes")] == 10
    assert [r["sample_id"] for r in picked] == sorted(r["sample_id"] for r in picked)


def test_labels_keep_their_proportion_within_a_stratum():
    picked = _picked(_pope(100, yes_fraction=0.75), 60)
    assert Counter(r["answer"] for r in picked) == {"yes": 45, "no": 15}


def test_every_source_is_sampled():
    """saliency-r1-8k ids sort before vqa-hat's: the first 100 would hold no human map."""
    rows = _vqa("saliency-r1-8k", 100) + _vqa("vqa-hat", 300)
    picked = _picked(rows, 100)
    assert Counter(r["source"] for r in picked) == {"saliency-r1-8k": 50, "vqa-hat": 50}
    assert stratum_counts(picked) == {"vqa/saliency-r1-8k": 50, "vqa/vqa-hat": 50}


def test_a_small_stratum_gives_its_share_to_the_others():
    rows = _vqa("a", 5) + _vqa("b", 100) + _vqa("c", 100)
    assert Counter(r["source"] for r in _picked(rows, 60)) == {"a": 5, "b": 27, "c": 28}
    assert equal_shares({"a": 5, "b": 100, "c": 100}, 60) == {"a": 5, "b": 27, "c": 28}
    assert equal_shares({"a": 5, "b": 10}, 100) == {"a": 5, "b": 10}
    assert proportional_shares({"yes": 3, "no": 1}, 2) == {"yes": 2, "no": 0}
    assert sum(proportional_shares({"x": 1, "y": 1, "z": 1}, 2).values()) == 2


def test_deterministic_by_seed_and_independent_of_row_order():
    rows = _pope(50) + _vqa("saliency-r1-8k", 40)
    first = [r["sample_id"] for r in _picked(rows, 30, seed=1)]
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    assert [r["sample_id"] for r in _picked(shuffled, 30, seed=1)] == first
    others = {tuple(r["sample_id"] for r in _picked(rows, 30, seed=s)) for s in range(2, 6)}
    assert len(others) > 1


def test_all_rows_when_n_is_none_or_large():
    rows = _pope(3)
    assert len(_picked(rows, None)) == len(_picked(rows, 100)) == 9
    with pytest.raises(ValueError, match=">= 0"):
        stratified_indices(rows, -1, 0)


def test_load_subsample_reads_stratified_rows_of_prepared_data(tmp_path):
    files = [
        str(REAL / "pope" / f"coco_pope_{s}.json") for s in ("random", "popular", "adversarial")
    ]
    entry = {"reader": "pope", "files": files, "image_root": str(REAL / "images")}
    section = load_stage_config(
        PrepareDataConfig,
        {"data": {"source": "real", "max_rejected_fraction": 0.9, "real": [entry]}},
    ).data
    prepare(section, tmp_path)
    rows = load_subsample(tmp_path, "test", ["pope"], ["eval"], 3, seed=0).to_pylist()
    assert Counter(r["pope_split"] for r in rows) == {"random": 1, "popular": 1, "adversarial": 1}
    assert all(r["image_bytes"] for r in rows)
    assert load_subsample(tmp_path, "test", ["pope"], ["sft"], 3, seed=0).num_rows == 0


def test_evaluate_scores_every_source(tmp_path):
    """evaluate.max_samples took the first N test VQA rows by id: saliency-r1-8k's sort
    before vqa-hat's, so NSS (VQA-HAT only) was never computed."""
    from lookright.stages.evaluate_saliency import load_vqa_samples

    real = [
        {
            "reader": "saliency_r1",
            "source": str(REAL / "saliency_r1" / "train.parquet"),
            "split": "test",
        },
        {
            "reader": "vqa_hat",
            "maps_dir": str(REAL / "vqa_hat" / "maps"),
            "questions": str(REAL / "vqa_hat" / "questions.json"),
            "image_root": str(REAL / "images"),
        },
    ]
    section = load_stage_config(
        PrepareDataConfig, {"data": {"source": "real", "max_rejected_fraction": 0.9, "real": real}}
    ).data
    prepare(section, tmp_path)
    rows = load_vqa_samples(tmp_path, "test", 4, seed=0)
    assert Counter(r["source"] for r in rows) == {"saliency-r1-8k": 2, "vqa-hat": 2}
    assert sum(r["human_map"] is not None for r in rows) == 2
