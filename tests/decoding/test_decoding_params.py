"""Parameter validation: bad values fail before any work, naming the parameter and its range."""

from __future__ import annotations

import pytest

from lookright.config import ConfigError, load_stage_config
from lookright.decoding import DecodingParameterError, LocoreParams, SgrsParams, generate
from lookright.decoding.params import FAMILY_BETA, layer_indices
from lookright.stages.decode import DecodeConfig, validate


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"top_k": 0}, "top_k (K) must be an integer >= 1, got 0"),
        ({"alpha": -0.1}, "alpha must be a number in [0, 1], got -0.1"),
        ({"alpha": 1.5}, "alpha must be a number in [0, 1], got 1.5"),
        ({"beta": -0.2}, "beta must be a number >= 0 (0 = no reinforcement), got -0.2"),
        ({"locore_window": 0}, "locore window (w_s) must be an integer >= 1, got 0"),
        ({"max_draws": 0}, "max_draws (R) must be an integer >= 1, got 0"),
        ({"history": 0}, "history (W) must be an integer >= 1, got 0"),
        ({"sgrs_layers": [0.2, 1.5]}, "sgrs layers must be a list of depth fractions in [0, 1]"),
        ({"locore_layers": []}, "locore layers must be a non-empty list of depth fractions"),
        ({"gamma": 1}, "unknown decoding parameter(s) ['gamma']; valid: ['alpha', 'beta'"),
    ],
)
def test_bad_parameters_name_the_parameter_and_range(params, needle):
    with pytest.raises(DecodingParameterError) as caught:
        generate(None, {"input_ids": None}, "sgrs+locore", **params)
    assert needle in str(caught.value)


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(DecodingParameterError) as caught:
        generate(None, {"input_ids": None}, "nucleus")
    message = str(caught.value)
    assert "strategy must be one of" in message and "'nucleus'" in message
    for name in ("greedy", "beam", "sample", "locore", "sgrs", "sgrs+locore"):
        assert f"'{name}'" in message
    with pytest.raises(DecodingParameterError, match="max_new_tokens must be an integer >= 1"):
        generate(None, {"input_ids": None}, "greedy", max_new_tokens=0)


def test_parameter_objects_and_defaults():
    assert SgrsParams() == SgrsParams(top_k=5, max_draws=3, alpha=0.6, history=5)
    assert LocoreParams().resolved_beta("llava") == 0.15 == FAMILY_BETA["llava"]
    assert LocoreParams().resolved_beta("qwen2_vl") == 0.20
    assert LocoreParams().resolved_beta("qwen2_5_vl") == 0.20
    assert LocoreParams(beta=0.0).resolved_beta("llava") == 0.0
    with pytest.raises(DecodingParameterError, match="alpha"):
        SgrsParams(alpha=float("nan"))
    with pytest.raises(DecodingParameterError, match="top_k"):
        SgrsParams(top_k=True)  # a bool is not an integer here


def test_layer_fractions_map_to_the_reference_layers():
    assert layer_indices(SgrsParams().layers, 32) == [6, 7, 8]  # LLaVA-1.5-7B reference
    assert layer_indices([0.0, 0.5, 1.0], 3) == [0, 1, 2]
    assert layer_indices([1.0], 28) == [27]
    assert layer_indices(None, 4) == [0, 1, 2, 3]


def test_stage_config_errors_name_the_key():
    cfg = load_stage_config(DecodeConfig, {"decode": {"sgrs": {"alpha": 2.0}}})
    with pytest.raises(ConfigError, match=r"decode\.sgrs: alpha must be a number in \[0, 1\]"):
        validate(cfg)
    cfg = load_stage_config(DecodeConfig, {"decode": {"locore": {"beta": -1.0}}})
    with pytest.raises(ConfigError, match=r"decode\.locore: beta must be a number >= 0"):
        validate(cfg)
    cfg = load_stage_config(DecodeConfig, {"decode": {"tasks": ["pope", "vqa"]}})
    with pytest.raises(ConfigError, match=r"decode\.tasks must be a non-empty subset"):
        validate(cfg)
    with pytest.raises(ConfigError, match="top_kk"):
        load_stage_config(DecodeConfig, {"decode": {"sgrs": {"top_kk": 3}}})
    defaults = validate(load_stage_config(DecodeConfig, None))
    assert defaults.decode.sgrs.layers == [0.1875, 0.21875, 0.25]
    assert defaults.decode.locore.beta is None and defaults.decode.locore.layers is None
