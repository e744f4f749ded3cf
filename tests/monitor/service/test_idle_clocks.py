"""The idle clocks of the pipeline and of the label join: time the consumer loop was held
up outside ``poll()`` (``Pipeline.excuse``) does not count as a quiet stream; the rest
does. A real Pipeline on SQLite with an injected wall clock; no broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.monitor.labels.helpers import (
    Clock,
    label_config,
    labels_for,
    pipeline,
    predictions,
    records,
)


def test_excused_time_is_not_idle_time_and_the_rest_is(tmp_path: Path) -> None:
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, idle_timeout="2s"), clock)
    try:
        preds = predictions(windows=1, per_window=100)
        p.process_records(records("predictions", preds))
        p.process_label_records(records("labels", labels_for(preds[:50])))
        rt = p.models["churn"]
        assert p.labels is not None
        assert rt.windows.open and "churn" in p.labels.last_activity
        started = clock()

        clock.advance(seconds=3)  # held up for 3 s: longer than idle_timeout
        p.excuse(timedelta(seconds=3))
        p.tick()
        assert rt.windows.open, "a held-up loop closed the window by the wall clock"
        assert not p.labels.idle_ms
        assert p.last_activity["churn"] == started + timedelta(seconds=3)
        assert p.labels.last_activity["churn"] == started + timedelta(seconds=3)

        clock.advance(seconds=1.5)  # 1.5 s of real quiet: not yet idle
        p.tick()
        assert rt.windows.open

        clock.advance(seconds=1)  # 2.5 s of quiet: idle
        p.tick()
        assert not rt.windows.open and p.has_pending
        assert "churn" in p.labels.idle_ms

        p.excuse(timedelta(hours=1))  # never past now
        assert p.last_activity["churn"] == clock()
        assert p.labels.last_activity["churn"] == clock()
        p.excuse(timedelta(0))
        assert p.last_activity["churn"] == clock()
    finally:
        store.close()


def test_late_rows_alone_do_not_keep_a_stream_from_going_idle(tmp_path: Path) -> None:
    """A row dropped as late goes into no window: a stream sending nothing but such rows is
    quiet, so one old-stamped row every ``idle_timeout`` cannot hold its windows open."""
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, idle_timeout="2s"), clock)
    try:
        preds = predictions(windows=3, per_window=100)
        p.process_records(records("predictions", preds))
        rt = p.models["churn"]
        assert rt.windows.open
        # a batch of a late row and one for the open window is activity (the late row counts
        # in its segment's window too: still one row of the two)
        clock.advance(seconds=1.5)
        p.process_records(records("predictions", [preds[0], preds[250]], start=len(preds) + 10))
        clock.advance(seconds=1.5)
        p.tick()
        assert rt.windows.open, "a batch with a row for an open window did not count as activity"
        for i in range(3):  # a row of the first (closed) window every 1.5 s: late each time
            clock.advance(seconds=1.5)
            late_before = p.stats.late_rows
            p.process_records(records("predictions", [preds[i]], start=len(preds) + i))
            assert p.stats.late_rows > late_before  # (counted in the whole and in its segment's window)
            p.tick()
        assert not rt.windows.open, "late rows alone kept a quiet stream's windows open"
    finally:
        store.close()
