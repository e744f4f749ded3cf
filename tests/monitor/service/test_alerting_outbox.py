"""The daemon's outbox wiring (config -> Alerting): lanes per notifier, never waiting on a
receiver in the scheduler, each notifier's ``max_backoff`` bounding any ``Retry-After``,
its ``max_attempts`` and ``backoff`` shaping its retries, its ``timeout`` bounding each request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from monitor.config import load_config
from monitor.demo.sinks import WebhookSink
from monitor.service.alerting import Alerting
from storage import alerts as db
from storage.db import Store
from storage.records import MetricRow, WindowKey, WindowRecord
from tests.store_targets import StoreTarget

T0 = datetime(2026, 11, 23, 14, 15, tzinfo=UTC)

CONFIG = """
[daemon]
state_dir = "state"
shutdown_timeout = "10s"

[[models]]
name = "churn"
reference = "ref.csv"
[models.features]
numerical = ["age"]
categorical = ["plan"]

[[rules]]
name = "drift"
metric = "drift_share"
threshold = 0.3
notifiers = ["slow", "fast"]

[[rules]]
name = "accuracy"
metric = "events_per_second"
op = "<"
threshold = 0.8
notifiers = ["slow"]

[notifiers.slow]
type = "webhook"
url = "{slow}"
backoff = "1s"
max_backoff = "2m"
timeout = "30s"

[notifiers.fast]
type = "webhook"
url = "{fast}"
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def alerting_for(
    tmp_path: Path, slow: WebhookSink, fast: WebhookSink, clock: Clock, target: StoreTarget
) -> tuple[Alerting, Store]:
    (tmp_path / "ref.csv").write_text("age,plan,prediction\n42,pro,0.5\n")
    path = tmp_path / "driftwarden.toml"
    path.write_text(CONFIG.format(slow=slow.url, fast=fast.url))
    config = load_config(path)
    store = target.open(synchronous="OFF")
    alerting = Alerting(config, store, clock=clock)
    key = WindowKey("churn", "v1", "", "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z")
    with store.transaction():
        alerting.engine.on_window(WindowRecord(key, 1000, "ok", T0), [MetricRow("", "drift_share", 0.6), MetricRow("", "events_per_second", 0.5)])
    return alerting, store


def test_scheduler_call_returns_while_a_receiver_hangs(tmp_path: Path, store_target: StoreTarget) -> None:
    clock = Clock()
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.hold()
        alerting, store = alerting_for(tmp_path, slow, fast, clock, store_target)
        assert alerting.deliver_due() == 2  # two lanes started, none awaited
        assert slow.wait_arrived(1, timeout=10)
        assert fast.wait_for(1, timeout=10)
        assert slow.requests == []  # still unanswered: the scheduler call did not wait for it
        assert alerting.deliver_due() == 0  # the busy lane is not started twice
        slow.release()
        assert alerting.worker.wait_idle(timeout=30)
        assert sorted((d.notifier, d.status) for d in db.list_deliveries(store)) == [
            ("fast", "sent"), ("slow", "sent"), ("slow", "sent")
        ]
        store.close()


def test_retry_after_is_clamped_to_the_configured_max_backoff(tmp_path: Path, store_target: StoreTarget) -> None:
    clock = Clock()
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.script((429, {"Retry-After": "1e12"}))
        alerting, store = alerting_for(tmp_path, slow, fast, clock, store_target)
        alerting.deliver_due()
        assert alerting.worker.wait_idle(timeout=30)
        slow_1, slow_2 = db.list_deliveries(store, notifier="slow")
        [fast_1] = db.list_deliveries(store, notifier="fast")
        assert fast_1.status == "sent" and slow_2.status == "sent"
        assert slow_1.status == "pending"
        assert slow_1.next_attempt_at == T0 + timedelta(minutes=2)  # max_backoff = "2m"
        store.close()


