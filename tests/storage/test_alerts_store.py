"""storage.alerts: round trips, outbox queries, counters, silences, migration 2."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage import alerts as db
from storage.alerts import AlertRecord, DeliveryRecord, SilenceRecord

T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


@pytest.fixture
def store(store_target):
    s = store_target.open(synchronous="NORMAL")
    yield s
    s.close()


def delivery(id: str, created: datetime, **kw) -> DeliveryRecord:
    return DeliveryRecord(id=id, notifier=kw.pop("notifier", "slack"), kind=kw.pop("kind", "firing"),
                          created_at=created, **kw)  # fmt: skip


def test_migration_2_adds_columns(store):
    assert store.schema_version() >= 2
    alert_cols = set(store.columns("alerts"))
    delivery_cols = set(store.columns("deliveries"))
    assert {
        "metric",
        "column",
        "segment",
        "version",
        "episode",
        "window_start",
        "window_end",
    } <= alert_cols
    assert {
        "model",
        "group_key",
        "alert_ids",
        "parent_id",
        "response",
        "updated_at",
    } <= delivery_cols


def test_alert_round_trip(store):
    rec = AlertRecord(
        id="alr_1", rule="drift", model="churn", state="firing", labels={"team": "ml"},
        metric="drift_share", column="age", segment="eu", version="v12", severity="critical",
        value=0.6, threshold=0.3, started_at=T0, fired_at=T0 + timedelta(minutes=15),
        last_window_id="w1", window_start="a", window_end="b", breaches=2, clears=0, episode=3,
        last_notified_at=T0, updated_at=T0,
    )  # fmt: skip
    with store.transaction():
        db.upsert_alert(store, rec)
    assert db.get_alert(store, "alr_1") == rec
    assert db.alerts_by_id(store, ["alr_1", "nope"]) == {"alr_1": rec}
    with store.transaction():
        db.upsert_alert(store, rec.evolve(state="resolved", resolved_at=T0))
    assert db.get_alert(store, "alr_1").state == "resolved"
    assert len(store.query("SELECT * FROM alerts")) == 1


def test_list_alerts_filters_and_parses_labels(store):
    with store.transaction():
        for i, (state, model) in enumerate(
            [("firing", "churn"), ("resolved", "churn"), ("inactive", "churn"), ("firing", "fraud")]
        ):
            db.upsert_alert(store, AlertRecord(id=f"a{i}", rule="r", model=model, state=state,
                                               labels={"k": str(i)}, updated_at=T0 + timedelta(minutes=i)))  # fmt: skip
    assert [a["id"] for a in db.list_alerts(store)] == ["a3", "a1", "a0"]
    assert [a["id"] for a in db.list_alerts(store, include_inactive=True)] == [
        "a3",
        "a2",
        "a1",
        "a0",
    ]
    assert [a["id"] for a in db.list_alerts(store, state="firing", model="churn")] == ["a0"]
    assert db.list_alerts(store, model="fraud")[0]["labels"] == {"k": "3"}
    assert db.alert_counts(store) == {
        ("firing", "warning"): 2,
        ("resolved", "warning"): 1,
        ("inactive", "warning"): 1,
    }


def test_insert_delivery_is_idempotent(store):
    with store.transaction():
        assert db.insert_delivery(store, delivery("d1", T0, payload={"a": 1}, alert_ids=("x", "y")))
        assert not db.insert_delivery(store, delivery("d1", T0, payload={"a": 2}))
    d = db.get_delivery(store, "d1")
    assert d.payload == {"a": 1} and d.alert_ids == ("x", "y") and d.next_attempt_at == T0


def test_due_order_next_due_and_attempts(store):
    with store.transaction():
        db.insert_delivery(store, delivery("late", T0 + timedelta(minutes=1)))
        db.insert_delivery(store, delivery("early", T0))
        db.insert_delivery(store, delivery("future", T0, next_attempt_at=T0 + timedelta(hours=1)))
    assert [d.id for d in db.due_deliveries(store, T0 + timedelta(minutes=1))] == ["early", "late"]
    assert db.next_due(store) == T0
    with store.transaction():
        db.record_attempt(store, "early", status="sent", attempts=1, now=T0, response={"ts": "1"})
        db.record_attempt(store, "late", status="pending", attempts=1, now=T0,
                          next_attempt_at=T0 + timedelta(minutes=5), error="HTTP 503")  # fmt: skip
    early, late = db.get_delivery(store, "early"), db.get_delivery(store, "late")
    assert (early.status, early.delivered_at, early.response) == ("sent", T0, {"ts": "1"})
    assert (late.status, late.last_error, late.delivered_at) == ("pending", "HTTP 503", None)
    assert db.next_due(store) == T0 + timedelta(minutes=5)
    with store.transaction():
        db.record_attempt(store, "late", status="dead", attempts=2, now=T0, error="x")
        db.record_attempt(store, "future", status="dead", attempts=9, now=T0, error="x")
    assert db.next_due(store) is None
    assert db.delivery_counts(store) == {("slack", "sent"): 1, ("slack", "dead"): 2}
    with pytest.raises(ValueError):
        db.record_attempt(store, "late", status="lost", attempts=3, now=T0)


def test_latest_delivery_for_alert_and_cooldown_source(store):
    with store.transaction():
        db.insert_delivery(store, delivery("f1", T0, alert_ids=("a", "b")))
        db.insert_delivery(store, delivery("f2", T0 + timedelta(minutes=1), alert_ids=("b",)))
        db.insert_delivery(
            store, delivery("r1", T0, notifier="hook", kind="retrain", model="churn")
        )
    assert db.latest_delivery_for_alert(store, "a", "slack").id == "f1"
    assert db.latest_delivery_for_alert(store, "b", "slack").id == "f2"
    assert db.latest_delivery_for_alert(store, "b", "other") is None
    assert [d.id for d in db.list_deliveries(store, alert_id="b")] == ["f1", "f2"]
    assert db.last_delivery_created(store, notifier="hook", kind="retrain", model="churn") == T0
    assert db.last_delivery_created(store, notifier="hook", kind="retrain", model="fraud") is None


def test_silences(store):
    s = SilenceRecord(id="s1", starts_at=T0, ends_at=T0 + timedelta(hours=1), created_at=T0,
                      model="churn", created_by="oncall", comment="deploy")  # fmt: skip
    with store.transaction():
        db.insert_silence(store, s)
    assert db.list_silences(store) == [s]
    assert db.list_silences(store, active_at=T0 - timedelta(seconds=1)) == []
    assert db.list_silences(store, active_at=T0) == [s]
    assert db.list_silences(store, active_at=T0 + timedelta(hours=1)) == []
    assert s.matches("churn", "any") and not s.matches("fraud", "any")
    with store.transaction():
        assert db.expire_silence(store, "s1", T0 + timedelta(minutes=10))
        assert not db.expire_silence(store, "s1", T0 + timedelta(minutes=20))
    assert db.list_silences(store, active_at=T0 + timedelta(minutes=10)) == []


def test_writes_roll_back_with_the_enclosing_transaction(store):
    with pytest.raises(RuntimeError), store.transaction():
        db.upsert_alert(store, AlertRecord(id="a", rule="r", model="m", state="firing"))
        db.insert_delivery(store, delivery("d", T0, alert_ids=("a",)))
        raise RuntimeError("window write failed")
    assert db.list_alerts(store) == [] and db.list_deliveries(store) == []


def test_the_earlier_pending_message_of_a_group_is_found_by_an_index(store):
    """The outbox asks, before each send, for an earlier pending message of the same notifier
    and alert group: the read scanned every pending delivery (185 ms per 100 sends with
    20,000 pending); migration 14's partial index answers it (under 1 ms)."""
    sql = ("SELECT * FROM deliveries WHERE status = 'pending' AND notifier = ? AND group_key = ? AND created_at < ?"
           " AND (parent_id IS NULL OR parent_id != ?) ORDER BY created_at LIMIT 1")
    params = ("slack", "g1", "2026-11-23T15:00:00.000Z", "d9")
    if store.shared:
        # PostgreSQL's planner picks an index by the table's size and statistics: on a
        # table of 5,000 pending deliveries over 500 groups, analysed, it reads this one
        with store.transaction():
            for i in range(5000):
                db.insert_delivery(store, delivery(f"p{i}", T0 - timedelta(seconds=i + 1), group_key=f"g{i % 500}"))
        store.execute("ANALYZE deliveries")
        plan = " ".join(r["QUERY PLAN"] for r in store.query("EXPLAIN " + sql, params))
        assert "Index Scan using deliveries_pending_group" in plan, plan
        with store.transaction():
            store.execute("DELETE FROM deliveries")
    else:
        plan = " ".join(str(r) for r in store.query("EXPLAIN QUERY PLAN " + sql, params))
        assert "deliveries_pending_group" in plan, plan
    first = delivery("d1", T0, group_key="g1")
    second = delivery("d2", T0 + timedelta(seconds=1), group_key="g1")
    with store.transaction():
        db.insert_delivery(store, first)
        db.insert_delivery(store, second)
    assert db.pending_before(store, second).id == "d1"
    assert db.pending_before(store, first) is None


