"""``/metrics`` over real HTTP after a seeded stream: the series, their values (equal to the
stored figures), bounded labels, and every metric the shipped Grafana dashboard queries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from storage.overview import latest_judged
from tests.conftest import repo_root
from tests.monitor.web.http_helpers import http
from tests.monitor.web.seed_helpers import Seeded, seeded_daemon
from tests.store_targets import StoreTarget

GRAFANA = repo_root() / "deploy" / "grafana" / "driftwarden.json"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, module_store_target: StoreTarget) -> Iterator[Seeded]:
    """The seeded daemon on SQLite and on PostgreSQL: the gauges and counters are read from its store."""
    with pytest.MonkeyPatch.context() as mp, seeded_daemon(
        tmp_path_factory.mktemp("metrics"), mp, bad=[b"not json", b"{}", b"[1]"],
        storage=module_store_target.storage_toml(),
    ) as s:
        yield s


def scrape(s: Seeded) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (``_total``, ``_bucket`` … as exposed)."""
    return samples(exposition(s.server.port))


def exposition(port: int) -> str:
    """``/metrics`` of the server on ``port``, as text."""
    r = http(port, "GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain")
    return r.body.decode()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples of an exposition by sample name (``_total``, ``_bucket`` … as exposed)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name + ("_total" if fam.type == "counter" else ""), [])  # declared, maybe without samples
        for sample in fam.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    got = [v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items())]
    assert len(got) == 1, (name, labels, samples.get(name))
    return got[0]


def test_drift_gauges_equal_the_newest_judged_windows_figures(seeded: Seeded) -> None:
    m = scrape(seeded)
    stored = latest_judged(seeded.daemon.store, "churn", ["v1"])
    window_ids = {r["window_id"] for r in stored}
    assert len(window_ids) == 1  # one version, its newest judged window
    newest = seeded.daemon.store.query(
        "SELECT id FROM windows WHERE model = 'churn' AND segment = '' AND status = 'ok' ORDER BY \"end\" DESC LIMIT 1")
    assert window_ids == {newest[0]["id"]}
    checked = 0
    for r in stored:
        key = {"model": "churn", "version": "v1"}
        if r["metric"] in ("drift_score", "prediction_drift"):
            col = {**key, "column": r["column"], "test": r["test"]}
            assert one(m, "driftwarden_drift_score", **col) == pytest.approx(r["value"], abs=1e-12)
            assert one(m, "driftwarden_drift_threshold", **col) == r["threshold"]
            assert one(m, "driftwarden_column_drifted", **key, column=r["column"]) == float(r["drifted"])
            checked += 1
        elif r["metric"] == "drift_share":
            assert one(m, "driftwarden_drift_share", **key) == r["value"]
            assert one(m, "driftwarden_drift_share_threshold", **key) == r["threshold"] == 0.5
            assert one(m, "driftwarden_dataset_drifted", **key) == float(r["drifted"]) == 1.0
        elif r["metric"] == "missing_share":
            assert one(m, "driftwarden_missing_share", **key, column=r["column"]) == r["value"]
        elif r["metric"] == "row_count":
            assert one(m, "driftwarden_window_rows", **key) == r["value"] == 300
    assert checked == 6  # five features and the prediction
    assert {lab["column"] for lab, _ in m["driftwarden_drift_score"]} == {
        "age", "tenure_days", "monthly_charges", "plan", "region", "prediction"}


def test_counters_histogram_alerts_deliveries_build_and_process(seeded: Seeded) -> None:
    m = scrape(seeded)
    stored = seeded.daemon.store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"]
    assert one(m, "driftwarden_windows_closed_total") == stored == 32
    assert one(m, "driftwarden_rows_total") == 8 * 300
    count = one(m, "driftwarden_window_compute_seconds_count", model="churn")
    assert count == stored
    buckets = [(float(lab["le"]), v) for lab, v in m["driftwarden_window_compute_seconds_bucket"]]
    assert buckets == sorted(buckets) and buckets[-1] == (float("inf"), count)
    assert 0 < one(m, "driftwarden_window_compute_seconds_sum", model="churn") < 60
    assert one(m, "driftwarden_late_rows_total", model="churn") == 0
    assert one(m, "driftwarden_dead_letters_total", reason="not_json") == 1
    assert one(m, "driftwarden_dead_letters_total", reason="not_object") == 1
    assert one(m, "driftwarden_alerts", state="firing", severity="critical") == 1
    assert one(m, "driftwarden_alerts", state="firing", severity="warning") == 1
    assert one(m, "driftwarden_deliveries", notifier="slack", status="sent") == 2
    # every state is a series, 0 when there is none: one that vanished when its last alert
    # resolved left Grafana's stat panels on the last count
    assert one(m, "driftwarden_alerts", state="pending", severity="critical") == 0
    assert len(m["driftwarden_alerts"]) == 4 * 2
    assert one(m, "driftwarden_deliveries", notifier="slack", status="dead") == 0
    from monitor.web.metrics import _version

    assert one(m, "driftwarden_build_info", version=_version()) == 1
    assert m["process_resident_memory_bytes"][0][1] > 10_000_000
    assert "python_gc_collections_total" in m and "python_info" in m
    assert m["driftwarden_consumer_lag_messages"] == []  # declared; no partition assigned (not consuming)


