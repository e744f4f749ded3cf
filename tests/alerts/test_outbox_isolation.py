"""One receiver cannot stop, delay or park the others: hostile ``Retry-After`` values,
hanging and trickling receivers, notifier exceptions, poison deliveries.

Real HTTP receivers on 127.0.0.1 (monitor.demo.sinks), real SQLite, injected clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import wait
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.notifiers.base import MAX_RETRY_DELAY, SendResult, parse_retry_after
from alerts.notifiers.slack import MAX_ANSWER_BYTES, SlackNotifier, SlackWebhookNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.outbox import DeliveryWorker, RetryPolicy, later
from alerts.rules import Rule
from monitor.config import MAX_BACKOFF
from monitor.demo.sinks import SlackStandIn, WebhookSink
from storage import alerts as db
from storage.alerts import DeliveryRecord
from storage.db import Store
from tests.alerts.conftest import T0, Clock, Feed, make_engine, rng
from tests.alerts.test_outbox import drain

HIGH, LOW = {"drift_share": 0.6}, {"drift_share": 0.1}


def both(*names: str) -> Rule:
    return Rule("drift", "drift_share", ">", 0.3, notifiers=names)


def status_of(store: Store, notifier: str) -> list[tuple[str, int]]:
    return [(d.status, d.attempts) for d in db.list_deliveries(store, notifier=notifier)]


# -- Retry-After -------------------------------------------------------------------------


def test_retry_after_1e12_from_one_receiver_the_other_still_delivered(store, clock):
    with WebhookSink() as bad, WebhookSink() as good:
        bad.script((503, {"Retry-After": "1e12"}))
        notifiers = {"bad": WebhookNotifier("bad", bad.url), "good": WebhookNotifier("good", good.url)}
        Feed(make_engine(store, clock, (both("bad", "good"),), notifiers), store, clock).window(HIGH)
        worker = DeliveryWorker(
            store, notifiers, clock, rng(), policies={"bad": RetryPolicy(5, 1.0, 120.0)}
        )
        t0 = clock.now
        assert worker.run_once() == 2
        assert status_of(store, "good") == [("sent", 1)]
        assert len(good.accepted()) == 1
        [d] = db.list_deliveries(store, notifier="bad")
        assert (d.status, d.attempts, d.last_error) == ("pending", 1, 'HTTP 503: {"ok": false}')
        # the receiver asked for 31,700 years: clamped to the notifier's max_backoff
        assert d.next_attempt_at == t0 + timedelta(seconds=120)

        drain(worker, clock, t0 + timedelta(minutes=10))
        assert status_of(store, "bad") == [("sent", 2)]
        assert len(bad.accepted()) == 1 and len(good.requests) == 1


FAR_FUTURE = "Fri, 31 Dec 9999 23:59:59 GMT"
PAST = "Wed, 21 Oct 2015 07:28:00 GMT"

# (Retry-After header, the wait it must cause in seconds; None = the plain backoff)
GARBAGE = [
    ("1e12", 120.0),
    ("inf", 120.0),
    ("Infinity", 120.0),
    ("1e309", 120.0),
    ("99999999999999999999999999", 120.0),
    (FAR_FUTURE, 120.0),
    ("30", 30.0),
    ("1.5", 1.5),
    ("-5", None),
    ("-inf", None),
    ("0", None),
    (PAST, None),
    ("nan", None),
    ("NaN", None),
    ("", None),
    ("abc", None),
    ("0x10", None),
    ("5, 7", None),
    ("Mon, 99 Foo 2020 25:61:61 GMT", None),
    ("Sun, 06 Nov 1994 08:49:37 +9999", None),
    ("x" * 5000, None),
]


@pytest.mark.parametrize(("header", "wait"), GARBAGE, ids=[g[0][:30] or "empty" for g in GARBAGE])
def test_garbage_retry_after_is_parsed_defensively(store, clock, header, wait):
    with WebhookSink() as sink:
        sink.script((429, {"Retry-After": header}))
        hook = WebhookNotifier("hook", sink.url)
        Feed(make_engine(store, clock, (both("hook"),), {"hook": hook}), store, clock).window(HIGH)
        worker = DeliveryWorker(store, {"hook": hook}, clock, rng(), base_delay=1, max_delay=120)
        t0 = clock.now
        assert worker.run_once() == 1
        [d] = db.list_deliveries(store)
        assert d.status == "pending" and d.last_error == 'HTTP 429: {"ok": false}'
        delay = (d.next_attempt_at - t0).total_seconds()
        if wait is None:
            assert 0.5 <= delay <= 1.0  # first backoff: base 1 s with equal jitter
        else:
            assert delay == wait
        drain(worker, clock, t0 + timedelta(minutes=5))
        assert db.list_deliveries(store)[0].status == "sent"


def test_parse_retry_after_never_raises_and_stays_in_range():
    now = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("Mon, 23 Nov 2026 14:01:00 GMT", now=now) == 60.0
    assert parse_retry_after(["3", "9"]) == 3.0  # first of a repeated header
    assert parse_retry_after(b"4") == 4.0
    assert parse_retry_after(2.5) == 2.5
    for value in ("1e12", "inf", "1e309", FAR_FUTURE, 1e300):
        assert parse_retry_after(value, now=now) == MAX_RETRY_DELAY
    for value in ("-1", "-inf", PAST, "0"):
        assert parse_retry_after(value, now=now) == 0.0
    for value in (None, "", " ", "nan", "abc", "1 2", "x" * 100, {}, object(), True, []):
        assert parse_retry_after(value) is None


@given(st.one_of(st.text(max_size=80), st.floats(), st.binary(max_size=40)))
def test_parse_retry_after_property(value):
    parsed = parse_retry_after(value)
    assert parsed is None or (math.isfinite(parsed) and 0.0 <= parsed <= MAX_RETRY_DELAY)


def test_backoff_and_dates_cannot_overflow(store, clock):
    worker = DeliveryWorker(store, {}, clock, rng(), base_delay=30, max_delay=MAX_RETRY_DELAY)
    for attempts in (1, 64, 1_000, 10**9):
        for retry_after in (None, 1e12, math.inf, -math.inf, math.nan, -1.0):
            d = worker.backoff(attempts, retry_after)
            assert 0 <= d <= MAX_RETRY_DELAY
    assert later(T0, math.inf) == T0 + timedelta(days=7)
    assert later(T0, math.nan) == T0
    assert later(T0, -5) == T0
    assert later(datetime.max.replace(tzinfo=UTC), 60).year == 9999
    with pytest.raises(ValueError, match="at most"):
        RetryPolicy(3, 1.0, MAX_RETRY_DELAY + 1)
    with pytest.raises(ValueError, match="finite"):
        RetryPolicy(3, 1.0, math.inf)
    # the config refuses what the outbox would refuse
    assert MAX_BACKOFF.total_seconds() == MAX_RETRY_DELAY


# -- slow and hanging receivers -------------------------------------------------------------------


RULES = (
    Rule("a", "drift_share", ">", 0.3, notifiers=("slow", "fast")),
    Rule("b", "accuracy", "<", 0.8, notifiers=("slow", "fast")),
    Rule("c", "row_count", "<", 100, notifiers=("slow", "fast")),
)
BAD_WINDOW = {"drift_share": 0.6, "accuracy": 0.5, "row_count": 10}


def test_hanging_receiver_delays_no_other_notifier(store, clock):
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.hold()
        notifiers = {
            "slow": WebhookNotifier("slow", slow.url, timeout=30),
            "fast": WebhookNotifier("fast", fast.url),
        }
        Feed(make_engine(store, clock, RULES, notifiers), store, clock).window(BAD_WINDOW)
        worker = DeliveryWorker(store, notifiers, clock, rng())
        lanes = worker.dispatch()
        assert sorted(lanes) == ["fast", "slow"]
        assert slow.wait_arrived(1, timeout=10)  # slow's first request is in flight, unanswered
        # meanwhile every delivery of the other notifier goes out and is recorded
        assert wait([lanes["fast"]], timeout=10).done == {lanes["fast"]}
        assert lanes["fast"].result() == 3
        assert status_of(store, "fast") == [("sent", 1)] * 3
        assert len(fast.accepted()) == 3
        assert not lanes["slow"].done()
        assert slow.requests == [] and status_of(store, "slow") == [("pending", 0)] * 3
        assert worker.dispatch() == {}  # a busy lane is not started twice
        slow.release()
        assert lanes["slow"].result(timeout=30) == 3
        assert status_of(store, "slow") == [("sent", 1)] * 3
        # each notifier's deliveries arrive in the order they were queued
        queued = [d.id for d in db.list_deliveries(store, notifier="slow")]
        assert [r.header("webhook-id") for r in slow.requests] == queued


def test_receiver_that_never_answers_times_out_and_is_retried(store, clock):
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.hold()
        notifiers = {
            "slow": WebhookNotifier("slow", slow.url, timeout=0.5),
            "fast": WebhookNotifier("fast", fast.url),
        }
        Feed(make_engine(store, clock, (RULES[0],), notifiers), store, clock).window(BAD_WINDOW)
        worker = DeliveryWorker(store, notifiers, clock, rng(), base_delay=1)
        assert worker.run_once() == 2
        [d] = db.list_deliveries(store, notifier="slow")
        assert d.status == "pending" and d.attempts == 1
        # the client's own read timeout names the receiver (without its path)
        assert d.last_error == "no complete answer within 0.5 s" or (d.last_error or "").startswith(
            "ReadTimeout: timed out (to http://127.0.0.1:")
        assert status_of(store, "fast") == [("sent", 1)]
        slow.release()
        drain(worker, clock, clock.now + timedelta(minutes=1))
        assert status_of(store, "slow") == [("sent", 2)]


def test_trickling_receiver_is_cut_at_the_notifier_timeout(store, clock):
    """An answer trickled one byte per 50 ms never trips a per-read timeout; the
    request as a whole is still bounded by the notifier's timeout."""
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.set_trickle(0.05)  # ~150 bytes: 7.5 s for the whole answer
        notifiers = {
            "slow": WebhookNotifier("slow", slow.url, timeout=0.5),
            "fast": WebhookNotifier("fast", fast.url),
        }
        Feed(make_engine(store, clock, (RULES[0],), notifiers), store, clock).window(BAD_WINDOW)
        worker = DeliveryWorker(store, notifiers, clock, rng(), base_delay=1)
        assert worker.run_once() == 2
        [d] = db.list_deliveries(store, notifier="slow")
        assert (d.status, d.last_error) == ("pending", "no complete answer within 0.5 s")
        assert status_of(store, "fast") == [("sent", 1)]


