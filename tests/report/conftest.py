"""Fixtures of the report tests (the hand-made inputs live in :mod:`report_inputs`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_inputs import Inputs, build_inputs


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return build_inputs(tmp_path / "results")
