"""See it, end to end: real broker -> daemon subprocess -> /metrics, the Slack link to the
window's report, and the JSON log lines that tell the story."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.demo.sinks import SlackStandIn
from storage.overview import latest_judged
from tests.monitor.daemon_helpers import (
    count_windows,
    drain_output,
    produce,
    stream,
    wait_for,
    write_config,
)
from tests.monitor.web.seed_helpers import report_links
from tests.store_targets import open_state_store

pytestmark = [pytest.mark.broker, pytest.mark.evidently]

RULES = """
[[rules]]
name = "dataset-drift"
metric = "drift_share"
op = ">="
threshold = 0.5
severity = "critical"
notifiers = ["slack"]

[notifiers.slack]
type = "slack"
token_env = "DRIFTWARDEN_TEST_SLACK_TOKEN"
channel = "#ml-alerts"
base_url = "{slack}"
backoff = "1s"
"""
WINDOWS, PER_WINDOW, SHIFT_FROM = 8, 300, 4


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_report_link_and_logs_after_the_demo_stream(broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with SlackStandIn(token="xoxb-test") as slack:
        cfg = write_config(
            tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=port, extra=RULES.format(slack=slack.url),
            daemon_extra=f'public_url = "{url}"\nlog_format = "json"',
        )
        produce(broker.bootstrap, topic, stream(WINDOWS, PER_WINDOW, SHIFT_FROM) + [b"not json", b"{}"])
        env = {**os.environ, "DRIFTWARDEN_TEST_SLACK_TOKEN": "xoxb-test"}
        proc = subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output = drain_output(proc)  # a run logs ~37 KB of JSON, more under load
        db = tmp_path / "state" / "driftwarden.db"
        try:
            # a fresh interpreter's imports plus 2,400 rows: 20-50 s on a loaded 2-core CI
            assert wait_for(lambda: count_windows(db) >= WINDOWS, timeout=120), "windows did not all close"
            assert wait_for(lambda: len(slack.messages) >= 1, timeout=60)
            # every message consumed: the lag of the partition comes down to 0
            assert wait_for(lambda: [v for _, v in scrape(url).get("driftwarden_consumer_lag_messages", [])] == [0.0],
                            timeout=60)
            m = scrape(url)
            [link] = report_links(slack)
            with urllib.request.urlopen(urllib.request.Request(link, headers={"Accept": "text/html"}), timeout=180) as r:
                status, page = r.status, r.read().decode()
        finally:
            proc.send_signal(signal.SIGTERM)
            out = output(60)
        assert proc.returncode == 0, out.decode()[-3000:]

    store = open_state_store(db, readonly=True)
    try:
        stored = latest_judged(store, "churn", ["v1"])
        windows = store.query("SELECT id, rows FROM windows")
    finally:
        store.close()
    # /metrics: the expected series with the stored values
    age = next(r for r in stored if r["metric"] == "drift_score" and r["column"] == "age")
    [(labels, value)] = [(lab, v) for lab, v in m["driftwarden_drift_score"] if lab["column"] == "age"]
    assert labels == {"model": "churn", "version": "v1", "column": "age", "test": age["test"]}
    assert value == pytest.approx(age["value"], abs=1e-12)
    share = next(r for r in stored if r["metric"] == "drift_share")
    assert m["driftwarden_drift_share"] == [({"model": "churn", "version": "v1"}, share["value"])]
    assert m["driftwarden_dataset_drifted"] == [({"model": "churn", "version": "v1"}, 1.0)]
    assert m["driftwarden_rows_total"] == [({}, WINDOWS * PER_WINDOW)]
    assert m["driftwarden_window_compute_seconds_count"] == [({"model": "churn"}, len(windows))]
    assert dict((lab["reason"], v) for lab, v in m["driftwarden_dead_letters_total"]) == {"not_json": 1, "missing_field": 1}
    assert ({"state": "firing", "severity": "critical"}, 1.0) in m["driftwarden_alerts"]
    assert ({"notifier": "slack", "status": "sent"}, 1.0) in m["driftwarden_deliveries"]
    # the Slack link resolves to the window's report
    assert status == 200 and "driftwarden · window report" in page
    for col in ("age", "tenure_days", "monthly_charges", "plan", "region", "prediction"):
        assert f"<td>{col}</td>" in page
    # the logs tell the story, as JSON lines with their fields
    docs = []
    for line in out.decode().splitlines():
        if line.startswith("{"):
            docs.append(json.loads(line))
    events = [d.get("event") for d in docs]
    assert events[0] == "startup" and events[-1] == "shutdown"
    closed = [d for d in docs if d.get("event") == "window_closed"]
    assert sorted(d["window_id"] for d in closed) == sorted(w["id"] for w in windows)
    drifted = next(d for d in closed if d["segment"] == "" and d["verdict"] == "drifted")
    assert drifted["rows"] == PER_WINDOW and drifted["compute_ms"] > 0 and drifted["drifted_columns"]
    [firing] = [d for d in docs if d.get("event") == "alert_transition"]
    assert (firing["rule"], firing["transition"], firing["notifiers"]) == ("dataset-drift", "firing", ["slack"])
    [sent] = [d for d in docs if d.get("event") == "delivery"]
    assert (sent["status"], sent["notifier"], sent["attempts"]) == ("sent", "slack", 1)
    shutdown = docs[-1]
    assert shutdown["rows"] == WINDOWS * PER_WINDOW and shutdown["windows_closed"] == len(windows)
    assert "xoxb-test" not in out.decode()