def slack_notifier(slack: SlackStandIn, mode: str, timeout: float = 10) -> SlackNotifier | SlackWebhookNotifier:
    if mode == "bot":
        return SlackNotifier("slack", "xoxb-test", "C0ML", base_url=slack.url, timeout=timeout)  # type: ignore[arg-type]
    return SlackNotifier.from_webhook_url("slack", slack.webhook_url, timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["bot", "incoming-webhook"])
def test_a_trickling_slack_is_cut_at_the_notifier_timeout(store, clock, mode):
    """slack-sdk's urllib timeout is per read: an answer trickled one byte per 50 ms held
    the Slack lane for ever. Its requests go through the notifiers' bounded client now."""
    with SlackStandIn() as slack, WebhookSink() as fast:
        slack.set_trickle(0.05)
        notifiers = {"slack": slack_notifier(slack, mode, timeout=0.5), "fast": WebhookNotifier("fast", fast.url)}
        Feed(make_engine(store, clock, (both("slack", "fast"),), notifiers), store, clock).window(HIGH)
        worker = DeliveryWorker(store, notifiers, clock, rng(), base_delay=1)
        assert worker.run_once() == 2
        [d] = db.list_deliveries(store, notifier="slack")
        assert (d.status, d.attempts, d.last_error) == ("pending", 1, "no complete answer within 0.5 s")
        assert status_of(store, "fast") == [("sent", 1)]
        slack.set_trickle(None)
        drain(worker, clock, clock.now + timedelta(minutes=1))
        assert status_of(store, "slack") == [("sent", 2)]


