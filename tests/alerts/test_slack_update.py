"""Slack: the resolution is posted in the thread, then ``chat.update`` of the original fails.

The on-call was told once the reply is posted: a retry must not post it again, and a
delivery whose only failure is the update ends ``sent`` (the failure in ``last_error`` and
a warning), never ``dead`` ("the on-call was not told")."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from alerts.outbox import DeliveryWorker
from monitor.demo.sinks import SlackStandIn
from storage import alerts as db
from tests.alerts.conftest import rng
from tests.alerts.test_outbox import drain
from tests.alerts.test_slack import COLS, setup

#: what Slack answers to the resolution's chat.postMessage (scripted: the reply is posted)
REPLY = (200, {}, {"ok": True, "channel": "C0ML", "ts": "1700000099.000099"})


def methods(slack: SlackStandIn) -> list[str]:
    return [r.extra["method"] for r in slack.requests]


def fire_then_resolve_age(store, clock, slack, *update_answers, columns=("age",), max_attempts=3):
    """Post the firing message of ``columns``, resolve ``age`` with the reply posted and
    chat.update answered by ``update_answers``, and drain the retries; the worker."""
    f, n, _ = setup(store, clock, slack)
    worker = DeliveryWorker(store, {"slack": n}, clock, rng(), max_attempts=max_attempts, base_delay=1, max_delay=5)
    f.window(columns={c: (0.3, True) for c in columns})
    worker.run_once()
    f.window(columns={c: (0.0 if c == "age" else 0.3, c != "age") for c in columns})
    slack.script(REPLY, *update_answers)
    drain(worker, clock, clock.now + timedelta(minutes=5))
    return f, worker


@pytest.mark.parametrize(
    "code", ["message_not_found", "cant_update_message", "channel_not_found", "is_archived", "edit_window_closed"]
)
def test_update_refused_for_good_ends_sent_with_the_reason(store, clock, caplog, code):
    caplog.set_level(logging.INFO, logger="alerts.outbox")
    with SlackStandIn() as slack:
        fire_then_resolve_age(store, clock, slack, (200, {}, {"ok": False, "error": code}))
        [d] = db.list_deliveries(store, kind="resolved")
        assert (d.status, d.attempts) == ("sent", 1)
        assert d.last_error == f"original message not updated: slack error {code}"
        assert d.response == {"channel": "C0ML", "ts": "1700000099.000099"}
        assert methods(slack) == ["chat.postMessage", "chat.postMessage", "chat.update"]
        # the original keeps which alerts' resolutions are in its thread, for a later update
        [firing] = db.list_deliveries(store, kind="firing")
        assert firing.response["resolved_ids"] == [COLS.instance_id("churn", "age", "", "v12")]
    [line] = [r for r in caplog.records if getattr(r, "delivery_id", None) == d.id]
    assert (line.levelno, line.status) == (logging.WARNING, "sent")
    assert line.getMessage().endswith(f"but: original message not updated: slack error {code}")


#: an answer slack-sdk cannot read: JSON nested too deep for Python's parser (it raises
#: RecursionError, neither a Slack API error nor a network error)
TOO_DEEP = (200, {"Content-Type": "application/json"}, "[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize(
    "answer", [(503, {}), (429, {"Retry-After": "1"}), (200, {}, {"ok": False, "error": "internal_error"}), 0, TOO_DEEP],
    ids=["503", "429", "internal_error", "connection-dropped", "json-too-deep"],
)
def test_update_failing_until_retries_run_out_ends_sent_not_dead(store, clock, caplog, answer):
    """It ended dead ("gave up after 3 attempts"), read as "the on-call was not told"."""
    caplog.set_level(logging.INFO, logger="alerts.outbox")
    with SlackStandIn() as slack:
        fire_then_resolve_age(store, clock, slack, *[answer] * 3)
        [d] = db.list_deliveries(store, kind="resolved")
        assert (d.status, d.attempts) == ("sent", 3)
        assert d.last_error.startswith("delivered; gave up after 3 attempts on: chat.update: ")
        assert d.response == {"channel": "C0ML", "ts": "1700000099.000099"}
        # the resolution was posted once; only the update was tried again
        assert methods(slack) == ["chat.postMessage", "chat.postMessage", *["chat.update"] * 3]
        assert ("slack", "dead") not in db.delivery_counts(store)
    [last] = [r for r in caplog.records if getattr(r, "delivery_id", None) == d.id][-1:]
    assert (last.levelno, last.status) == (logging.WARNING, "sent")


def test_an_update_that_failed_is_made_good_by_the_next_one(store, clock):
    """The next resolution's update shows the earlier resolved alert too (it showed
    only its own: the failed update's resolved ids were not kept)."""
    with SlackStandIn() as slack:
        f, worker = fire_then_resolve_age(store, clock, slack, *[(503, {})] * 3, columns=("age", "plan"))
        assert [d.status for d in db.list_deliveries(store, kind="resolved")] == ["sent"]
        assert slack.messages[0].updates == 0
        f.window(columns={"age": (0.0, False), "plan": (0.0, False)})
        drain(worker, clock, clock.now + timedelta(minutes=5))
        original = slack.messages[0]
        assert original.updates == 1
        assert original.blocks[0]["text"]["text"].startswith(":white_check_mark: RESOLVED (critical)")


def test_an_update_answered_too_deep_to_read_does_not_post_the_resolution_again(store, clock, caplog):
    """``chat.update`` answered with JSON nested too deep to read made slack-sdk raise
    RecursionError, which went up to the outbox: it retried the delivery without the
    reply's ts, and the retry posted the resolution a second time. Such an answer is not
    Slack's: the retry only updates the original message, and no traceback is logged."""
    caplog.set_level(logging.WARNING, logger="alerts.notifiers.slack")
    with SlackStandIn() as slack:
        fire_then_resolve_age(store, clock, slack, TOO_DEEP)
        [d] = db.list_deliveries(store, kind="resolved")
        assert (d.status, d.attempts, d.last_error) == ("sent", 2, None)
        assert d.response == {"channel": "C0ML", "ts": "1700000099.000099", "updated": True}
        assert methods(slack) == ["chat.postMessage", "chat.postMessage", "chat.update", "chat.update"]
        assert slack.messages[0].updates == 1
    assert [r.getMessage() for r in caplog.records if r.name == "alerts.notifiers.slack"] == []
