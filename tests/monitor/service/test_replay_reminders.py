"""driftwarden replay --notify sends the history's firing and resolved notifications, never
its reminders: a month of history with an alert firing throughout used to send one
reminder per ``repeat_interval`` of event time (~180 at 4 h) to Slack and webhooks within
seconds, which an on-call reads as a live incident storm. The ``alerts`` table keeps the
reminder bookkeeping a live run leaves (``last_notified_at`` moves at each reminder), and
the summary says how many reminders were not sent and why."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.config import load_config
from monitor.demo.data import events
from monitor.demo.sinks import SlackStandIn, WebhookSink
from monitor.service.replay import run_replay
from storage.db import Store
from tests.monitor.daemon_helpers import write_config

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # history: weeks before any test run

RULE = """
[alerting]
repeat_interval = "1m"

[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
notifiers = ["hook", "slack"]

[notifiers.hook]
type = "webhook"
url = "{hook}"
backoff = "1s"

[notifiers.slack]
type = "slack"
token_env = "DRIFTWARDEN_TEST_SLACK_TOKEN"
channel = "#ml-alerts"
base_url = "{slack}"
backoff = "1s"
"""


def _history(path: Path) -> Path:
    """Windows of one minute from 12:00: clean 12:00-12:02, drifting 12:02-12:10, clean
    12:10-12:13. Lateness 0: the alert fires at 12:03 and resolves at 12:11."""
    lines = [orjson.dumps(e) for e in events(model="churn", start=START, windows=10, per_window=200,
                                             window_seconds=60, shift_from=2, seed=17)]
    lines += [orjson.dumps({**e, "event_id": f"b-{e['event_id']}"})
              for e in events(model="churn", start=START + timedelta(minutes=10), windows=3, per_window=200,
                              window_seconds=60, shift_from=99, seed=18)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _cli(args: list[str]) -> Any:
    """``driftwarden ARGS`` in this process (a subprocess spends seconds importing), with
    the umask and the SIGTERM handler the command sets put back afterwards."""
    umask, sigterm = os.umask(0o077), signal.getsignal(signal.SIGTERM)
    os.umask(umask)
    try:
        out = CliRunner().invoke(app, args)
    finally:
        os.umask(umask)
        signal.signal(signal.SIGTERM, sigterm)
    assert out.exit_code == 0, out.output[-2000:]
    return out


def _alerts(db: Path) -> list[dict]:
    s = Store(db, readonly=True)
    try:
        return [dict(r) for r in s.query("SELECT * FROM alerts ORDER BY id")]
    finally:
        s.close()


def _at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_notifying_replay_sends_firing_and_resolved_but_no_reminders_of_the_past(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTWARDEN_TEST_SLACK_TOKEN", "xoxb-test")
    data = _history(tmp_path / "events.jsonl")
    with SlackStandIn(token="xoxb-test") as slack, WebhookSink() as hook:
        cfg = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                           extra=RULE.format(hook=hook.url + "/drift", slack=slack.url))
        out = _cli(["replay", "-c", str(cfg), str(data), "--state-dir", str(tmp_path / "loud"), "--notify"])
        kinds = [(r.data["type"], r.data["reminder"]) for r in hook.accepted()]
        slack_posts = len(slack.calls("chat.postMessage"))
    # one firing notification and its resolution per receiver; before, 8 reminders each
    # (12:04 .. 12:11, one per minute of event time while the alert fired)
    assert kinds == [("alert.firing", False), ("alert.resolved", False)]
    assert slack_posts == 2  # the firing message and the resolution in its thread
    # the summary says what was held back, and why
    assert out.stdout.splitlines()[0] == (
        "replayed 2600 rows: 52 windows, 0 late rows, 0 dead letters, 1 alert(s) fired,"
        " 4 notification(s) delivered, 8 reminder(s) not sent (reminders of the past)"
    )

    # the alerts table is a live run's: the reminders count as made (last_notified_at moves)
    loud = _alerts(tmp_path / "loud" / "driftwarden.db")
    (alert,) = loud
    assert (alert["fired_at"], alert["resolved_at"]) == (_at(3), _at(11))
    assert alert["last_notified_at"] == _at(11)  # the last reminder, as live
    # and a replay without notifiers (which sends nothing) leaves the same rows
    quiet = run_replay(load_config(cfg), data, tmp_path / "quiet")
    assert _alerts(tmp_path / "quiet" / "driftwarden.db") == loud
    assert quiet.reminders_not_sent == 0  # nothing would have been sent: nothing held back


def test_an_alert_still_firing_at_the_end_of_the_file_gets_no_reminder_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replay's firing notification went out seconds ago, and no daemon continues a
    replay's folder: a reminder at the end would only repeat it."""
    monkeypatch.setenv("DRIFTWARDEN_TEST_SLACK_TOKEN", "xoxb-test")
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in events(
        model="churn", start=START, windows=8, per_window=200, window_seconds=60, shift_from=2, seed=17)) + b"\n")
    with SlackStandIn(token="xoxb-test") as slack, WebhookSink() as hook:
        cfg = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                           extra=RULE.format(hook=hook.url + "/drift", slack=slack.url))
        res = run_replay(load_config(cfg), data, tmp_path / "r", notify=True)
        kinds = [(r.data["type"], r.data["reminder"]) for r in hook.accepted()]
    assert kinds == [("alert.firing", False)]
    assert res.deliveries_sent == 2 and res.reminders_not_sent == 5  # 12:04 .. 12:08
    (alert,) = _alerts(tmp_path / "r" / "driftwarden.db")
    assert alert["state"] == "firing" and alert["last_notified_at"] == _at(8)
