"""Hand-made inputs of the report stage: eval, GRPO and data folders with known numbers.

Layout (one model ``tiny``, two sources):

    eval/tiny/sft/saliency/            summary (2 methods), curves, maps, metrics, run.json
    eval/tiny/sft/{greedy,sgrs}/       pope, chair, metrics, run.json
    eval/tiny/grpo-acc+fmt+sal/saliency/   summary (2 methods, plus a del_50 column), ...
    eval/tiny/grpo-acc+fmt+sal/greedy/ metrics.json only (POPE/CHAIR from its metrics)
    grpo/tiny/acc+fmt+sal/samples.parquet  3 steps x 2 rollouts
    grpo/tiny/acc/samples.parquet          3 steps x 2 rollouts
    data/{images,samples}.parquet      3 images (64 x 48), samples s0..s2 with one box each
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lookright.data.schema import BOX
from lookright.saliency.storage import write_maps

MODEL = "tiny"
SFT, GRPO = "sft", "grpo-acc+fmt+sal"
METHODS = ("logit_decomposition", "random")
SAMPLE_IDS = ("s0", "s1", "s2")

# saliency summary numbers: (source, method) -> values
SUMMARY = {
    (SFT, "logit_decomposition"): dict(alignment_mean=0.61, nss_mean=1.2, spearman_mean=0.33,
                                       del_5=71.0, del_15=52.0, del_30=40.0, ins_30=64.0,
                                       del_auc=35.5, ins_auc=58.25),
    (SFT, "random"): dict(alignment_mean=0.12, nss_mean=0.01, spearman_mean=0.02,
                          del_5=97.0, del_15=93.0, del_30=88.0, ins_30=21.0,
                          del_auc=80.0, ins_auc=20.0),
    (GRPO, "logit_decomposition"): dict(alignment_mean=0.83, nss_mean=1.9, spearman_mean=0.41,
                                        del_5=60.0, del_15=41.0, del_30=30.5, ins_30=77.0,
                                        del_auc=25.0, ins_auc=70.0, del_50=12.0),
    (GRPO, "random"): dict(alignment_mean=0.11, nss_mean=None, spearman_mean=None,
                           del_5=96.0, del_15=92.0, del_30=89.0, ins_30=22.0,
                           del_auc=81.0, ins_auc=19.0, del_50=70.0),
}  # fmt: skip
VQA = {SFT: (0.85, 0.95, 0.55), GRPO: (0.9, 0.97, 0.7)}  # overall, bias_aligned, conflicting
# thought faithfulness of the saliency evaluation: location, colour, answer follows, CoT share
THOUGHT = {SFT: (0.25, 0.8, 0.9, 0.4), GRPO: (0.5, 0.85, 0.95, 0.6)}
POPE_AVG = {"greedy": (0.81, 0.8, 0.84, 0.82, 0.52), "sgrs": (0.86, 0.88, 0.83, 0.855, 0.47)}
CHAIR = {"greedy": (0.3, 0.12, 0.7, 11.5), "sgrs": (0.2, 0.08, 0.72, 10.5)}
LATENCY = {"greedy": (0.05, 0.2), "sgrs": (0.09, 0.35)}


@dataclass
class Inputs:
    eval_dir: Path
    grpo_dir: Path
    data_dir: Path

    def evaluations(self) -> list[Path]:
        """Every evaluation folder written (what the report rule declares as its inputs)."""
        return sorted(p for p in self.eval_dir.glob("*/*/*") if p.is_dir() and any(p.iterdir()))

    def grpo_samples(self) -> list[Path]:
        return sorted(self.grpo_dir.glob("*/*/samples.parquet"))


def _json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _parquet(path: Path, rows: list[dict], schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def write_saliency(folder: Path, source: str, maps: bool = True) -> None:
    """summary, curves, maps, metrics.json and run.json of one source's saliency evaluation."""
    summary = [
        {"method": m, "n_maps": 10, "n_faithfulness": 8, **SUMMARY[(source, m)]} for m in METHODS
    ]
    _parquet(folder / "summary.parquet", summary)
    curves = [
        {"method": m, "kind": kind, "fraction": f, "score_mean": 100 * (1 - f) if kind == "deletion"
         else 100 * f, "score_std": 5.0, "n": 8}
        for m in METHODS
        for kind in ("deletion", "insertion")
        for f in (0.0, 0.1, 0.3, 1.0)
    ]  # fmt: skip
    _parquet(folder / "curves.parquet", curves)
    if maps:
        rows = []
        for k, sample_id in enumerate(SAMPLE_IDS):
            for m in METHODS:
                values = np.zeros((4, 4), dtype=np.float32)
                values[k % 4, k % 4] = 1.0
                no_map = m == "random" and sample_id == "s2"
                rows.append(
                    {"sample_id": sample_id, "method": m, "height": 4, "width": 4,
                     "map": None if no_map else values.reshape(-1).tolist(),
                     "reason": "no image tokens" if no_map else None, "n_tokens": 0,
                     "token_ids": [], "token_positions": [], "image_width": 64,
                     "image_height": 48, "question": f"What colour is object {k}?",
                     "completion": "<think>...</think>red", "alignment": 0.5 + 0.1 * k}
                )  # fmt: skip
        write_maps(rows, folder / "maps.parquet")
    overall, aligned, conflicting = VQA[source]
    _json(
        folder / "metrics.json",
        {"vqa_accuracy": overall, "vqa_accuracy/bias_aligned": aligned,
         "vqa_accuracy/bias_conflicting": conflicting, "logit_decomposition/alignment": 0.6,
         **dict(zip(("thought/location", "thought/color", "thought/answer_follows",
                     "thought/cot_share"), THOUGHT[source], strict=True)),
         "thought/color/bias_conflicting": THOUGHT[source][1] / 2,
         "thought/n_checked/bias_conflicting": 7.0},
    )  # fmt: skip
    _json(folder / "run.json", {"run_id": f"run-{source}-saliency", "stage": "evaluate_saliency"})


