"""The window shape a model's stream state records (monitor.windows.shape)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from monitor.config import WindowConfig
from monitor.windows.shape import WindowShape, describe


@pytest.mark.parametrize(
    ("window", "text"),
    [
        ({"size": "5m"}, "tumbling 5m, lateness 1m"),
        ({"type": "sliding", "size": "1h", "slide": "15m", "lateness": "90s"}, "sliding 1h every 15m, lateness 1m30s"),
        # durations read as the config writes them (monitor.config.format_duration)
        ({"size": "2500ms", "lateness": "0s"}, "tumbling 2s500ms, lateness 0s"),
        ({"type": "sliding", "size": "2s", "slide": "500ms", "lateness": "1.5s"}, "sliding 2s every 500ms, lateness 1s500ms"),
        ({"by": "count", "size": 1000}, "tumbling 1000 rows"),
        ({"by": "count", "type": "sliding", "size": 1000, "slide": 250}, "sliding 1000 rows every 250"),
    ],
)
def test_a_shape_round_trips_through_the_state_and_reads_well(window: dict[str, Any], text: str) -> None:
    shape = WindowShape.of(WindowConfig(**window))
    assert WindowShape.from_state(shape.to_state()) == shape
    assert shape.describe() == text


@pytest.mark.parametrize(
    "raw",
    [None, "tumbling", [], {}, {"by": "time", "type": "tumbling", "size": 60000, "step": 60000},
     {"by": "hours", "type": "tumbling", "size": 1, "step": 1, "lateness": 0},
     {"by": "time", "type": "tumbling", "size": "x", "step": 1, "lateness": 0},
     {"by": "time", "type": "sliding", "size": 10, "step": 0, "lateness": 0},
     {"by": "time", "type": "sliding", "size": 10, "step": 20, "lateness": 0}],
)
def test_a_shape_that_cannot_be_read_is_unknown(raw: Any) -> None:
    assert WindowShape.from_state(raw) is None
    assert describe(None) == "unknown (state saved by an older driftwarden)"


def test_only_what_assigns_rows_or_closes_windows_is_part_of_the_shape() -> None:
    base = WindowConfig(size=timedelta(minutes=5))
    assert WindowShape.of(base) == WindowShape.of(WindowConfig(size=timedelta(minutes=5), min_rows=5, idle_timeout="1h"))
    assert WindowShape.of(base) != WindowShape.of(WindowConfig(size=timedelta(minutes=5), lateness="2m"))
    assert WindowShape.of(base).fits(300_000, 600_000) and not WindowShape.of(base).fits(60_000, 360_000)