@pytest.mark.parametrize("mode", ["bot", "incoming-webhook"])
def test_an_endless_slack_answer_is_not_read_whole(store, clock, mode):
    """An answer longer than MAX_ANSWER_BYTES (a base_url that is not Slack, a proxy's
    error page streaming on) is cut, not read into memory: the delivery is retried."""
    with SlackStandIn() as slack:
        slack.script((200, {}, "x" * (MAX_ANSWER_BYTES + 1)))
        notifiers = {"slack": slack_notifier(slack, mode)}
        Feed(make_engine(store, clock, (both("slack"),), notifiers), store, clock).window(HIGH)
        worker = DeliveryWorker(store, notifiers, clock, rng(), base_delay=1)
        worker.run_once()
        [d] = db.list_deliveries(store, notifier="slack")
        assert (d.status, d.attempts) == ("pending", 1)
        assert d.last_error == f"answer longer than {MAX_ANSWER_BYTES} bytes (HTTP 200); not read"
        drain(worker, clock, clock.now + timedelta(minutes=1))
        assert status_of(store, "slack") == [("sent", 2)]


# -- errors of one delivery -----------------------------------------------------------------------


class Broken:
    """A notifier whose code raises on every send."""

    kind, cooldown = "alert", None

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def send(self, delivery, parent=None):
        self.calls += 1
        raise RuntimeError("boom")


