"""SQLite away before any partition is claimed: the daemon's idle keepalive is then its
only contact with the store. It used to return without asking the store when nothing
was claimed, so the store's absence went unseen (no storage error, /readyz 200 with
every partition paused) and a storage error could clear ("storage recovered") without
the store having answered. Now it asks the store every time: the error shows while the
store is away, stays, and clears once, when the store answers."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, wait_for
from tests.monitor.fault_helpers import durable_offset, fault_config, store_away
from tests.store_targets import SqliteTarget

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.sqlite_only("the SQLite keepalive with nothing claimed; a shared store always reached it"),
]


def watch_until_assigned(daemon: Daemon, topic: str, *, then: float, timeout: float) -> list[str | None]:
    """:attr:`Daemon.storage_error` sampled every 50 ms until partition 0 of ``topic`` is
    assigned and held paused for storage, and for ``then`` seconds more; fails when that
    takes longer than ``timeout`` seconds."""
    seen: list[str | None] = []
    settled_at: list[float] = []

    def settled() -> bool:
        seen.append(daemon.storage_error)
        held = (daemon.assigned_partitions() == {0} and daemon.paused_partitions() == {(topic, 0)}
                and daemon.paused_for_storage)
        if held and not settled_at:
            settled_at.append(time.monotonic())
        return bool(settled_at) and time.monotonic() - settled_at[0] >= then

    assert wait_for(settled, timeout=timeout, interval=0.05), (
        f"assigned {daemon.assigned_partitions()}, paused {daemon.paused_partitions()},"
        f" paused for storage {daemon.paused_for_storage}")
    return seen


def test_an_outage_with_nothing_claimed_shows_and_clears_only_when_the_store_answers(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="driftwarden")
    topic = f"unclaimed-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = stream(windows=1, per_window=200, shift_from=9, seed=5)
    cfg_path = fault_config(tmp_path / "d", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h")
    cfg = load_config(cfg_path)
    daemon = Daemon(cfg, http=False)
    daemon.store.execute("PRAGMA busy_timeout = 300")  # each write waits 0.3 s for the lock, not 10 s
    db = SqliteTarget(Path(cfg.daemon.state_dir) / "driftwarden.db")
    produce(broker.bootstrap, topic, msgs)

    def recovered() -> int:
        return sum(r.getMessage() == "storage recovered" for r in caplog.records)

    t = threading.Thread(target=daemon.run, daemon=True)
    # the public read-only view of the consumer: nothing before it runs
    assert daemon.assigned_partitions() == frozenset() and daemon.paused_partitions() == frozenset()
    assert not daemon.paused_for_storage
    try:
        with store_away(db):
            t.start()
            # the keepalive (nothing claimed yet) or the claim at the assignment, whichever
            # comes first, finds the store away: nothing claimed
            assert wait_for(lambda: daemon.storage_error is not None, timeout=60), "the outage went unseen"
            assert "locked" in daemon.storage_error, daemon.storage_error
            assert daemon.pipeline.claims == {}
            # Kafka's assignment comes before or after that (the group's join takes seconds on
            # a loaded machine): watched until it has come and several keepalives
            # (commit_interval 1 s) have run since, the error never clearing meanwhile
            seen = watch_until_assigned(daemon, topic, then=3.0, timeout=60)
            assert None not in seen, "the storage error cleared while the store was away"
            assert recovered() == 0
            assert daemon.pipeline.positions.get(0, 0) == 0  # nothing consumed meanwhile
            assert daemon.assigned_partitions() == {0}  # assigned by Kafka, not claimed in the store
            assert daemon.paused_partitions() == {(topic, 0)}
            assert daemon.paused_for_storage
        assert wait_for(lambda: daemon.storage_error is None, timeout=30)
        assert wait_for(lambda: set(daemon.pipeline.claims) == {0}, timeout=30)
        assert wait_for(lambda: durable_offset(db) >= len(msgs), timeout=30), durable_offset(db)
        assert daemon.paused_partitions() == frozenset() and not daemon.paused_for_storage
        assert daemon.assigned_partitions() == {0}
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    assert recovered() == 1
