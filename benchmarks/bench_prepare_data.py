"""Benchmark: peak RSS and output bytes of ``prepare_data`` on generated real-format data.

The five datasets are written in their on-disk formats by tests/fixtures/real_format.py
(saliency-r1-8k Parquet, the two Vision-R1 cold-start JSON lists, POPE JSON Lines, COCO
captions + instances, VQA v1 + VQA-HAT maps; 256-px JPEG images, POPE / COCO / VQA-HAT on the
same COCO files as in reality) at each ``--rows`` size. For each size, in ONE run:

* ``current``: this checkout's prepare_data (original bytes, one copy per image, streaming);
* ``baseline`` (with ``--baseline-commit``): the prepare_data of that commit (``git archive``
  of its ``src/``), on the same files, with the same reader entries.

Each prepare runs in its own process, started from a parent that holds no data (the data are
generated in another child); its peak RSS is that process's ``ru_maxrss`` (``os.wait4``). Output bytes = images + samples + rejected Parquet files. Input image bytes =
the distinct image files plus the images embedded in the saliency-r1 Parquet. Goals (issue
14): output <= 1.1x the input image bytes; peak RSS flat in the row count (within 20%).

    .venv/bin/python benchmarks/bench_prepare_data.py --rows 2000 20000 \\
        --baseline-commit 95227de --out bench_prepare_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

OUTPUTS = ("images.parquet", "samples.parquet", "rejected.parquet")
CHILD = """
import json, sys
from lookright.config import load_stage_config
from lookright.stages.prepare_data import PrepareDataConfig
from lookright.data.prepare import prepare
section = load_stage_config(PrepareDataConfig, json.loads(sys.argv[1])).data
summary = prepare(section, sys.argv[2])
print(json.dumps({k: summary[k] for k in ("n_images", "n_samples", "n_rejected")}))
"""


def reader_entries(root: Path, cache_dir: Path, holdout: int) -> list[dict[str, Any]]:
    """config/cluster.yaml's reader entries on ``root``, with the arguments both the
    current and the baseline readers take (no roles / val: the baseline has none)."""
    cold = root / "vision-r1-cold"
    return [
        {"reader": "saliency_r1", "source": str(root / "saliency-r1-8k"), "holdout": holdout,
         "cache_dir": str(cache_dir)},
        {"reader": "llava_conversations", "json_path": str(cold / "vision_r1_llava_cot_full.json"),
         "image_root": str(cold / "images"), "source_name": "vision-r1-llava-cot"},
        {"reader": "llava_conversations",
         "json_path": str(cold / "vision_r1_mulberry_sft_full.json"),
         "image_root": str(cold / "images"), "source_name": "vision-r1-mulberry"},
        {"reader": "pope", "image_root": str(root / "coco" / "val2014"),
         "files": {s: str(root / "pope" / f"coco_pope_{s}.json")
                   for s in ("random", "popular", "adversarial")}},
        {"reader": "coco", "image_root": str(root / "coco" / "val2014"),
         "captions_json": str(root / "coco" / "annotations" / "captions_val2014.json"),
         "instances_json": str(root / "coco" / "annotations" / "instances_val2014.json")},
        {"reader": "vqa_hat", "maps_dir": str(root / "vqahat" / "vqahat_val"),
         "image_root": str(root / "coco" / "val2014"),
         "vqa_questions": str(root / "vqa" / "OpenEnded_mscoco_val2014_questions.json"),
         "vqa_annotations": str(root / "vqa" / "mscoco_val2014_annotations.json")},
    ]  # fmt: skip


def run_prepare(src: Path, entries: list[dict[str, Any]], out: Path) -> dict[str, Any]:
    """prepare_data of the package in ``src`` in a child process: peak RSS, time, bytes."""
    config = {"data": {"source": "real", "max_rejected_fraction": 1.0, "real": entries}}
    env = {**os.environ, "PYTHONPATH": str(src)}
    out.mkdir(parents=True, exist_ok=True)
    logs = out.with_name(f"{out.name}.stdout"), out.with_name(f"{out.name}.stderr")
    started = time.perf_counter()
    with open(logs[0], "w") as stdout_file, open(logs[1], "w") as stderr_file:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(config), str(out)],
            env=env,
            stdout=stdout_file,
            stderr=stderr_file,
        )
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = logs[0].read_text(), logs[1].read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"prepare_data failed ({src}):\n{stderr[-3000:]}")
    counts = json.loads(stdout.strip().splitlines()[-1])
    sizes = {name: (out / name).stat().st_size for name in OUTPUTS}
    return {
        **counts,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "seconds": seconds,
        "output_bytes": sum(sizes.values()),
        "images_parquet_bytes": sizes["images.parquet"],
    }


def write_data(root: Path, n_rows: int, side: int) -> int:
    """Generate the datasets in a child process (the measuring parent stays small: a forked
    child's peak RSS starts from its parent's); returns the input image bytes."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path;"
        "from tests.fixtures.real_format import Sizes, input_image_bytes, write_real_datasets;"
        "root = write_real_datasets(Path(sys.argv[2]),"
        " Sizes.for_rows(int(sys.argv[3]), side=int(sys.argv[4])), bad_rows=False);"
        "print(input_image_bytes(root))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO), str(root), str(n_rows), str(side)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout.strip().splitlines()[-1])


def baseline_source(commit: str, folder: Path) -> Path:
    """``src/`` of ``commit`` (git archive) under ``folder``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--side", type=int, default=256, help="image side in pixels")
    parser.add_argument("--baseline-commit", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench_prepare_data.json"))
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    work.mkdir(parents=True, exist_ok=True)
    variants = {"current": REPO / "src"}
    if args.baseline_commit:
        variants["baseline"] = baseline_source(args.baseline_commit, work)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "baseline_commit": args.baseline_commit,
        "runs": [],
    }
    for n_rows in args.rows:
        data = work / f"data-{n_rows}"
        started = time.perf_counter()
        input_bytes = write_data(data, n_rows, args.side)
        print(f"{n_rows} rows: data written in {time.perf_counter() - started:.0f} s, "
              f"{input_bytes / 2**20:.1f} MiB of images", flush=True)  # fmt: skip
        for name, src in variants.items():
            cache = work / f"hf-cache-{name}-{n_rows}"
            out = work / f"out-{name}-{n_rows}"
            holdout = min(100, round(0.3 * n_rows) // 2)  # Sizes.for_rows: 30% saliency-r1
            measured = run_prepare(src, reader_entries(data, cache, holdout), out)
            measured |= {
                "variant": name,
                "rows": n_rows,
                "input_image_bytes": input_bytes,
                "output_ratio": measured["output_bytes"] / input_bytes,
            }
            results["runs"].append(measured)
            print(json.dumps(measured), flush=True)
    for name in variants:
        runs = [r for r in results["runs"] if r["variant"] == name]
        if len(runs) > 1:
            results[f"{name}_rss_ratio_largest_to_smallest"] = (
                runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
            )
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