def test_a_raising_notifier_is_retried_until_dead_others_unaffected(store, clock):
    with WebhookSink() as sink:
        broken = Broken("broken")
        notifiers = {"broken": broken, "hook": WebhookNotifier("hook", sink.url)}
        Feed(make_engine(store, clock, (both("broken", "hook"),), notifiers), store, clock).window(
            HIGH
        )
        worker = DeliveryWorker(store, notifiers, clock, rng(), max_attempts=3, base_delay=1)
        drain(worker, clock, clock.now + timedelta(hours=1))
        [d] = db.list_deliveries(store, notifier="broken")
        assert (d.status, d.attempts) == ("dead", 3)
        assert d.last_error == "gave up after 3 attempts: RuntimeError: boom"
        assert broken.calls == 3
        assert status_of(store, "hook") == [("sent", 1)]


def poison(store: Store, notifier: str, payload: dict, n: int = 0) -> str:
    d = DeliveryRecord(
        id=f"msg_poison{n}", notifier=notifier, kind="firing", created_at=T0, payload=payload
    )
    with store.transaction():
        db.insert_delivery(store, d)
    return d.id


def test_poison_deliveries_go_dead_with_a_reason_and_the_rest_are_sent(store, clock):
    with SlackStandIn() as slack, WebhookSink() as sink:
        notifiers = {
            "slack": SlackNotifier("slack", "xoxb-test", "C0ML", base_url=slack.url),
            "hook": WebhookNotifier("hook", sink.url),
        }
        # a payload the Slack renderer cannot use, then a good alert to both
        poison(store, "slack", {"alerts": 5}, 1)
        # a row whose stored JSON is corrupt (a disk error, a hand edit)
        unreadable = poison(store, "hook", {}, 2)
        with store.transaction():
            store.execute("UPDATE deliveries SET payload = '{not json' WHERE id = ?", (unreadable,))
        Feed(make_engine(store, clock, (both("slack", "hook"),), notifiers), store, clock).window(
            HIGH
        )
        worker = DeliveryWorker(store, notifiers, clock, rng())
        worker.run_once()
        by_id = {d.id: d for d in db.list_deliveries(store)}
        bad_slack, bad_hook = by_id.pop("msg_poison1"), by_id.pop(unreadable)
        assert (bad_slack.status, bad_slack.attempts) == ("dead", 1)
        assert bad_slack.last_error == (
            "cannot build the Slack message: TypeError: 'int' object is not iterable"
        )
        assert (bad_hook.status, bad_hook.attempts) == ("dead", 1)
        assert bad_hook.last_error.startswith("stored row unreadable: JSONDecodeError: ")
        assert {(d.notifier, d.status) for d in by_id.values()} == {
            ("slack", "sent"), ("hook", "sent")
        }  # fmt: skip
        assert len(slack.messages) == 1 and len(sink.requests) == 1
        assert worker.next_due() is None