def test_the_step_back_check_reads_an_index_not_every_pending_delivery(store):
    """The outbox checks, at every dispatch and for each notifier, for pending deliveries a
    wall clock since stepped back scheduled: the read scanned every pending delivery (during
    a long outage, thousands, each dispatch); migration 15's partial index answers it."""
    sql = "SELECT id, next_attempt_at, updated_at FROM deliveries WHERE status = 'pending' AND notifier = ? AND updated_at > ?"
    params = ("slack", "2026-11-23T15:01:00.000Z")
    with store.transaction():
        for i in range(5000):
            db.insert_delivery(store, delivery(f"p{i}", T0 - timedelta(seconds=i + 1),
                                               notifier=("slack", "hook", "page")[i % 3], group_key=f"g{i % 500}"))
    store.execute("ANALYZE deliveries")
    if store.shared:
        plan = " ".join(r["QUERY PLAN"] for r in store.query("EXPLAIN " + sql, params))
    else:
        plan = " ".join(str(r) for r in store.query("EXPLAIN QUERY PLAN " + sql, params))
    assert "deliveries_pending_updated" in plan, plan
    # and it still finds what it is for: a delivery scheduled ahead of the clock
    ahead = delivery("ahead", T0 + timedelta(hours=1), next_attempt_at=T0 + timedelta(hours=1, minutes=5))
    with store.transaction():
        db.insert_delivery(store, ahead)
        assert db.reschedule_after_step_back(store, "slack", T0, timedelta(minutes=1)) == 1
    got = {d.id: d for d in db.list_deliveries(store)}["ahead"]
    assert got.next_attempt_at == T0 + timedelta(minutes=5)
