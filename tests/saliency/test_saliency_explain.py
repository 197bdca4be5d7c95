"""Parquet storage, PNG overlays and ``lookright explain`` end to end on a saved tiny model."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lookright.saliency import explain_sample
from lookright.saliency.explain import add_cli_arguments, cli_main, run_explain
from lookright.saliency.render import overlay
from lookright.saliency.storage import MAP_SCHEMA, map_row, read_maps, result_from_row, write_maps
from lookright.saliency.types import SaliencyResult

METHODS = "logit_decomposition,cot_bottleneck,glimpse,random"


def test_maps_round_trip_through_parquet(tmp_path, build_tiny, noise_images):
    model, processor, adapter = build_tiny("qwen2_5_vl")
    results = explain_sample(
        model,
        processor,
        noise_images[0],
        "Is there a star?",
        "<think>no star</think>",
        ["glimpse", "cot_bottleneck"],
        adapter,
    )
    rows = [map_row(r, "s0", (112, 112), "Is there a star?", "x", 0.5) for r in results.values()]
    path = write_maps(rows, tmp_path / "maps.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.parquet"]  # no temp file left
    table = read_maps(path)
    assert table.schema.equals(MAP_SCHEMA)
    for stored in table.to_pylist():
        back, original = result_from_row(stored), results[stored["method"]]
        assert back.grid == original.grid and back.reason == original.reason
        for field in ("response_map", "token_maps", "prompt_saliency", "token_scores"):
            a, b = getattr(back, field), getattr(original, field)
            assert (a is None) == (b is None) and (a is None or np.allclose(a, b))
    assert table.column("map").to_pylist()[1] is None  # cot: "empty answer" -> null map


def test_overlay_draws_heat_and_box():
    image = Image.new("RGB", (200, 100), (0, 0, 0))
    heat = np.zeros((2, 4))
    heat[0, 0] = 1.0
    result = np.asarray(overlay(image, heat, [[0.5, 0.5, 1.0, 1.0]]))
    assert result.shape == (100, 200, 3)
    assert result[10, 10].sum() > 0  # hot cell coloured
    assert result[30, 150].sum() == 0  # cold, outside the box
    assert tuple(result[99, 150]) == (255, 255, 255)  # box edge at the bottom
    plain = np.asarray(overlay(image, None))
    assert plain.sum() == 0


@pytest.fixture
def checkpoint(tmp_path, build_tiny):
    model, processor, _ = build_tiny("qwen2_5_vl")
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def image_file(tmp_path, noise_images):
    path = tmp_path / "image.png"
    noise_images[1].resize((112, 84)).save(path)
    return path


def _args(*argv: str) -> argparse.Namespace:
    return add_cli_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_explain_command_end_to_end(checkpoint, image_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = _args(
        "--model",
        str(checkpoint),
        "--image",
        str(image_file),
        "--question",
        "What color is the circle?",
        "--answer",
        "<think>The circle is red.</think>red",
        "--method",
        METHODS,
        "--out",
        str(out),
        "--box",
        "0.5,0.6,1.0,1.0",
    )
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "alignment=" in printed and "maps:" in printed
    table = pq.read_table(out / "maps.parquet")
    assert sorted(table.column("method").to_pylist()) == sorted(METHODS.split(","))
    for name in METHODS.split(","):
        assert Image.open(out / f"{name}.png").size == (112, 84)
    panel = Image.open(out / "panel.png")  # the image, then one overlay per method
    assert panel.width == 256 * (1 + len(METHODS.split(",")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generated"] is False and summary["box"] == [0.5, 0.6, 1.0, 1.0]
    assert set(summary["alignment"]) == set(METHODS.split(","))


def test_explain_generates_when_no_answer(checkpoint, image_file, tmp_path):
    summary = run_explain(
        str(checkpoint),
        str(image_file),
        "Is there a star?",
        None,
        ["raw_attention"],
        str(tmp_path / "g"),
        max_new_tokens=3,
    )
    assert summary["generated"] is True and isinstance(summary["completion"], str)


def test_explain_errors_name_the_problem(checkpoint, image_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        run_explain(
            str(checkpoint),
            str(tmp_path / "missing.png"),
            "q",
            "a",
            ["random"],
            str(tmp_path / "o"),
        )
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        run_explain(str(checkpoint), str(broken), "q", "a", ["random"], str(tmp_path / "o"))
    with pytest.raises(ValueError, match="valid methods: .*logit_decomposition"):
        run_explain(str(checkpoint), str(image_file), "q", "a", ["saliencyx"], str(tmp_path / "o"))
    unsupported = tmp_path / "bert"
    unsupported.mkdir()
    (unsupported / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="no lookright adapter; supported: .*qwen2_5_vl"):
        run_explain(str(unsupported), str(image_file), "q", "a", ["random"], str(tmp_path / "o"))
    with pytest.raises(ValueError, match="valid families"):
        run_explain(
            str(checkpoint),
            str(image_file),
            "q",
            "a",
            ["random"],
            str(tmp_path / "o"),
            family="gpt",
        )
    with pytest.raises(ValueError, match="--box"):
        run_explain(
            str(checkpoint),
            str(image_file),
            "q",
            "a",
            ["random"],
            str(tmp_path / "o"),
            box=[0.5, 0.5, 0.2, 1.0],
        )


def test_results_are_typed(build_tiny, noise_images):
    model, processor, adapter = build_tiny("llava")
    result = explain_sample(model, processor, noise_images[0], "q", "red", ["random"], adapter)[
        "random"
    ]
    assert isinstance(result, SaliencyResult) and result.response_map.dtype == np.float32