def test_unknown_send_result_is_retried_not_fatal(store, clock):
    class Odd:
        kind, cooldown, name = "alert", None, "odd"

        def send(self, delivery, parent=None):
            return {"ok": True}  # not a SendResult

    Feed(make_engine(store, clock, (both("odd"),), {"odd": Odd()}), store, clock).window(HIGH)
    worker = DeliveryWorker(store, {"odd": Odd()}, clock, rng(), max_attempts=2, base_delay=1)
    drain(worker, clock, clock.now + timedelta(minutes=5))
    [d] = db.list_deliveries(store)
    assert (d.status, d.last_error) == (
        "dead", "gave up after 2 attempts: notifier returned dict, not a SendResult"
    )  # fmt: skip


# -- every delivery ends sent or dead -----------------------------------------------------------

RETRY_AFTER = st.one_of(
    st.none(),
    st.sampled_from([v for v, _ in GARBAGE if len(v) < 100]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
ANSWER = st.tuples(st.sampled_from([0, 200, 204, 400, 404, 408, 429, 500, 503]), RETRY_AFTER)
MAX_ATTEMPTS, MAX_DELAY = 4, 60.0


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[WebhookSink, WebhookSink]]:
    with WebhookSink() as a, WebhookSink() as b:
        yield a, b


def _scripted(answers: list[tuple[int, str | None]]) -> list[tuple[int, dict[str, str]]]:
    return [(status, {} if ra is None else {"Retry-After": ra}) for status, ra in answers]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    a=st.lists(ANSWER, max_size=2 * MAX_ATTEMPTS),
    b=st.lists(ANSWER, max_size=2 * MAX_ATTEMPTS),
)
def test_every_delivery_ends_sent_or_dead(receivers, store_target, a, b):
    sink_a, sink_b = receivers
    sink_a.reset()
    sink_b.reset()
    sink_a.script(*_scripted(a))
    sink_b.script(*_scripted(b))
    notifiers = {"a": WebhookNotifier("a", sink_a.url), "b": WebhookNotifier("b", sink_b.url)}
    clock = Clock()
    store = store_target.fresh().open(synchronous="OFF")
    try:
        f = Feed(make_engine(store, clock, (both("a", "b"),), notifiers), store, clock)
        f.window(HIGH)
        f.window(LOW)  # a resolution, waiting for its firing message
        worker = DeliveryWorker(
            store, notifiers, clock, rng(), max_attempts=MAX_ATTEMPTS, base_delay=1,
            max_delay=MAX_DELAY,
        )  # fmt: skip
        for _ in range(100):
            due = worker.next_due()
            if due is None:
                break
            clock.set(due)
            worker.run_once()
            for d in db.list_deliveries(store, status="pending"):
                # no receiver can park a delivery beyond max_backoff
                assert d.next_attempt_at - clock.now <= timedelta(seconds=MAX_DELAY)
        deliveries = db.list_deliveries(store)
        assert len(deliveries) == 4
        assert {d.status for d in deliveries} <= {"sent", "dead"}
        for d in deliveries:
            assert 1 <= d.attempts <= MAX_ATTEMPTS
            assert (d.delivered_at is not None) == (d.status == "sent")
        for name, sink in (("a", sink_a), ("b", sink_b)):
            mine = [d for d in deliveries if d.notifier == name]
            assert len(sink.requests) == sum(d.attempts for d in mine)
    finally:
        store.close()


def test_hostile_retry_after_from_notifier_code_is_clamped(store, clock):
    """A ``retry_after`` of inf or 1e300 straight from a notifier's code is clamped too."""

    class Hostile:
        kind, cooldown, name = "alert", None, "h"

        def __init__(self) -> None:
            self.results = [SendResult.retry("slow down", retry_after=v) for v in (math.inf, 1e300)]
            self.results.append(SendResult.sent())

        def send(self, delivery, parent=None):
            return self.results.pop(0)

    n = Hostile()
    Feed(make_engine(store, clock, (both("h"),), {"h": n}), store, clock).window(HIGH)
    worker = DeliveryWorker(store, {"h": n}, clock, rng(), base_delay=1, max_delay=30)
    t0 = clock.now
    worker.run_once()
    assert db.list_deliveries(store)[0].next_attempt_at == t0 + timedelta(seconds=30)
    drain(worker, clock, t0 + timedelta(minutes=5))
    assert status_of(store, "h") == [("sent", 3)]
