"""The ``evaluate_answers`` stage on hand-made answers: POPE, CHAIR, latency, MLflow run.

Expected numbers are worked out by hand in the comments next to each answer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookright import tracking
from lookright.config import ConfigError
from lookright.data.schema import SAMPLES
from lookright.io import SchemaError, write_rows
from lookright.metrics.chair import get_singulariser, singularise
from lookright.stages.decode import DECODED
from lookright.stages.evaluate_answers import (
    ANSWER_COLUMNS,
    CAPTIONS_TABLE,
    CHAIR_TABLE,
    POPE_TABLE,
    build_vocabulary,
    read_synonyms_file,
    run_evaluate_answers,
)
from lookright.stages.evaluation import EvaluateConfig

# (sample_id, pope_split, answer, reference) -> parsed prediction, outcome
POPE = [
    ("p1", "random", "Yes.", "yes"),  # yes TP
    ("p2", "random", "No, there is not.", "no"),  # no TN
    ("p3", "random", "There isn't one", "yes"),  # no FN
    ("p4", "random", "", "no"),  # empty -> no, TN
    ("p5", "popular", "Yes, there is a star.", "no"),  # yes FP
    ("p6", "popular", "yes", "yes"),  # yes TP
    ("p7", "adversarial", "NOT at all", "no"),  # no TN
    ("p8", "adversarial", "There is a circle. No doubt.", "yes"),  # first sentence: yes TP
    ("p9", "adversarial", "I don't think so", "no"),  # no TN
]
# split: accuracy, precision, recall, f1 = 2tp / (2tp + fp + fn), yes_ratio, n
RANDOM = (3 / 4, 1.0, 1 / 2, 2 / 3, 1 / 4, 4)  # tp 1, fp 0, tn 2, fn 1
POPULAR = (1 / 2, 1 / 2, 1.0, 2 / 3, 1.0, 2)  # tp 1, fp 1, tn 0, fn 0
ADVERSARIAL = (1.0, 1.0, 1.0, 1.0, 1 / 3, 3)  # tp 1, fp 0, tn 2, fn 0
AVERAGE = (3 / 4, 5 / 6, 5 / 6, 7 / 9, 19 / 36, 9)  # mean of the three splits
ALL = (7 / 9, 3 / 4, 3 / 4, 3 / 4, 4 / 9, 9)  # pooled: tp 3, fp 1, tn 4, fn 1
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio", "n")

IMAGE_OBJECTS = {
    "im0": ["circle", "square"],
    "im1": ["triangle"],
    "im2": ["red triangle", "blob"],  # -> triangle; "blob" is outside the vocabulary
}
# (sample_id, image_id, caption, n_tokens, time_s)
CAPTIONS = [
    ("c1", "im0", "A red circle and two blue squares.", 10, 1.0),  # circle, square; 7 words
    ("c2", "im1", "There is a triangle next to a star and another star.", 12, 2.0),  # 2x star
    ("c3", "im2", "", 1, 1.0),  # empty: no mention, 0 words, misses the triangle
    ("c4", "im0", "Nothing to see here.", 5, 0.0),  # no mention, 4 words
]
# CHAIRs = 1 / 4 captions; CHAIRi = 2 star mentions / 5 mentions; recall = (2 + 1 + 0 + 0) /
# (2 + 1 + 1 + 2) ground-truth objects; mean length = (7 + 11 + 0 + 4) / 4.
CHAIR = {"chair_s": 1 / 4, "chair_i": 2 / 5, "recall": 3 / 6, "mean_length": 22 / 4}


def _answer(sample_id: str, image_id: str, task: str, **values: Any) -> dict[str, Any]:
    return {
        "sample_id": sample_id,
        "image_id": image_id,
        "task": task,
        "question": "q",
        "strategy": "greedy",
        "model": "tiny",
        "token_ids": [1] * values.get("n_tokens", 2),
        "n_tokens": 2,
        "batch_index": 0,
        "batch_size": 1,
        "batch_time_s": values.get("time_s", 0.5),
        "batch_saliency_time_s": 0.0,
        "time_s": 0.5,
        **values,
        "text": values["answer"],
    }


def _answers(tasks: tuple[str, ...] = ("pope", "caption")) -> list[dict[str, Any]]:
    rows = []
    if "pope" in tasks:
        for sample_id, split, answer, reference in POPE:
            rows.append(
                _answer(
                    sample_id, "im0", "pope", pope_split=split, answer=answer, reference=reference
                )
            )
    if "caption" in tasks:
        for sample_id, image_id, caption, n_tokens, time_s in CAPTIONS:
            rows.append(
                _answer(
                    sample_id,
                    image_id,
                    "caption",
                    answer=caption,
                    reference="There is a red circle.",
                    n_tokens=n_tokens,
                    time_s=time_s,
                )
            )
    return rows


def _write_data(
    root: Path,
    objects: dict[str, list[str]] = IMAGE_OBJECTS,
    vocabulary: str | None = "shapes",
    captions: list[tuple[str, str]] | None = None,
) -> Path:
    """samples.parquet with the caption samples (sample_id, image_id) and their objects."""
    pairs = captions if captions is not None else [(c[0], c[1]) for c in CAPTIONS]
    rows = [
        {
            "sample_id": sample_id,
            "image_id": image_id,
            "split": "test",
            "source": "shapes",
            "roles": ["eval"],
            "task": "caption",
            "question": "Describe the image.",
            "answer": "reference",
            "boxes": [],
            "objects": objects[image_id],
            "object_boxes": [[0.1, 0.1, 0.4, 0.4]] * len(objects[image_id]),
            "object_vocabulary": vocabulary,
        }
        for sample_id, image_id in pairs
    ]
    write_rows(rows, SAMPLES, root / "data" / "samples.parquet")
    return root / "data"


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    answers = write_rows(_answers(), DECODED, tmp_path / "decode" / "answers.parquet")
    return answers, _write_data(tmp_path)


def test_answer_columns_are_written_by_decode() -> None:
    assert set(ANSWER_COLUMNS) <= set(DECODED.names)


def test_pope_chair_and_latency_match_hand_computed_values(inputs, tmp_path: Path) -> None:
    answers, data = inputs
    out = tmp_path / "eval"
    with pytest.warns(UserWarning, match=r"outside the CHAIR vocabulary, ignored: \['blob'\]"):
        metrics = run_evaluate_answers(EvaluateConfig(), answers, data, out)

    pope = pq.read_table(out / "pope.parquet")
    assert pope.schema.equals(POPE_TABLE)
    rows = {r["split"]: r for r in pope.to_pylist()}
    assert list(rows) == ["random", "popular", "adversarial", "average", "all"]
    expected = {
        "random": RANDOM,
        "popular": POPULAR,
        "adversarial": ADVERSARIAL,
        "average": AVERAGE,
        "all": ALL,
    }
    for split, values in expected.items():
        assert [rows[split][m] for m in METRICS] == pytest.approx(list(values)), split
        assert rows[split]["model"] == "tiny" and rows[split]["strategy"] == "greedy"
        for name, value in zip(METRICS, values, strict=True):
            assert metrics[f"pope/{split}/{name}"] == pytest.approx(value)
    assert [rows["all"][k] for k in ("tp", "fp", "tn", "fn")] == [3, 1, 4, 1]
    assert rows["average"]["tp"] is None
    assert metrics["n_pope"] == 9

    chair = pq.read_table(out / "chair.parquet")
    assert chair.schema.equals(CHAIR_TABLE)
    (row,) = chair.to_pylist()
    assert {k: row[k] for k in CHAIR} == pytest.approx(CHAIR)
    assert (row["n_captions"], row["n_mentions"], row["n_hallucinated_mentions"]) == (4, 5, 2)
    assert (row["n_gt_objects"], row["n_covered"], row["vocabulary"]) == (6, 3, "shapes")
    assert metrics["chair_s"] == pytest.approx(1 / 4)
    assert metrics["chair_i"] == pytest.approx(2 / 5)
    assert metrics["chair_recall"] == pytest.approx(1 / 2)
    assert metrics["caption_mean_length"] == pytest.approx(5.5)
    assert metrics["n_captions"] == 4

    captions = pq.read_table(out / "captions.parquet")
    assert captions.schema.equals(CAPTIONS_TABLE)
    by_id = {r["sample_id"]: r for r in captions.to_pylist()}
    assert by_id["c1"]["mentioned"] == ["circle", "square"] and by_id["c1"]["hallucinated"] == []
    assert by_id["c2"]["mentioned"] == ["triangle", "star"]
    assert by_id["c2"]["hallucinated"] == ["star"]
    assert (by_id["c2"]["n_mentions"], by_id["c2"]["n_hallucinated_mentions"]) == (3, 2)
    assert by_id["c3"]["caption"] == "" and by_id["c3"]["mentioned"] == []
    assert by_id["c3"]["gt_objects"] == ["triangle"]  # "red triangle" -> triangle
    assert [by_id[c]["n_words"] for c in ("c1", "c2", "c3", "c4")] == [7, 11, 0, 4]

    # latency: POPE rows take 0.5 s for 2 tokens; captions (1 + 2 + 1 + 0) s for 28 tokens
    assert metrics["time_per_sample_s/pope"] == pytest.approx(0.5)
    assert metrics["tokens_per_s/pope"] == pytest.approx(4.0)
    assert metrics["time_per_sample_s/caption"] == pytest.approx(1.0)
    assert metrics["tokens_per_s/caption"] == pytest.approx(7.0)

    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    assert all(math.isfinite(v) for v in metrics.values())


def test_absent_task_and_zero_denominators(tmp_path: Path) -> None:
    """Only POPE answers, all "no": no CHAIR metrics, precision/recall/F1 are 0.0."""
    rows = [
        _answer("p1", "im0", "pope", pope_split="random", answer="No.", reference="yes"),
        _answer("p2", "im0", "pope", pope_split="random", answer="There isn't.", reference="no"),
    ]
    answers = write_rows(rows, DECODED, tmp_path / "answers.parquet")
    with pytest.warns(UserWarning, match="no caption answers"):
        metrics = run_evaluate_answers(EvaluateConfig(), answers, tmp_path / "nodata", tmp_path)
    assert metrics["pope/random/precision"] == metrics["pope/random/f1"] == 0.0
    assert metrics["pope/random/accuracy"] == 0.5 and metrics["pope/random/yes_ratio"] == 0.0
    assert not any(k.startswith(("chair", "caption")) for k in metrics)
    assert "time_per_sample_s/caption" not in metrics
    assert pq.read_table(tmp_path / "chair.parquet").num_rows == 0
    assert pq.read_table(tmp_path / "captions.parquet").num_rows == 0


@pytest.mark.filterwarnings("ignore:.*no pope answers")
def test_captions_without_mentions_are_flagged_not_zero(tmp_path: Path) -> None:
    """No object mention in any caption: CHAIR is undefined, never shown as 0."""
    rows = [_answer("c1", "im0", "caption", answer="", reference="A red circle.")]
    answers = write_rows(rows, DECODED, tmp_path / "answers.parquet")
    data = _write_data(tmp_path, {"im0": ["circle"]}, captions=[("c1", "im0")])
    metrics = run_evaluate_answers(EvaluateConfig(), answers, data, tmp_path / "out")
    assert not {"chair_s", "chair_i", "chair_recall"} & set(metrics)
    assert metrics["chair_n_mentions"] == 0 and metrics["chair_n_reference_mentions"] == 1
    assert metrics["caption_mean_length"] == 0.0
    (row,) = pq.read_table(tmp_path / "out" / "chair.parquet").to_pylist()
    assert row["chair_s"] is None and row["chair_i"] is None and row["recall"] is None
    assert row["note"].startswith("no object mention in any of the 1 captions")
    assert not any(k.startswith("pope") for k in metrics)
    assert pq.read_table(tmp_path / "out" / "pope.parquet").num_rows == 0


@pytest.mark.filterwarnings("ignore:.*no pope answers")
def test_chair_fails_when_the_reference_captions_mention_nothing(tmp_path: Path) -> None:
    """A vocabulary that does not fit the captions (here a custom synonyms file) used to read
    CHAIR 0 with only a warning; the reference captions now show the mismatch."""
    rows = [_answer("c1", "im0", "caption", answer="a zebra", reference="A dog on a sofa.")]
    answers = write_rows(rows, DECODED, tmp_path / "answers.parquet")
    data = _write_data(tmp_path, {"im0": ["zebra"]}, vocabulary="coco", captions=[("c1", "im0")])
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("zebra, zebras\n")
    cfg = EvaluateConfig()
    cfg.evaluate.chair.synonyms_file = str(synonyms)
    with pytest.raises(ValueError, match="none of the 1 reference captions mentions an object"):
        run_evaluate_answers(cfg, answers, data, tmp_path / "out")


@pytest.mark.filterwarnings("ignore:.*no pope answers")
def test_the_vocabulary_follows_the_data(tmp_path: Path) -> None:
    rows = [_answer("c1", "im0", "caption", answer="A puppy.", reference="A dog on a sofa.")]
    answers = write_rows(rows, DECODED, tmp_path / "answers.parquet")
    data = _write_data(tmp_path, {"im0": ["dog"]}, vocabulary="coco", captions=[("c1", "im0")])
    metrics = run_evaluate_answers(EvaluateConfig(), answers, data, tmp_path / "auto")  # auto
    assert metrics["chair_n_mentions"] == 1 and metrics["chair_n_reference_mentions"] == 2
    (row,) = pq.read_table(tmp_path / "auto" / "chair.parquet").to_pylist()
    assert row["vocabulary"] == "coco" and row["chair_i"] == 0.0
    cfg = EvaluateConfig()
    cfg.evaluate.chair.vocabulary = "shapes"  # what config/cluster.yaml used to inherit
    with pytest.raises(ConfigError, match=r"vocabulary='shapes' but .* named in the 'coco'"):
        run_evaluate_answers(cfg, answers, data, tmp_path / "shapes")
    unannotated = _write_data(
        tmp_path / "u", {"im0": []}, vocabulary=None, captions=[("c1", "im0")]
    )
    with pytest.raises(ConfigError, match="carry no object annotation"):
        run_evaluate_answers(EvaluateConfig(), answers, unannotated, tmp_path / "none")


@pytest.mark.filterwarnings("ignore:.*no pope answers")
def test_input_errors_name_the_file_and_columns(tmp_path: Path) -> None:
    cfg = EvaluateConfig()
    with pytest.raises(FileNotFoundError, match=r"answers .*missing\.parquet: no such file"):
        run_evaluate_answers(cfg, tmp_path / "missing.parquet", tmp_path, tmp_path / "o")

    table = pa.table({"sample_id": ["p1"], "task": ["pope"], "text": ["yes"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    match = r"bad\.parquet: missing column\(s\) \['image_id', 'pope_split', 'reference'"
    with pytest.raises(SchemaError, match=match):
        run_evaluate_answers(cfg, tmp_path / "bad.parquet", tmp_path, tmp_path / "o")

    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(SchemaError, match=r"junk\.parquet: not a readable Parquet file"):
        run_evaluate_answers(cfg, tmp_path / "junk.parquet", tmp_path, tmp_path / "o")

    answers = write_rows(_answers(("caption",)), DECODED, tmp_path / "answers.parquet")
    pq.write_table(pa.table({"sample_id": ["c1"]}), tmp_path / "samples.parquet")
    with pytest.raises(SchemaError, match=r"samples\.parquet: missing column\(s\) \['objects'"):
        run_evaluate_answers(cfg, answers, tmp_path, tmp_path / "o")

    data = _write_data(tmp_path, {"im0": ["circle"]}, captions=[("c1", "im0")])
    with pytest.raises(ValueError, match=r"not in samples\.parquet: \['c2', 'c3', 'c4'\]"):
        run_evaluate_answers(cfg, answers, data, tmp_path / "o")


def test_vocabulary_options(tmp_path: Path) -> None:
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("# CHAIR style\ndog, puppy, doggy\ncat: kitten\n\ncat: house cat\n")
    assert read_synonyms_file(synonyms) == {
        "dog": ["puppy", "doggy"],
        "cat": ["kitten", "house cat"],
    }
    cfg = EvaluateConfig()
    cfg.evaluate.chair.synonyms_file = str(synonyms)
    vocab, name = build_vocabulary(cfg)
    assert name == str(synonyms) and set(vocab.classes) == {"dog", "cat"}

    cfg.evaluate.chair.synonyms_file = str(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match=r"evaluate\.chair\.synonyms_file .*nope\.txt"):
        build_vocabulary(cfg)

    cfg = EvaluateConfig()
    vocab, name = build_vocabulary(cfg, "coco")  # auto: the data's vocabulary
    assert name == "coco" and vocab.canonical("sofas") == "couch"
    cfg.evaluate.chair.vocabulary = "coco"
    assert build_vocabulary(cfg)[1] == "coco"
    with pytest.raises(ConfigError, match="vocabulary=auto needs"):
        build_vocabulary(EvaluateConfig())

    cfg = EvaluateConfig()
    cfg.evaluate.chair.singulariser = "auto"  # WordNet when nltk has it, else the rules
    vocab, name = build_vocabulary(cfg, "shapes")
    assert name == "shapes" and vocab.canonical("discs") == "circle"
    if get_singulariser("auto") is singularise:  # no nltk / WordNet data here
        cfg.evaluate.chair.singulariser = "wordnet"
        with pytest.raises(ConfigError, match=r"evaluate\.chair\.singulariser='wordnet'"):
            build_vocabulary(cfg, "shapes")


def test_coco_captions_use_synonyms(tmp_path: Path) -> None:
    rows = [_answer("c1", "im0", "caption", answer="Two puppies on a sofa.", reference="A dog.")]
    answers = write_rows(rows, DECODED, tmp_path / "answers.parquet")
    data = _write_data(tmp_path, {"im0": ["dog", "person"]}, "coco", [("c1", "im0")])
    cfg = EvaluateConfig()
    cfg.evaluate.chair.vocabulary = "coco"
    with pytest.warns(UserWarning, match="no pope answers"):
        metrics = run_evaluate_answers(cfg, answers, data, tmp_path / "out")
    assert metrics["chair_s"] == 1.0 and metrics["chair_i"] == 0.5  # couch is hallucinated
    assert metrics["chair_recall"] == 0.5  # dog of {dog, person}


def _main_args(answers: Path, data: Path, out: Path, results: Path, *extra: str):
    from lookright.cli import parse_args

    return parse_args(
        [
            "evaluate-answers", "--answers", str(answers), "--data", str(data), "--out", str(out),
            "--results-dir", str(results), "--tag", "snakemake.rule=evaluate_answers",
            "--param", "strategy=greedy", "--param", "model=tiny", *extra,
        ]
    )  # fmt: skip


def test_stage_main_logs_a_finished_run(inputs, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    answers, data = inputs
    out = tmp_path / "results" / "evaluate_answers" / "tiny" / "greedy"
    args = _main_args(answers, data, out, tmp_path / "results")
    with pytest.warns(UserWarning, match="outside the CHAIR vocabulary"):
        assert args.func(args) == 0
    assert "POPE avg F1 0.778" in capsys.readouterr().out

    uri = tracking.default_tracking_uri(tmp_path / "results")
    (run,) = tracking.find_runs(uri, stage="evaluate_answers")
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy"] == "greedy"
    assert run.data.params["model"] == "tiny" and run.data.tags["lookright.model"] == "tiny"
    assert run.data.tags["lookright.strategy"] == "greedy"
    assert run.data.tags["snakemake.rule"] == "evaluate_answers"
    key = tracking._safe_key("pope/average/f1")
    assert run.data.metrics[key] == pytest.approx(7 / 9)
    assert run.data.metrics["chair_s"] == pytest.approx(1 / 4)
    client = tracking._client(uri)
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "pope.parquet",
        "chair.parquet",
        "captions.parquet",
        "metrics.json",
    }
    assert json.loads((out / "run.json").read_text())["run_id"] == run.info.run_id

    failing = _main_args(answers, data, tmp_path / "fail", tmp_path / "results", "--fail-for-test")
    with pytest.raises(RuntimeError, match="failing on purpose"):
        failing.func(failing)
    statuses = sorted(r.info.status for r in tracking.find_runs(uri, stage="evaluate_answers"))
    assert statuses == ["FAILED", "FINISHED"]
