"""storage.records: the one way epoch milliseconds become stored ISO text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from storage.records import iso, iso_ms, parse_iso


@pytest.mark.parametrize(("ms", "text"), [
    (0, "1970-01-01T00:00:00.000Z"),
    (1, "1970-01-01T00:00:00.001Z"),
    (999, "1970-01-01T00:00:00.999Z"),
    (1_795_442_400_123, "2026-11-23T14:00:00.123Z"),
    (-1, "1969-12-31T23:59:59.999Z"),  # before 1970: floor, not towards zero
    (-999, "1969-12-31T23:59:59.001Z"),
    (-1000, "1969-12-31T23:59:59.000Z"),
    (-1001, "1969-12-31T23:59:58.999Z"),
    (4_398_046_511_103, "2109-05-15T07:35:11.103Z"),
    # the last event time accepted (monitor.ingest.event_time.MAX_EVENT_MS): a float
    # round trip (fromtimestamp(ms / 1000)) made it .998
    (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
])
def test_iso_ms_formats_exact_milliseconds(ms: int, text: str) -> None:
    assert iso_ms(ms) == text
    assert iso_ms(np.int64(ms)) == text
    # the same text iso() writes for that instant, and it reads back to the same ms
    back = parse_iso(text)
    assert iso(back) == text
    assert (back - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1) == ms


def test_iso_ms_is_exact_far_in_the_future() -> None:
    """Every millisecond of a second far in the future keeps its own text (a float
    conversion would merge some of them)."""
    base = 200_000_000_000_000  # 8307-10-01T19:33:20.000Z
    texts = [iso_ms(base + i) for i in range(1000)]
    assert [t[-4:-1] for t in texts] == [f"{i:03d}" for i in range(1000)]


def test_iso_ms_rejects_floats_and_times_outside_datetime() -> None:
    with pytest.raises(TypeError):
        iso_ms(1.5)  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        iso_ms(253_402_300_800_000)  # year 10000
