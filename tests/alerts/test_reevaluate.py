"""Re-judging a recomputed window (performance windows when late labels arrive)."""

from __future__ import annotations

from datetime import timedelta

from alerts.rules import Rule
from storage import alerts as db
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from tests.alerts.conftest import T0, events, make_engine

ACC = Rule("accuracy-low", "accuracy", "<", 0.8)
ACC2 = Rule("accuracy-low-2", "accuracy", "<", 0.8, for_windows=2)


def window(i: int) -> WindowRecord:
    s, e = T0 + timedelta(minutes=15 * i), T0 + timedelta(minutes=15 * (i + 1))
    return WindowRecord(WindowKey("churn", "v1", "", iso(s), iso(e)), 500, "ok", e)


def judge(engine, store, rec: WindowRecord, accuracy: float, reevaluate: bool = True):
    with store.transaction():
        return engine.on_window(rec, [MetricRow("", "accuracy", accuracy)], reevaluate=reevaluate)


def test_a_recomputed_window_updates_its_verdict(store, clock) -> None:
    engine = make_engine(store, clock, [ACC])
    w0, w1 = window(0), window(1)
    assert events(judge(engine, store, w0, 0.7)) == [("accuracy-low", "inactive", "firing")]
    # same verdict, new value: no transition, the alert shows the new value
    assert judge(engine, store, w0, 0.72) == []
    alert = db.get_alert(store, ACC.instance_id("churn", "", "", "v1"))
    assert alert is not None and alert.value == 0.72 and alert.state == "firing"
    # without reevaluate (a replay after a crash) the same window changes nothing
    assert judge(engine, store, w0, 0.95, reevaluate=False) == []
    # late labels make the window clear: it counts as a clear window
    assert events(judge(engine, store, w0, 0.9)) == [("accuracy-low", "firing", "resolved")]
    # a newer window breaches; then the older one is recomputed: not judged again
    assert events(judge(engine, store, w1, 0.6)) == [("accuracy-low", "resolved", "firing")]
    assert judge(engine, store, w0, 0.5) == []
    assert db.get_alert(store, ACC.instance_id("churn", "", "", "v1")).last_window_id == w1.id


def test_a_window_that_turns_breaching_counts_once(store, clock) -> None:
    engine = make_engine(store, clock, [ACC2])
    w0, w1 = window(0), window(1)
    assert events(judge(engine, store, w0, 0.7)) == [("accuracy-low-2", "inactive", "pending")]
    assert judge(engine, store, w0, 0.71) == []  # still one breaching window
    assert events(judge(engine, store, w1, 0.7)) == [("accuracy-low-2", "pending", "firing")]
