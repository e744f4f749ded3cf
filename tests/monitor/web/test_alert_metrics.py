"""``driftwarden_alert`` over real HTTP: pending, silenced and inhibited alerts, versions the
drift gauges do not export, hostile segment values, and the per-model cap on series.

The seeded daemon's own rules fire two alerts; more alert rows are written with the store's
own writer (:func:`storage.alerts.upsert_alert`), as the engine writes them, so that a
flood of instances (one per segment value from the stream) needs no flood of windows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.rules import Rule
from monitor.web.alert_metrics import MAX_ALERT_SERIES
from storage.alerts import AlertRecord, SilenceRecord, insert_silence, upsert_alert
from storage.db import Store
from storage.records import iso
from tests.monitor.web.seed_helpers import seeded_daemon
from tests.monitor.web.test_metrics import exposition, one, samples
from tests.store_targets import StoreTarget

T0 = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
HOSTILE = 'eu"} 1\n# EOF\\'


def alert(rule: str, *, state: str = "firing", severity: str = "warning", metric: str = "drift_score",
          column: str = "", segment: str = "", version: str | None = None, at: datetime = T0) -> AlertRecord:
    """An alert row as the engine writes it (id and labels from :class:`alerts.rules.Rule`)."""
    r = Rule(name=rule, metric=metric, op=">=", threshold=0.1, severity=severity,
             version=None if version is None else "*", column=column or None)
    return AlertRecord(
        id=r.instance_id("churn", column, segment, version or ""), rule=rule, model="churn", state=state,
        labels=r.instance_labels("churn", column, segment, version or ""), metric=metric, column=column,
        segment=segment, version=version or "v1", severity=severity, value=0.5, threshold=0.1, started_at=at,
        fired_at=at if state == "firing" else None, breaches=1, updated_at=at,
    )


def write(store: Store, *alerts: AlertRecord) -> None:
    with store.transaction():
        for a in alerts:
            upsert_alert(store, a)


def test_pending_muted_capped_and_hostile_alerts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with seeded_daemon(tmp_path, monkeypatch) as s:
        store = s.daemon.store
        now = datetime.now(UTC)
        insert_silence(store, SilenceRecord(id="sil_1", rule="age-drift", model=None, starts_at=now - timedelta(hours=1),
                                            ends_at=now + timedelta(hours=1), created_at=now))
        write(
            store,
            alert("plan-pending", state="pending", column="plan"),
            # a warning whose critical twin (same model, figure, column, segment, version) fires
            alert("plan-warn", column="plan", version="v1"),
            alert("plan-crit", column="plan", version="v1", severity="critical"),
            alert("gone", version="v0"),  # a version the stream no longer sends: no series
            alert("resolved", state="resolved"),  # resolved and inactive: no series
        )
        m = samples(exposition(s.server.port))
        base = {"model": "churn", "segment": ""}
        assert one(m, "driftwarden_alert", rule="plan-pending", alertstate="pending", muted="none", **base) == 1
        assert one(m, "driftwarden_alert", rule="age-drift", alertstate="firing", muted="silenced", **base) == 1
        assert one(m, "driftwarden_alert", rule="plan-warn", version="v1", muted="inhibited", **base) == 1
        assert one(m, "driftwarden_alert", rule="plan-crit", version="v1", severity="critical", muted="none") == 1
        assert one(m, "driftwarden_alert", rule="dataset-drift", muted="none") == 1
        assert {lab["rule"] for lab, _ in m["driftwarden_alert"]} == {
            "plan-pending", "age-drift", "plan-warn", "plan-crit", "dataset-drift"}
        assert one(m, "driftwarden_alert_since_timestamp_seconds", rule="plan-pending") == T0.timestamp()
        assert one(m, "driftwarden_alerts_not_exported", model="churn") == 1  # "gone"

        # a flood of instances, one per segment value, hostile ones among them, after the others
        flood = [alert("seg-drift", segment=f"region={HOSTILE}{i}", at=now + timedelta(seconds=i)) for i in range(150)]
        write(store, *flood)
        text = exposition(s.server.port)
        m = samples(text)
        shown = m["driftwarden_alert"]
        assert len(shown) == MAX_ALERT_SERIES == len(m["driftwarden_alert_since_timestamp_seconds"])
        # firing before pending, critical before warning, the oldest first
        crit = {lab["rule"] for lab, _ in shown if lab["severity"] == "critical"}
        assert crit == {"dataset-drift", "plan-crit"}
        segs = {lab["segment"] for lab, _ in shown if lab["rule"] == "seg-drift"}
        kept = MAX_ALERT_SERIES - 4  # the two critical ones, age-drift and plan-warn fired first
        assert segs == {f"region={HOSTILE}{i}" for i in range(kept)}
        assert {lab["rule"] for lab, _ in shown} == {"dataset-drift", "plan-crit", "age-drift", "plan-warn", "seg-drift"}
        active = len(store.query("SELECT id FROM alerts WHERE state IN ('pending', 'firing')"))
        assert active == 2 + 4 + 150
        assert one(m, "driftwarden_alerts_not_exported", model="churn") == active - MAX_ALERT_SERIES
        # the text format escapes what the stream sent: no line of it is a sample of its own
        assert '\\"} 1\\n# EOF\\\\' in text
        assert not [line for line in text.splitlines() if line.startswith("# EOF")]


def test_a_flood_of_active_alerts_is_cut_by_the_store(store_target: StoreTarget) -> None:
    """20,000 active alerts of one model (one per segment value): a scrape builds the
    records of the ones it shows, not of every active alert (which took 1.6 s of the
    daemon's CPU per scrape at 100,000), and still says how many it left out, leaves out
    the versions the gauges do not export and marks a warning its firing critical twin
    inhibits."""
    import tracemalloc  # noqa: PLC0415

    from monitor.web.alert_metrics import alert_families  # noqa: PLC0415

    store = store_target.open()
    try:
        flood = 20_000
        crit = alert("seg-crit", severity="critical", column="plan", version="v1", at=T0 - timedelta(hours=1))
        warn = alert("seg-warn", column="plan", version="v1", at=T0 - timedelta(hours=1))
        gone = alert("gone", version="v0", at=T0 - timedelta(hours=2))  # a version not exported
        write(store, crit, warn, gone)
        columns = ("id", "rule", "model", "state", "labels", "metric", "column", "segment", "version", "severity",
                   "value", "threshold", "started_at", "breaches", "clears", "episode")
        with store.transaction():
            store.execute(
                'INSERT INTO windows (id, model, version, segment, start, "end", rows, status, computed_at)'
                " VALUES ('w1', 'churn', 'v1', '', ?, ?, 10, 'ok', ?)",
                (iso(T0), iso(T0 + timedelta(minutes=1)), iso(T0)))
            store.executemany(
                f"INSERT INTO alerts ({', '.join(chr(34) + c + chr(34) for c in columns)})"
                f" VALUES ({', '.join('?' for _ in columns)})",
                [(f"alr_f{i:06d}", "seg-drift", "churn", "pending", json.dumps({"segment": f"region={i}"}), "drift_score",
                  "", f"region={i}", "v1", "warning", 0.5, 0.1, iso(T0 + timedelta(seconds=i)), 1, 0, 0)
                 for i in range(flood)],
            )
        tracemalloc.start()
        try:
            fams = {f.name: f.samples for f in alert_families(store, {"churn": 5}, datetime.now(UTC))}
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        shown = {s.labels["rule"]: s.labels for s in fams["driftwarden_alert"]}
        assert len(fams["driftwarden_alert"]) == MAX_ALERT_SERIES
        assert shown["seg-warn"]["muted"] == "inhibited" and shown["seg-crit"]["muted"] == "none"
        assert "gone" not in shown
        assert [s.value for s in fams["driftwarden_alerts_not_exported"]] == [flood + 3 - MAX_ALERT_SERIES]
        # the oldest pending ones after the two firing ones
        segs = sorted(int(s.labels["segment"].removeprefix("region=")) for s in fams["driftwarden_alert"]
                      if s.labels["rule"] == "seg-drift")
        assert segs == list(range(MAX_ALERT_SERIES - 2))
        assert peak < 4_000_000, f"{peak} bytes at the peak of one scrape's alert families"
    finally:
        store.close()
