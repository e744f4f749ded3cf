"""Several outbox workers on one shared store: each delivery is sent by one of them.

Two (or three) :class:`DeliveryWorker` s stand for instances: each has its own
connection pool to the same PostgreSQL database and its own owner id, and they
dispatch at the same time against one receiver. Claims are ``FOR UPDATE SKIP
LOCKED`` with a lease; a worker that died holding a claim is taken over when the
lease has passed. A claim the store refuses pauses the lane, which says so.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest

from alerts.notifiers.webhook import WebhookNotifier
from alerts.outbox import DeliveryWorker
from monitor.demo.sinks import WebhookSink
from storage import alerts as db
from storage.alerts import DeliveryRecord
from tests.alerts.conftest import T0, Clock, rng
from tests.store_targets import StoreTarget


def queue(store, n: int, notifier: str = "hook") -> list[str]:
    ids = [f"msg_{i:04d}" for i in range(n)]
    with store.transaction():
        for i, did in enumerate(ids):
            db.insert_delivery(
                store,
                DeliveryRecord(id=did, notifier=notifier, kind="firing", created_at=T0 + timedelta(milliseconds=i),
                               payload={"text": did}),
            )  # fmt: skip
    return ids


def test_workers_on_one_postgres_send_each_delivery_once(pg_target: StoreTarget) -> None:
    clock = Clock(T0 + timedelta(seconds=1))
    stores = [pg_target.open(pool_size=4) for _ in range(3)]
    ids = queue(stores[0], 120)
    with WebhookSink() as sink:
        notifiers = {"hook": WebhookNotifier("hook", sink.url)}
        workers = [
            DeliveryWorker(s, notifiers, clock, rng(), owner=f"instance-{i}") for i, s in enumerate(stores)
        ]
        counts: list[int] = [0] * len(workers)
        start = threading.Barrier(len(workers))

        def run(i: int) -> None:
            start.wait()
            counts[i] = workers[i].run_once()

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        got = [r.header("webhook-id") for r in sink.accepted()]
    assert sorted(got) == ids  # every delivery once, none twice
    assert sum(counts) == len(ids)
    assert sum(1 for c in counts if c) >= 2, counts  # the work was shared
    rows = db.list_deliveries(stores[0])
    assert {d.status for d in rows} == {"sent"}
    assert stores[0].query("SELECT COUNT(*) AS n FROM deliveries WHERE claimed_by IS NOT NULL")[0]["n"] == 0


def test_a_dead_workers_claim_is_taken_over_after_its_lease(store_target: StoreTarget) -> None:
    clock = Clock(T0 + timedelta(seconds=1))
    store = store_target.open()
    [did] = queue(store, 1)
    with WebhookSink() as sink:
        hook = WebhookNotifier("hook", sink.url)
        dead = DeliveryWorker(store, {"hook": hook}, clock, rng(), owner="dead")
        lease = dead.lease("hook")
        assert lease == 2 * hook.timeout + 30
        # "dead" claims, then its process dies before sending
        claimed = db.claim_delivery(store, notifier="hook", now=clock(), owner="dead",
                                    lease_until=clock() + timedelta(seconds=lease))  # fmt: skip
        assert claimed is not None and claimed.id == did
        other = DeliveryWorker(store, {"hook": hook}, clock, rng(), owner="other")
        if store.shared:
            assert other.run_once() == 0  # the claim may still be sending: wait for its lease
            clock.advance(seconds=lease)
        # one instance per SQLite file: a claim of an earlier run is taken at once
        assert other.run_once() == 1
        assert [r.header("webhook-id") for r in sink.accepted()] == [did]
    assert db.get_delivery(store, did).status == "sent"


def test_an_expired_claims_late_record_does_not_overwrite_the_new_owner(pg_target: StoreTarget) -> None:
    clock = Clock(T0 + timedelta(seconds=1))
    store = pg_target.open()
    [did] = queue(store, 1)
    db.claim_delivery(store, notifier="hook", now=clock(), owner="slow", lease_until=clock() + timedelta(seconds=5))
    clock.advance(seconds=6)
    assert db.claim_delivery(store, notifier="hook", now=clock(), owner="fast",
                             lease_until=clock() + timedelta(seconds=5)) is not None  # fmt: skip
    with store.transaction():
        assert db.record_attempt(store, did, status="sent", attempts=1, now=clock(), claimed_by="fast")
        # "slow" comes back and records its attempt: refused, the row stays as "fast" left it
        assert not db.record_attempt(store, did, status="pending", attempts=1, now=clock(), claimed_by="slow")
    d = db.get_delivery(store, did)
    assert (d.status, d.attempts) == ("sent", 1)


def test_a_lane_whose_claim_the_store_refuses_says_so_and_rests(
    store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """Dispatch sees a due delivery, the lane's claim fails (a read-only store here; a
    PostgreSQL outage between the look and the claim, or a pool timeout, does the same).
    The lane logs that it could not claim -- naming no delivery, it has none -- and rests
    for the notifier's base delay, like any lane whose bookkeeping failed. (It raised
    UnboundLocalError from its own except block: nothing logged, no rest.)"""
    clock = Clock(T0 + timedelta(seconds=1))
    [did] = queue(store_target.open(), 1)
    store = store_target.open(readonly=True)
    worker = DeliveryWorker(store, {"hook": WebhookNotifier("hook", "http://127.0.0.1:9/")}, clock, rng(), owner="a")
    caplog.set_level(logging.ERROR, logger="alerts.outbox")
    assert worker.run_once() == 0
    errors = [r for r in caplog.records if r.name == "alerts.outbox"]
    assert [r.getMessage() for r in errors] == ["outbox: could not claim a delivery to hook; pausing the lane"]
    assert errors[0].exc_info is not None and "StorageError" in errors[0].exc_info[0].__name__
    assert worker.dispatch() == {}  # resting
    clock.advance(seconds=worker.policy("hook").base_delay)
    assert set(worker.dispatch()) == {"hook"}  # tries again after the rest
    assert worker.wait_idle(10)
    assert db.get_delivery(store, did).status == "pending"


def test_a_resting_lane_does_not_rest_longer_when_the_clock_is_stepped_back(
    store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """A lane rests ``base_delay`` after its claim failed; a wall clock then stepped back an
    hour must not make that an hour and ``base_delay``."""
    clock = Clock(T0 + timedelta(hours=2))
    queue(store_target.open(), 1)
    store = store_target.open(readonly=True)
    worker = DeliveryWorker(store, {"hook": WebhookNotifier("hook", "http://127.0.0.1:9/")}, clock, rng(), owner="a")
    caplog.set_level(logging.CRITICAL, logger="alerts.outbox")
    assert worker.run_once() == 0
    assert worker.dispatch() == {}  # resting
    clock.now -= timedelta(hours=1)
    assert set(worker.dispatch()) == {"hook"}
    assert worker.wait_idle(10)
