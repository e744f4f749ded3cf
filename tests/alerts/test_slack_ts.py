"""A Slack answer's ``ts`` and ``channel`` are stored with the delivery and sent back for
threads and ``chat.update``: what a hostile or broken ``base_url`` answers instead (a huge
string, a number, control characters) is not Slack's answer: retried, never stored."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitor.demo.sinks import SlackStandIn
from storage import alerts as db
from tests.alerts.test_outbox import drain
from tests.alerts.test_slack import setup

HUGE = "9" * 900_000  # under the 1 MiB answer limit: read whole

HOSTILE_TS = [
    (HUGE, "a string of 900000 characters"),
    ("1700000000." + "1" * 100, "a string of 111 characters"),
    (1700000000.123456, "a float"),
    (None, "none"),
    ("", "''"),
    ("1700000000.123456\n", "'1700000000.123456\\n'"),
    ("1700000000.12\x1b[2J", "'1700000000.12\\x1b[2J'"),
    ("1700000000", "'1700000000'"),
    ("１７００.１２", "'１７００.１２'"),  # digits, but not ASCII ones
    (["1700000000.123456"], "a list"),
    ({"ts": "1"}, "a dict"),
]


@pytest.mark.parametrize(("ts", "shown"), HOSTILE_TS, ids=[s[:30] for _, s in HOSTILE_TS])
def test_a_ts_that_is_not_slacks_is_retried_and_not_stored(store, clock, ts, shown):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        slack.script((200, {}, {"ok": True, "channel": "C0ML", "ts": ts}))
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.response) == ("pending", 1, None)
        assert d.last_error == f"answer's message ts is {shown}; not Slack's"
        drain(worker, clock, clock.now + timedelta(minutes=5))
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts) == ("sent", 2)
        assert d.response == {"channel": "C0ML", "ts": slack.messages[-1].ts}


@pytest.mark.parametrize(("channel", "shown"), [("C" * 100_000, "a string of 100000 characters"), ("C0\r\nML", "'C0\\r\\nML'"), (7, "an int")])
def test_a_channel_that_is_not_slacks_is_retried_and_not_stored(store, clock, channel, shown):
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        slack.script((200, {}, {"ok": True, "channel": channel, "ts": "1700000000.123456"}))
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.response, d.last_error) == ("pending", None, f"answer's channel is {shown}; not Slack's")


def test_a_stored_ts_that_is_not_slacks_is_not_sent_back(store, clock):
    """A firing message's ts stored before it was checked: the resolution is posted
    in the channel (no thread to reply in), and no chat.update is made."""
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [firing] = db.list_deliveries(store)
        db.set_response(store, firing.id, {"channel": "C0ML", "ts": "1700000001.000001\x1b[2J" * 1000}, clock.now)
        f.window(columns={"age": (0.0, False)})
        worker.run_once()
        [resolved] = db.list_deliveries(store, kind="resolved")
        assert (resolved.status, resolved.last_error) == ("sent", None)
        assert slack.messages[-1].thread_ts is None
        assert [r.extra["method"] for r in slack.requests] == ["chat.postMessage", "chat.postMessage"]


def test_a_secret_made_of_digits_leaves_slacks_ts_as_it_came(store, clock, monkeypatch):
    """Slack's answer is read as it came: redacting a registered secret inside it (a
    password or token of digits) turned the ts "1712345678.000100" into "17***.000100",
    which failed the ts check, so the message was posted again at every retry."""
    from storage import redaction

    monkeypatch.setattr(redaction, "_known", dict(redaction._known))
    monkeypatch.setattr(redaction, "_pairs", redaction._pairs)
    redaction.register(["12345678"])
    with SlackStandIn() as slack:
        f, n, worker = setup(store, clock, slack)
        slack.script((200, {}, {"ok": True, "channel": "C0ML", "ts": "1712345678.000100"}))
        f.window(columns={"age": (0.3, True)})
        worker.run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.last_error) == ("sent", 1, None)
        assert d.response == {"channel": "C0ML", "ts": "1712345678.000100"}
        assert [r.extra["method"] for r in slack.requests] == ["chat.postMessage"]
