"""The spine, end to end: real broker -> daemon subprocess -> SQLite -> Slack stand-in + webhook sink."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.demo.sinks import SlackStandIn, WebhookSink
from tests.monitor.daemon_helpers import (
    count_windows,
    drain_output,
    produce,
    stream,
    wait_for,
    write_config,
)
from tests.store_targets import open_state_store

pytestmark = [pytest.mark.broker]

SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXJldHJhaW5pbmctaG9va3M="

RULES = """
[[rules]]
name = "dataset-drift"
metric = "drift_share"
op = ">="
threshold = 0.5
severity = "critical"
resolve_after = 2
notifiers = ["slack", "retrain"]

[notifiers.slack]
type = "slack"
token_env = "DRIFTWARDEN_TEST_SLACK_TOKEN"
channel = "#ml-alerts"
base_url = "{slack}"
backoff = "1s"

[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "{sink}/retrain"
secret_env = "DRIFTWARDEN_TEST_WEBHOOK_SECRET"
cooldown = "1h"
backoff = "1s"
"""


def test_drifting_stream_end_to_end(broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    windows, per_window, shift_from = 8, 300, 4
    with SlackStandIn(token="xoxb-test") as slack, WebhookSink(secret=SECRET) as sink:
        cfg = write_config(
            tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(),
            extra=RULES.format(slack=slack.url, sink=sink.url.rstrip("/")),
        )
        produce(broker.bootstrap, topic, stream(windows, per_window, shift_from))
        env = {**os.environ, "DRIFTWARDEN_TEST_SLACK_TOKEN": "xoxb-test", "DRIFTWARDEN_TEST_WEBHOOK_SECRET": SECRET}
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        output = drain_output(proc)
        db = tmp_path / "state" / "driftwarden.db"
        closed = notified = False
        try:
            # generous: on a loaded machine the start-up alone (imports, references) took 26 s
            closed = wait_for(lambda: count_windows(db) >= windows, timeout=180)
            notified = closed and wait_for(
                lambda: len(sink.accepted()) >= 1 and len(slack.calls("chat.postMessage")) >= 1, timeout=60)
        finally:
            proc.send_signal(signal.SIGTERM)
            out = output(30)
        assert closed, f"{count_windows(db)}/{windows} windows closed:\n{out.decode()[-3000:]}"
        assert notified, out.decode()[-3000:]
        assert proc.returncode == 0, out.decode()[-3000:]

    store = open_state_store(db)
    rows = store.query(
        "SELECT w.start, w.rows, w.status, m.value AS share, m.drifted FROM windows w JOIN metrics m "
        "ON m.window_id = w.id AND m.metric = 'drift_share' AND m.\"column\" = '' "
        "WHERE w.segment = '' ORDER BY w.start"
    )
    assert len(rows) == windows
    assert [r["rows"] for r in rows] == [per_window] * windows
    assert [bool(r["drifted"]) for r in rows] == [False] * shift_from + [True] * (windows - shift_from)
    assert all(r["share"] < 0.5 for r in rows[:shift_from])
    assert all(r["share"] >= 0.5 for r in rows[shift_from:])
    # per-segment windows exist too (region eu/us/apac), and their rows add up
    seg = store.query("SELECT segment, SUM(rows) AS n FROM windows WHERE segment != '' GROUP BY segment")
    assert {r["segment"] for r in seg} == {"region=eu", "region=us", "region=apac"}
    assert sum(r["n"] for r in seg) == windows * per_window

    # exactly one firing notification to each receiver (the alert stays firing)
    posts = slack.calls("chat.postMessage")
    assert len(posts) == 1
    assert posts[0].data["channel"] == "#ml-alerts"
    assert "dataset-drift" in posts[0].data["text"]
    retrain = sink.accepted()
    assert len(retrain) == 1
    req = retrain[0]
    body = Webhook(SECRET).verify(req.body, req.headers)
    assert body["type"] == "retrain.requested"
    assert body["model"] == "churn"
    assert body["alert"]["rule"] == "dataset-drift"
    assert body["alert"]["threshold"] == 0.5
    assert body["alert"]["value"] >= 0.5
    assert body["callback"].endswith("/api/v1/models/churn/references")
    assert {c["column"] for c in body["drifted_columns"]} >= {"age", "monthly_charges"}
    alerts = store.query("SELECT rule, state FROM alerts WHERE segment = '' OR segment IS NULL") if "segment" in store.columns("alerts") else store.query("SELECT rule, state FROM alerts")
    assert [(a["rule"], a["state"]) for a in alerts] == [("dataset-drift", "firing")]
    assert json.loads(json.dumps(body))  # JSON round-trips
