"""One log line per delivery outcome: sent (INFO), retried (INFO), dead (WARNING), with fields."""

from __future__ import annotations

import logging

import pytest

from alerts.notifiers.slack import SlackNotifier
from alerts.outbox import DeliveryWorker
from alerts.rules import Rule
from monitor.demo.sinks import SlackStandIn
from tests.alerts.conftest import Feed, make_engine, rng

DRIFT = Rule("drift", "drift_share", ">", 0.3)


def outcomes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == "delivery"]


def test_each_attempt_logs_its_outcome_and_a_receiver_cannot_forge_lines(store, clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerts.outbox")
    with SlackStandIn(token="xoxb-test") as slack:
        slack.script((500, {}, "boom\nFAKE 2026 CRITICAL everything is fine"))
        slack_n = SlackNotifier("slack", "xoxb-test", "#ml-alerts", base_url=slack.url)
        f = Feed(make_engine(store, clock, (DRIFT,), {"slack": slack_n}), store, clock)
        f.window({"drift_share": 0.6})
        worker = DeliveryWorker(store, {"slack": slack_n}, clock, rng(), base_delay=1, max_delay=60)
        assert worker.run_once() == 1
        clock.set(worker.next_due())
        assert worker.run_once() == 1
    retry, sent = outcomes(caplog)
    assert (retry.levelno, retry.status, retry.attempts, retry.notifier) == (logging.INFO, "pending", 1, "slack")
    assert retry.getMessage().startswith(f"delivery {retry.delivery_id} to slack failed (firing, attempt 1), retrying at ")
    assert "\n" not in retry.getMessage() and "\n" not in retry.error
    assert (sent.levelno, sent.status, sent.attempts, sent.error) == (logging.INFO, "sent", 2, None)
    assert sent.getMessage() == f"delivery {sent.delivery_id} sent to slack (firing, attempt 2)"


def test_a_delivery_given_up_is_one_warning(store, clock, caplog) -> None:
    caplog.set_level(logging.INFO, logger="alerts.outbox")
    with SlackStandIn(token="xoxb-test") as slack:
        slack.script(500)
        slack_n = SlackNotifier("slack", "xoxb-test", "#ml-alerts", base_url=slack.url)
        f = Feed(make_engine(store, clock, (DRIFT,), {"slack": slack_n}), store, clock)
        f.window({"drift_share": 0.6})
        worker = DeliveryWorker(store, {"slack": slack_n}, clock, rng(), max_attempts=1, base_delay=1)
        assert worker.run_once() == 1
    [dead] = outcomes(caplog)
    assert (dead.levelno, dead.status, dead.attempts) == (logging.WARNING, "dead", 1)
    assert dead.getMessage().startswith(f"delivery {dead.delivery_id} to slack is dead: gave up after 1 attempts")