def test_each_pending_or_firing_alert_is_a_series_as_prometheus_alerts(seeded: Seeded) -> None:
    """One series per active alert instance, valued 1, with its identity, ``alertstate`` and
    ``muted`` (as ``ALERTS{alertstate}``), and when it went active (as ``ALERTS_FOR_STATE``)."""
    m = scrape(seeded)
    active = seeded.daemon.store.query(
        "SELECT * FROM alerts WHERE state IN ('pending', 'firing') ORDER BY rule")
    assert [(a["rule"], a["state"]) for a in active] == [("age-drift", "firing"), ("dataset-drift", "firing")]
    assert len(m["driftwarden_alert"]) == 2 and len(m["driftwarden_alert_since_timestamp_seconds"]) == 2
    ident = {
        "age-drift": {"rule": "age-drift", "model": "churn", "version": "", "column": "age", "segment": "",
                      "severity": "warning"},
        "dataset-drift": {"rule": "dataset-drift", "model": "churn", "version": "", "column": "", "segment": "",
                          "severity": "critical"},
    }
    for a in active:
        labels = ident[a["rule"]]
        assert one(m, "driftwarden_alert", **labels, alertstate="firing", muted="none") == 1
        since = one(m, "driftwarden_alert_since_timestamp_seconds", **labels)
        assert since == datetime.fromisoformat(a["started_at"]).timestamp()
    assert one(m, "driftwarden_alerts_not_exported", model="churn") == 0
    # the per-alert series add up to the counts by state and severity
    assert sum(v for lab, v in m["driftwarden_alert"]) == sum(
        v for lab, v in m["driftwarden_alerts"] if lab["state"] in ("pending", "firing"))


def test_skipped_offsets_are_counted_per_topic_and_partition(seeded: Seeded) -> None:
    """Offsets Kafka skipped unread (records deleted by retention before they were read),
    once the broker confirmed them (its log start past where the consumer was reading)."""
    skipped = seeded.daemon.pipeline.skipped
    assert skipped is not None  # the daemon looks for them
    assert scrape(seeded)["driftwarden_skipped_offsets_total"] == []  # declared, none yet
    topic = seeded.daemon.config.kafka.predictions_topic
    skipped.suspect(topic, 0, 100, 500)
    skipped.suspect(topic, 0, 700, 750)
    skipped.confirm(lambda t, partitions: {0: 750})
    assert one(scrape(seeded), "driftwarden_skipped_offsets_total", topic=topic, partition="0") == 400 + 50


def test_version_labels_are_bounded_by_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orjson

    def many_versions(payloads: list[bytes]) -> list[bytes]:
        out = []
        for i, p in enumerate(payloads):
            ev = orjson.loads(p)
            ev["version"] = f"v{i % 40}"
            out.append(orjson.dumps(ev))
        return out

    with seeded_daemon(tmp_path, monkeypatch, windows=3, per_window=400, shift_from=9, transform=many_versions,
                       model_extra="limits = { max_versions = 3 }") as s:
        m = scrape(s)
    versions = {lab["version"] for lab, _ in m["driftwarden_drift_share"]}
    assert len(versions) <= 4 and "__other__" in versions, versions
    assert len({lab["version"] for lab, _ in m["driftwarden_drift_score"]}) <= 4
    assert one(m, "driftwarden_capped_rows_total", model="churn", dimension="version") > 0


def test_versions_that_come_and_go_are_bounded_by_the_cap_too(tmp_path: Path) -> None:
    """A stream whose version changes every window never trips the cap (each version is
    retired before the next), yet the newest 50 windows held 50 versions, each a series per
    column: /metrics keeps the cap's worth seen last (and __other__)."""
    from datetime import UTC, datetime, timedelta

    from monitor.web.drift_metrics import recent_versions
    from storage.db import Store
    from storage.records import WindowKey, WindowRecord
    from storage.windows import write_window

    store = Store(tmp_path / "d.db")
    t0 = datetime(2026, 11, 23, tzinfo=UTC)
    with store.transaction():
        for i in range(12):
            start, end = t0 + timedelta(minutes=i), t0 + timedelta(minutes=i + 1)
            key = WindowKey("churn", f"v{i:02d}", "", start.isoformat(), end.isoformat())
            write_window(store, WindowRecord(key=key, rows=10, status="ok", computed_at=end), [])
    assert recent_versions(store, "churn", 3) == ["v08", "v09", "v10", "v11"]
    assert recent_versions(store, "churn", 100) == [f"v{i:02d}" for i in range(12)]
    store.close()


def grafana_metrics() -> set[str]:
    doc = json.loads(GRAFANA.read_text())
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                elif k == "query" and isinstance(v, dict):
                    exprs.append(str(v.get("query", "")))
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    names = set()
    for e in exprs:
        names |= set(re.findall(r"\b((?:driftwarden|process|python)_[a-z_]+)\b", e))
    return names


def test_the_grafana_dashboard_is_importable_and_queries_only_exported_metrics(seeded: Seeded) -> None:
    doc = json.loads(GRAFANA.read_text())
    assert doc["uid"] == "driftwarden" and doc["__inputs"][0]["pluginId"] == "prometheus"
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert len(panels) >= 20 and all(p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in panels)
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])
    m = scrape(seeded)
    queried = grafana_metrics()
    assert len(queried) >= 25
    missing = sorted(n for n in queried if n not in m)
    assert missing == []
    # and each one has samples after the seeded stream, except those of events that did not
    # happen here: lag needs a consumer (the broker test has one), drops need a dead-letter flood,
    # performance needs the label join (test_performance_metrics.py checks those panels)
    empty = sorted(n for n in queried if not m[n])
    assert empty == ["driftwarden_consumer_lag_messages", "driftwarden_dead_letters_dropped_total", *PERFORMANCE_PANELS]
    assert {"driftwarden_alert", "driftwarden_alert_since_timestamp_seconds", "driftwarden_alerts_not_exported"} <= queried


#: the metrics of the dashboard's performance panels
PERFORMANCE_PANELS = [
    "driftwarden_estimated_performance", "driftwarden_performance", "driftwarden_performance_ci_high",
    "driftwarden_performance_ci_low", "driftwarden_performance_window_end_timestamp_seconds",
]
