"""Shared fixtures of the top-level tests: the tiny sizes of config/smoke.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smoke_config() -> dict[str, Any]:
    """config/smoke.yaml as a dict (the tiny model sizes and step counts used by CI)."""
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