def write_strategy(folder: Path, strategy: str, tables: bool = True) -> None:
    """pope/chair parquet (or only metrics.json with ``tables=False``) of one strategy."""
    acc, prec, rec, f1, yes = POPE_AVG[strategy]
    chair_s, chair_i, recall, length = CHAIR[strategy]
    pope_s, caption_s = LATENCY[strategy]
    metrics = {"time_per_sample_s/pope": pope_s, "time_per_sample_s/caption": caption_s}
    if tables:
        pope = [
            {"model": MODEL, "strategy": strategy, "split": split, "accuracy": a,
             "precision": prec, "recall": rec, "f1": f, "yes_ratio": yes, "n": n}
            for split, a, f, n in (("random", 0.99, 0.99, 20), ("adversarial", 0.9, 0.9, 10),
                                   ("average", acc, f1, 30), ("all", 0.5, 0.5, 30))
        ]  # fmt: skip
        _parquet(folder / "pope.parquet", pope)
        chair = [{"chair_s": chair_s, "chair_i": chair_i, "recall": recall,
                  "mean_length": length, "n_captions": 20, "n_mentions": 17}]  # fmt: skip
        _parquet(folder / "chair.parquet", chair)
        metrics |= {"pope/average/f1": -1.0, "chair_s": -1.0}  # the tables must win
    else:
        metrics |= {f"pope/average/{k}": v for k, v in
                    zip(("accuracy", "precision", "recall", "f1", "yes_ratio"),
                        POPE_AVG[strategy], strict=True)}  # fmt: skip
        metrics |= {"chair_s": chair_s, "chair_i": chair_i, "chair_recall": recall,
                    "caption_mean_length": length}  # fmt: skip
    _json(folder / "metrics.json", metrics)
    _json(folder / "run.json", {"run_id": f"run-{folder.parent.name}-{strategy}"})


def write_grpo(folder: Path, names: tuple[str, ...]) -> None:
    """samples.parquet: steps 0..2, two rollouts each; reward_<n> = step + rollout / 10."""
    rows = []
    for step in range(3):
        for rollout in range(2):
            row = {"step": step, "sample_id": f"s{rollout}", "question": "q", "answer": "red",
                   "completion": "<think>x</think>red", "completion_tokens": 5}  # fmt: skip
            values = {f"reward_{n}": step + rollout / 10 for n in names}
            if "saliency_alignment" in names and step == 1 and rollout == 0:
                values["reward_saliency_alignment"] = None
            row |= values
            row["reward"] = sum(v for v in values.values() if v is not None)
            rows.append(row)
    _parquet(folder / "samples.parquet", rows)


def write_data(folder: Path) -> None:
    images = [
        {"image_id": f"img{k}", "image_bytes": _png(64, 48, (40 * k, 100, 200)),
         "image_format": "PNG", "width": 64, "height": 48}
        for k in range(3)
    ]  # fmt: skip
    from lookright.data.schema import IMAGES, SAMPLES

    _parquet(folder / "images.parquet", images, IMAGES)
    samples = [
        {"sample_id": f"s{k}", "image_id": f"img{k}", "split": "test", "task": "vqa",
         "source": "shapes", "roles": ["eval"], "question": "q", "answer": "red",
         "boxes": [[0.1, 0.2, 0.5, 0.9]], "objects": ["circle"],
         "object_boxes": [[0.1, 0.1, 0.5, 0.6]], "object_vocabulary": "shapes"}
        for k in range(3)
    ]  # fmt: skip
    assert SAMPLES.field("boxes").type == pa.list_(BOX)
    _parquet(folder / "samples.parquet", samples, SAMPLES)


def build_inputs(root: Path, answers: bool = True, grpo: bool = True, maps: bool = True) -> Inputs:
    """The whole tree under ``root`` (``answers``/``grpo``/``maps`` False leave those out)."""
    inputs = Inputs(root / "eval", root / "grpo", root / "data")
    for source in (SFT, GRPO):
        write_saliency(inputs.eval_dir / MODEL / source / "saliency", source, maps=maps)
    if answers:
        sft = inputs.eval_dir / MODEL / SFT
        write_strategy(sft / "sgrs", "sgrs")  # written first: the order must come from STRATEGIES
        write_strategy(sft / "greedy", "greedy")
        write_strategy(inputs.eval_dir / MODEL / GRPO / "greedy", "greedy", tables=False)
    if grpo:
        write_grpo(
            inputs.grpo_dir / MODEL / "acc+fmt+sal", ("accuracy", "format", "saliency_alignment")
        )
        write_grpo(inputs.grpo_dir / MODEL / "acc", ("accuracy",))
    write_data(inputs.data_dir)
    return inputs