def test_drain_at_shutdown_is_bounded_and_leaves_the_rest_pending(tmp_path: Path, store_target: StoreTarget) -> None:
    clock = Clock()
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.hold()
        alerting, store = alerting_for(tmp_path, slow, fast, clock, store_target)
        assert alerting.drain_timeout() == 5.0  # min(30 s + 1, shutdown_timeout / 2)
        assert alerting.drain(0.5) is False  # the hanging receiver is not waited for
        assert alerting.deliver_due() == 0  # stopped: nothing new starts after the drain
        slow.release()
        assert alerting.worker.wait_idle(timeout=30)
        slow_1, slow_2 = db.list_deliveries(store, notifier="slow")
        # the request in flight was answered and recorded; the lane stopped after it
        assert (slow_1.status, slow_1.attempts) == ("sent", 1)
        assert (slow_2.status, slow_2.attempts) == ("pending", 0)  # sent after the next start
        store.close()


def _one_firing(tmp_path: Path, store_target: StoreTarget, clock: Clock, config_text: str) -> tuple[Alerting, Store]:
    """An Alerting of ``config_text`` on a fresh store, one breaching window judged and its
    notifications tried once (the worker idle again)."""
    (tmp_path / "ref.csv").write_text("age,plan,prediction\n42,pro,0.5\n")
    path = tmp_path / "driftwarden.toml"
    path.write_text(config_text)
    store = store_target.open(synchronous="OFF")
    alerting = Alerting(load_config(path), store, clock=clock)
    key = WindowKey("churn", "v1", "", "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z")
    with store.transaction():
        alerting.engine.on_window(WindowRecord(key, 1000, "ok", T0), [MetricRow("", "drift_share", 0.6)])
    alerting.deliver_due()
    assert alerting.worker.wait_idle(timeout=30)
    return alerting, store


def test_each_notifiers_max_attempts_and_backoff_come_from_the_config(tmp_path: Path, store_target: StoreTarget) -> None:
    """With ``max_attempts = 2`` and ``backoff = "10m"`` on "slow", a receiver that keeps
    failing is tried again 5 to 10 minutes later (equal jitter), then given up on (``dead``);
    "fast" (the defaults: 12 attempts, 5 s) has tried twice too and keeps trying."""
    clock = Clock()
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.set_down()
        fast.set_down()
        text = CONFIG.format(slow=slow.url, fast=fast.url)
        alerting, store = _one_firing(tmp_path, store_target, clock, text.replace(
            'backoff = "1s"\nmax_backoff = "2m"', 'backoff = "10m"\nmax_backoff = "1h"\nmax_attempts = 2'))
        [slow_1] = db.list_deliveries(store, notifier="slow")
        assert (slow_1.status, slow_1.attempts) == ("pending", 1)
        assert T0 + timedelta(minutes=5) <= slow_1.next_attempt_at <= T0 + timedelta(minutes=10)
        clock.now = slow_1.next_attempt_at
        alerting.deliver_due()
        assert alerting.worker.wait_idle(timeout=30)
        [slow_1] = db.list_deliveries(store, notifier="slow")
        [fast_1] = db.list_deliveries(store, notifier="fast")
        assert (slow_1.status, slow_1.attempts) == ("dead", 2)
        assert (fast_1.status, fast_1.attempts) == ("pending", 2)  # 12 attempts by default
        store.close()


def test_a_notifiers_timeout_bounds_each_request(tmp_path: Path, store_target: StoreTarget) -> None:
    """``timeout = "1s"`` on "slow": a receiver that answers only after 3 s has its request
    abandoned and the delivery left pending (10 s, the default, would have waited for it)."""
    clock = Clock()
    with WebhookSink() as slow, WebhookSink() as fast:
        slow.hold(max_seconds=3)
        text = CONFIG.format(slow=slow.url, fast=fast.url).replace('timeout = "30s"', 'timeout = "1s"')
        alerting, store = _one_firing(tmp_path, store_target, clock, text)
        [slow_1] = db.list_deliveries(store, notifier="slow")
        assert (slow_1.status, slow_1.attempts) == ("pending", 1)
        # cut at 1 s (the receiver answers at 3 s: with the default 10 s it would be sent),
        # by the whole-request deadline or by the client's own read timeout, whichever fires first
        assert slow_1.last_error == "no complete answer within 1 s" or (slow_1.last_error or "").startswith(
            "ReadTimeout: timed out (to http://127.0.0.1:")
        store.close()
