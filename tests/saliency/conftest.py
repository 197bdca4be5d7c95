"""The saliency tests' fixtures: the shared tiny models and images, and bias/norm noise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from saliency_helpers import perturb_biases_and_norms


@pytest.fixture
def perturb() -> Callable:
    return perturb_biases_and_norms
