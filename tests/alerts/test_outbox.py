"""The outbox against real HTTP receivers on 127.0.0.1 (monitor.demo.sinks), injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from alerts.notifiers.base import SendResult
from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.webhook import WebhookNotifier, new_secret
from alerts.outbox import DeliveryWorker, RetryPolicy
from alerts.payloads import WindowContext
from alerts.rules import Rule
from monitor.demo.sinks import SlackStandIn, WebhookSink
from storage import alerts as db
from tests.alerts.conftest import Clock, Feed, make_engine, rng

DRIFT = Rule("drift", "drift_share", ">", 0.3)
COLS = Rule("col-drift", "drifted", "==", 1, column="*")
HIGH, LOW = {"drift_share": 0.6}, {"drift_share": 0.1}


def drain(worker: DeliveryWorker, clock: Clock, until: datetime) -> int:
    """Run the worker at each due time up to ``until`` (simulated time)."""
    attempted = 0
    while (due := worker.next_due()) is not None and due <= until:
        clock.set(due)
        attempted += worker.run_once()
    clock.set(until)
    return attempted


def test_slack_429_then_500_then_200_lands_once_after_retry_after(store, clock):
    with SlackStandIn(token="xoxb-test") as slack:
        slack.script((429, {"Retry-After": "30"}), (500, {}))
        slack_n = SlackNotifier("slack", "xoxb-test", "#ml-alerts", base_url=slack.url)
        f = Feed(make_engine(store, clock, (DRIFT,), {"slack": slack_n}), store, clock)
        f.window(HIGH)
        worker = DeliveryWorker(store, {"slack": slack_n}, clock, rng(), base_delay=1, max_delay=60)
        t0 = clock.now
        assert worker.run_once() == 1
        assert [r.status for r in slack.requests] == [429]
        due = worker.next_due()
        assert due is not None and due >= t0 + timedelta(seconds=30)

        clock.set(t0 + timedelta(seconds=29, milliseconds=999))
        assert worker.run_once() == 0  # not before the advertised wait
        assert len(slack.requests) == 1

        clock.set(due)
        assert worker.run_once() == 1
        assert [r.status for r in slack.requests] == [429, 500]
        assert slack.messages == []

        clock.set(worker.next_due())
        assert worker.run_once() == 1
        assert worker.next_due() is None
        [msg] = slack.messages
        assert msg.channel == "#ml-alerts" and msg.text.startswith("WARNING · churn · drift")
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts, d.last_error) == ("sent", 3, None)
        assert d.response == {"channel": "#ml-alerts", "ts": msg.ts}
        assert d.delivered_at == clock.now
        posted = slack.calls("chat.postMessage")
        assert len(posted) == 1 and posted[0].data["metadata"]["event_payload"]["id"] == d.id


def test_receiver_down_ten_minutes_everything_arrives_once_signed(store, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        hook = WebhookNotifier("hook", sink.url, secret)
        retrain = WebhookNotifier(
            "retrain", sink.url, secret, kind="retrain", cooldown=timedelta(hours=6)
        )
        notifiers = {"hook": hook, "retrain": retrain}
        rules = (
            Rule("drift", "drift_share", ">", 0.3, notifiers=("hook", "retrain")),
            Rule("col-drift", "drifted", "==", 1, column="*", notifiers=("hook",)),
        )
        f = Feed(make_engine(store, clock, rules, notifiers), store, clock)
        f.size = timedelta(minutes=2)
        f.context = WindowContext(callback="http://127.0.0.1:9308/api/v1/models/churn/references")
        worker = DeliveryWorker(
            store, notifiers, clock, rng(), base_delay=5, max_delay=120, max_attempts=30
        )
        down_from = clock.now
        sink.set_down(True)  # 503 for the first five minutes ...
        plan = [
            ({"drift_share": 0.6}, {"age": (0.3, True), "plan": (0.2, True)}),
            ({"drift_share": 0.1}, {"age": (0.0, False), "plan": (0.2, True)}),
            ({"drift_share": 0.7}, {"age": (0.4, True), "plan": (0.0, False)}),
            ({"drift_share": 0.1}, {"age": (0.0, False), "plan": (0.0, False)}),
            ({"drift_share": 0.8}, {"age": (0.5, True), "plan": (0.0, False)}),
        ]
        for i, (values, columns) in enumerate(plan):
            f.window(values, columns=columns, drifted=[("age", "wasserstein", 0.31)])
            if i == 2:
                sink.set_down(True, how="reset")  # ... then connections are dropped
            if i < len(plan) - 1:
                drain(worker, clock, clock.now + timedelta(minutes=2) - timedelta(seconds=1))
        assert clock.now - down_from < timedelta(minutes=10, seconds=1)
        assert sink.accepted() == []
        failed = len(sink.requests)
        assert failed >= 10
        drain(worker, clock, down_from + timedelta(minutes=10))
        sink.set_down(False)
        drain(worker, clock, clock.now + timedelta(hours=1))

        deliveries = db.list_deliveries(store)
        assert {d.status for d in deliveries} == {"sent"}
        # drift: 3 firing + 2 resolved; col-drift: 3 firing + 3 resolved groups; 1 retrain
        assert len(deliveries) == 12
        assert [d.kind for d in deliveries if d.notifier == "retrain"] == ["retrain"]
        unique = sink.unique()
        assert sorted(unique) == sorted(d.id for d in deliveries)
        verifier = Webhook(secret)
        for wid, req in unique.items():
            assert req.verified is True, req.verify_error
            body = verifier.verify(req.body, req.headers)
            assert body["id"] == wid
        # within each alert group the receiver got the messages in the order they were
        # made: a later one waits behind an earlier one still pending instead of
        # overtaking it (its last word on a firing alert was an old "resolved")
        arrived = list(unique)
        groups: dict[tuple[str, str], list[Any]] = {}
        for d in sorted(deliveries, key=lambda d: d.created_at):
            groups.setdefault((d.notifier, d.group_key), []).append(d)
        for made in groups.values():
            assert sorted((d.id for d in made), key=arrived.index) == [d.id for d in made]
            # the first of each group was tried while the receiver was down
            assert made[0].attempts >= 2
        assert len(sink.requests) > failed + len(deliveries) - 1


def test_kill_between_transition_and_send_restart_sends_each_once(store_target, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        first = store_target.open()
        notifiers = {"hook": WebhookNotifier("hook", sink.url, secret)}
        f = Feed(make_engine(first, clock, (DRIFT, COLS), notifiers), first, clock)
        f.window(HIGH, columns={"age": (0.3, True)})
        f.window(LOW, columns={"age": (0.3, True)})
        queued = sorted(d.id for d in db.list_deliveries(first))
        assert len(queued) == 3 and sink.requests == []
        del f  # "kill": the engine is gone, nothing was sent, the file stays

        second = store_target.open()
        worker = DeliveryWorker(second, notifiers, clock, rng())
        assert worker.run_once() == 3
        assert sorted(sink.unique()) == queued
        assert len(sink.accepted()) == 3
        # a second restart re-sends nothing
        third = store_target.open()
        assert DeliveryWorker(third, notifiers, clock, rng()).run_once() == 0
        assert len(sink.requests) == 3
        for s in (first, second, third):
            s.close()


class CrashAfterSend:
    """Delivers, then dies before the worker can record it (kill -9 after the 2xx)."""

    def __init__(self, inner: WebhookNotifier) -> None:
        self.inner = inner
        self.name, self.kind, self.cooldown = inner.name, inner.kind, inner.cooldown
        self.timeout = inner.timeout

    def send(self, delivery, parent=None):
        self.inner.send(delivery, parent)
        raise SystemExit("killed")


def test_kill_after_send_before_commit_receiver_dedupes_by_id(store_target, clock):
    secret = new_secret()
    with WebhookSink(secret=secret) as sink:
        first = store_target.open()
        hook = WebhookNotifier("hook", sink.url, secret)
        f = Feed(make_engine(first, clock, (DRIFT,), {"hook": hook}), first, clock)
        f.window(HIGH)
        with pytest.raises(SystemExit):
            DeliveryWorker(first, {"hook": CrashAfterSend(hook)}, clock, rng()).run_once()
        assert len(sink.accepted()) == 1

        second = store_target.open()
        if second.shared:
            # instances share the store: the dead worker's claim is taken over when its
            # lease has passed, not at once (another instance may still be sending)
            assert DeliveryWorker(second, {"hook": hook}, clock, rng()).run_once() == 0
            clock.advance(seconds=DeliveryWorker(second, {"hook": hook}).lease("hook"))
        assert DeliveryWorker(second, {"hook": hook}, clock, rng()).run_once() == 1
        accepted = sink.accepted()
        assert len(accepted) == 2
        assert accepted[0].header("webhook-id") == accepted[1].header("webhook-id")
        assert len(sink.unique()) == 1
        [d] = db.list_deliveries(second)
        assert (d.status, d.attempts) == ("sent", 1)
        first.close()
        second.close()


def test_a_notification_and_its_retry_wait_no_longer_when_the_clock_is_stepped_back(store, clock, caplog):
    """The wall clock goes back an hour after a notification was queued, and again after its
    first attempt failed: the notification goes out at once, the retry after its own 5..10 s,
    not an hour later each."""
    with WebhookSink(secret=new_secret()) as sink:
        hook = WebhookNotifier("hook", sink.url, sink.secret)
        f = Feed(make_engine(store, clock, (DRIFT,), {"hook": hook}), store, clock)
        f.window(HIGH)
        worker = DeliveryWorker(store, {"hook": hook}, clock, rng(), base_delay=10, max_delay=600)
        sink.set_down(True)
        clock.now -= timedelta(hours=1)  # NTP or an operator steps the clock back
        assert worker.run_once() == 1
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts) == ("pending", 1)
        sink.set_down(False)
        clock.now -= timedelta(hours=1)
        assert worker.run_once() == 0  # rescheduled: its backoff counts from now
        clock.now += timedelta(seconds=10)
        assert worker.run_once() == 1
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts) == ("sent", 2)
        assert "the wall clock went back; each keeps its wait" in caplog.text


def test_a_retry_within_the_longest_backoff_is_not_hurried(store, clock):
    with WebhookSink(secret=new_secret()) as sink:
        hook = WebhookNotifier("hook", sink.url, sink.secret)
        f = Feed(make_engine(store, clock, (DRIFT,), {"hook": hook}), store, clock)
        f.window(HIGH)
        worker = DeliveryWorker(store, {"hook": hook}, clock, rng(), base_delay=10, max_delay=600)
        sink.set_down(True)
        assert worker.run_once() == 1
        clock.now += timedelta(seconds=1)
        assert worker.run_once() == 0  # its backoff of 5..10 s is not over
        assert db.list_deliveries(store)[0].attempts == 1


def test_retry_limit_marks_dead_and_counts(store, clock):
    with WebhookSink() as sink:
        sink.set_down(True)
        hook = WebhookNotifier("hook", sink.url)
        Feed(make_engine(store, clock, (DRIFT,), {"hook": hook}), store, clock).window(HIGH)
        worker = DeliveryWorker(store, {"hook": hook}, clock, rng(), max_attempts=3, base_delay=1)
        assert drain(worker, clock, clock.now + timedelta(hours=1)) == 3
        [d] = db.list_deliveries(store)
        assert d.status == "dead" and d.attempts == 3
        assert d.last_error == 'gave up after 3 attempts: HTTP 503: {"error": "unavailable"}'
        assert db.delivery_counts(store) == {("hook", "dead"): 1}
        assert worker.next_due() is None


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (204, "sent"),
        (404, "dead"),
        (410, "dead"),
        (408, "pending"),
        (502, "pending"),
    ],
)
def test_status_classification(store, clock, status, outcome):
    with WebhookSink(status=status) as sink:
        hook = WebhookNotifier("hook", sink.url)
        Feed(make_engine(store, clock, (DRIFT,), {"hook": hook}), store, clock).window(HIGH)
        DeliveryWorker(store, {"hook": hook}, clock, rng()).run_once()
        [d] = db.list_deliveries(store)
        assert (d.status, d.attempts) == (outcome, 1)


def test_backoff_is_exponential_with_bounded_jitter(store, clock):
    worker = DeliveryWorker(store, {}, clock, rng(), base_delay=10, max_delay=300)
    for attempts, full in [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (12, 300)]:
        delays = [worker.backoff(attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert worker.backoff(1, retry_after=120) == 120


def test_jitter_comes_from_the_injected_rng(store, clock):
    a = DeliveryWorker(store, {}, clock, rng(), base_delay=10)
    b = DeliveryWorker(store, {}, clock, rng(), base_delay=10)
    assert [a.backoff(3) for _ in range(5)] == [b.backoff(3) for _ in range(5)]


class Flaky:
    kind, cooldown = "alert", None

    def __init__(self, results):
        self.name = "flaky"
        self.results = list(results)
        self.seen = []

    def send(self, delivery, parent=None):
        self.seen.append((delivery.id, delivery.attempts, parent and parent.id))
        r = self.results.pop(0)
        if isinstance(r, Exception):
            raise r
        return r


def test_notifier_exception_is_retried(store, clock):
    n = Flaky([RuntimeError("boom"), SendResult.sent()])
    Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock).window(HIGH)
    worker = DeliveryWorker(store, {"flaky": n}, clock, rng(), base_delay=2)
    assert worker.run_once() == 1
    [d] = db.list_deliveries(store)
    assert (d.status, d.last_error) == ("pending", "RuntimeError: boom")
    drain(worker, clock, clock.now + timedelta(minutes=1))
    assert db.list_deliveries(store)[0].status == "sent"
    assert [s[1] for s in n.seen] == [0, 1]


def test_give_up_is_dead_at_once(store, clock):
    n = Flaky([SendResult.give_up("HTTP 403")])
    Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock).window(HIGH)
    DeliveryWorker(store, {"flaky": n}, clock, rng()).run_once()
    [d] = db.list_deliveries(store)
    assert (d.status, d.last_error, d.attempts) == ("dead", "HTTP 403", 1)


def test_unconfigured_notifier_is_dead_without_an_attempt(store, clock):
    n = Flaky([])
    Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock).window(HIGH)
    assert DeliveryWorker(store, {}, clock, rng()).run_once() == 0
    [d] = db.list_deliveries(store)
    assert d.status == "dead" and "not configured" in (d.last_error or "")


def test_a_notifier_another_live_instance_has_is_left_to_it(store, clock):
    """On a shared store a delivery to a notifier this instance lacks but another live one
    has (a rolling change of the config) stays pending for that one; when no live instance
    has it, it is dead as before."""
    from storage.instances import LIVE_FOR, announce
    from tests.store_targets import age_instance

    n = Flaky([])
    Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock).window(HIGH)
    announce(store, "host-a:1:aa", {"rules": {}, "notifiers": ["flaky"], "models": {}}, clock.now)
    worker = DeliveryWorker(store, {}, clock, rng(), owner="host-b:2:bb")
    assert worker.run_once() == 0
    [d] = db.list_deliveries(store)
    if not store.shared:  # SQLite: one instance per file
        assert d.status == "dead"
        return
    assert (d.status, d.attempts) == ("pending", 0)
    age_instance(store, "host-a:1:aa", LIVE_FOR + timedelta(seconds=1), clock.now)  # host-a is gone
    assert worker.run_once() == 0
    [d] = db.list_deliveries(store)
    assert d.status == "dead" and "not configured" in (d.last_error or "")


def test_deliveries_left_to_another_instance_do_not_hold_up_giving_up_the_rest(store, clock):
    """A batch of due deliveries filled by another live instance's notifier (left to it)
    kept those to a notifier no instance has from ever being given up."""
    from storage.instances import announce

    busy, gone = Flaky([]), Flaky([])
    f = Feed(make_engine(store, clock, (Rule("d", "drift_share", ">", 0.3, notifiers=("busy",)),
                                        Rule("g", "drift_share", ">", 0.3, notifiers=("gone",))),
                         {"busy": busy, "gone": gone}), store, clock)
    f.window(HIGH)
    announce(store, "host-a:1:aa", {"notifiers": ["busy"]}, clock.now)
    worker = DeliveryWorker(store, {}, clock, rng(), owner="host-b:2:bb", batch=1)
    worker.run_once()
    if not store.shared:
        worker.run_once()  # one of a batch of 1 given up per run
    status = {d.notifier: d.status for d in db.list_deliveries(store)}
    assert status == ({"busy": "pending", "gone": "dead"} if store.shared else {"busy": "dead", "gone": "dead"})


class _Recorder:
    """A notifier that accepts everything and records the ids it was given."""

    timeout = 10.0

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, d, parent=None):
        self.sent.append(d.id)
        return SendResult.sent()


def _queued(store, *rows):
    from storage.alerts import DeliveryRecord

    with store.transaction():
        for did, created, group, parent in rows:
            db.insert_delivery(store, DeliveryRecord(id=did, notifier="hook", kind="firing", created_at=created,
                                                     group_key=group, parent_id=parent))


def test_a_group_waiting_on_a_claimed_message_does_not_hold_up_other_groups(store, clock):
    """A (group G) is due but claimed (another instance sending it, or a lane that could
    not record it): B of G waits for it, while C of group H goes out. B was put back as
    due at once, met again, and ended every run of the lane: nothing went out for the
    whole lease."""
    from storage.records import iso

    t = clock.now
    _queued(store, ("A", t, "G", None), ("B", t + timedelta(seconds=1), "G", None),
            ("C", t + timedelta(seconds=2), "H", None))
    clock.advance(seconds=10)
    store.execute("UPDATE deliveries SET claimed_by = 'me', claimed_until = ? WHERE id = 'A'",
                  (iso(clock.now + timedelta(seconds=50)),))
    n = _Recorder()
    worker = DeliveryWorker(store, {"hook": n}, clock, rng(), owner="me")
    for _ in range(45):
        worker.run_once()
        clock.advance(seconds=1)
    assert n.sent == ["C"]  # and B still waits for A
    clock.advance(seconds=10)  # A's claim lapsed: A, then B
    for _ in range(5):
        worker.run_once()
        clock.advance(seconds=1)
    assert n.sent == ["C", "A", "B"]


def test_a_resolution_stamped_before_its_firing_message_does_not_deadlock(store, clock):
    """Clocks that disagree (two instances, an NTP step back) can stamp a resolution before
    its firing message: it waits for its parent, and the parent must not wait for it."""
    t = clock.now
    _queued(store, ("P", t + timedelta(seconds=2), "G", None), ("R", t + timedelta(seconds=1), "G", "P"))
    clock.advance(seconds=10)
    n = _Recorder()
    worker = DeliveryWorker(store, {"hook": n}, clock, rng())
    for _ in range(5):
        worker.run_once()
        clock.advance(seconds=1)
    assert n.sent == ["P", "R"]


def test_resolution_waits_for_its_firing_message(store, clock):
    n = Flaky(
        [SendResult.retry("HTTP 503"), SendResult.sent(response={"ts": "1"}), SendResult.sent()]
    )
    f = Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock)
    f.size = timedelta(seconds=10)
    f.window(HIGH)
    worker = DeliveryWorker(store, {"flaky": n}, clock, rng(), base_delay=60)
    worker.run_once()  # firing fails, retried in 30..60 s
    f.window(LOW)  # 10 s later: the resolution is queued while the firing waits
    firing, resolved = db.list_deliveries(store)
    assert worker.run_once() == 0  # the resolution is deferred, not attempted
    assert db.get_delivery(store, resolved.id).next_attempt_at == firing_due(store, firing.id)
    drain(worker, clock, clock.now + timedelta(minutes=5))
    assert [s[0] for s in n.seen] == [firing.id, firing.id, resolved.id]
    assert n.seen[-1][2] == firing.id  # the notifier got the parent (for threading)
    assert {d.status for d in db.list_deliveries(store)} == {"sent"}


def firing_due(store, delivery_id):
    return db.get_delivery(store, delivery_id).next_attempt_at


def test_per_notifier_retry_policy(store, clock):
    n = Flaky([SendResult.retry("HTTP 503")] * 5)
    Feed(make_engine(store, clock, (DRIFT,), {"flaky": n}), store, clock).window(HIGH)
    worker = DeliveryWorker(
        store, {"flaky": n}, clock, rng(), max_attempts=10,
        policies={"flaky": RetryPolicy(max_attempts=2, base_delay=4, max_delay=4)},
    )  # fmt: skip
    assert 2 <= worker.backoff(1, notifier="flaky") <= 4
    assert 15 <= worker.backoff(1) <= 30  # the default policy
    assert drain(worker, clock, clock.now + timedelta(minutes=5)) == 2
    assert db.list_deliveries(store)[0].status == "dead"
