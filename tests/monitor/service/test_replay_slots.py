"""A rule without ``version`` over a baseline and a canary, end to end (replay: the
pipeline's flushes, the alerting, the store): a canary rolled back in the slot the
baseline is clear must not keep the alert firing. The slot's clear was held in memory for
the canary's window, which never comes: the alert stayed firing at the end of the file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from monitor.config import load_config
from monitor.demo.data import events, write_reference_csv
from monitor.service.replay import run_replay
from storage.db import Store

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # history: weeks before any test run

CONFIG = """
[daemon]
state_dir = "state"

[kafka]
bootstrap_servers = ["127.0.0.1:9"]
predictions_topic = "t"

[[models]]
name = "churn"
reference = "reference.csv"
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
[models.window]
type = "tumbling"
size = "1m"
lateness = "30s"
min_rows = 50
idle_timeout = "2s"

[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
"""


def _at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_canary_rolled_back_does_not_keep_the_alert_firing(tmp_path: Path) -> None:
    write_reference_csv(str(tmp_path / "reference.csv"), n=3000, seed=7)
    (tmp_path / "config.toml").write_text(CONFIG)
    rows = [
        *events(model="churn", start=START, windows=4, per_window=200, window_seconds=60,
                shift_from=99, seed=17, version="v1"),  # the baseline: clear throughout
        *events(model="churn", start=START, windows=3, per_window=200, window_seconds=60,
                shift_from=0, seed=18, version="v2"),  # the canary drifts; gone after 3 minutes
    ]
    rows = [{**r, "event_id": f"{r['version']}-{r['event_id']}"} for r in rows]
    rows.sort(key=lambda r: r["ts"])
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    run_replay(load_config(tmp_path / "config.toml"), tmp_path / "events.jsonl", tmp_path / "r")
    s = Store(tmp_path / "r" / "driftwarden.db", readonly=True)
    try:
        (alert,) = [dict(r) for r in s.query("SELECT * FROM alerts WHERE rule = 'drift'")]
    finally:
        s.close()
    assert alert["fired_at"] == _at(1.5)  # the first slot: the canary's window breaches
    assert alert["state"] == "resolved"  # the 4th slot: the baseline alone, clear
    assert alert["resolved_at"] == _at(4.5)
