"""Fixtures shared by the service tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from detectors.drift import registry
from detectors.drift.registry import register_test


@pytest.fixture
def exploding_test() -> Iterator[str]:
    """The name of a drift test, registered for the test only, that raises on windows
    holding an age of exactly 999 (a window whose figures cannot be computed)."""
    name = "explodes_on_999"

    @register_test(name, score_kind="distance", default_threshold=0.1, kinds=("numerical",), inclusive=True)
    def _explode(ref: Any, cur: Any, bins: str) -> float:
        """Raises when the window holds age 999; else 0."""
        if np.any(np.asarray(cur.values) == 999):
            raise FloatingPointError("cannot score this window")
        return 0.0

    yield name
    registry._REGISTRY.pop(name, None)
