"""A store that hangs inside a rebalance callback must not get the member evicted.

kafka-python 3 runs the rebalance listener on its IO loop, the loop that also sends the
group's heartbeats. The daemon's listener flushes to the store when partitions are
revoked and claims them in the store when they are assigned: a store call that waits
(an SQLite file another process holds with ``BEGIN EXCLUSIVE``: the busy timeout, 10 s by
default; a PostgreSQL that does not answer: its connect or statement timeout) must not
stop the heartbeats for that long. If it did, a wait longer than
``kafka.session_timeout`` (10 s by default, as long as SQLite's busy timeout) had the
coordinator evict the member in the middle of the rebalance: its partitions handed
round without it, a second rebalance when it rejoins under a new member id.

The rebalance is real (another member joins the group) and so is the lock. The embedded
broker does not evict a member that stops heartbeating during a rebalance (Apache Kafka
does), so the test reads kafka-python's own account: between the revoke (logged by the
client before it calls the listener) and the flush that waited out the lock, the
daemon's consumer went on receiving heartbeat responses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, wait_for
from tests.monitor.fault_helpers import (
    committed,
    durable_offset,
    finished,
    store_away,
)
from tests.monitor.service.test_faults_rebalance_outage import Intruder, start_holding
from tests.store_targets import SqliteTarget

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]


class ClientEvents(logging.Handler):
    """What the daemon's consumer (its IO thread is ``kafka-io-driftwarden``) and the
    daemon said, in order: ``revoke`` (the client is about to call the revoke listener),
    ``heartbeat`` (a heartbeat response arrived), ``locked`` (a flush waited out the lock)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.name == "driftwarden.daemon" and "locked" in msg:
            self.events.append("locked")
        elif record.threadName != "kafka-io-driftwarden":
            return  # the other member's client
        elif msg.startswith("Revoking previously assigned partitions {"):
            self.events.append("revoke")
        elif msg.startswith("Received heartbeat response"):
            self.events.append("heartbeat")

    def during_the_first_revoke(self) -> list[str]:
        """The events from the first revoke to the first flush that met the lock."""
        first = self.events.index("revoke")
        return self.events[first:self.events.index("locked", first) + 1]


@pytest.fixture
def client_events() -> Iterator[ClientEvents]:
    handler = ClientEvents()
    loggers = [logging.getLogger(n) for n in ("kafka.coordinator", "driftwarden.daemon")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _member(daemon: Daemon) -> str:
    """The daemon's member id in the group (a new one after an eviction)."""
    return str(daemon._consumer._coordinator._generation.member_id)


@pytest.mark.sqlite_only("an SQLite file locked by another connection")
def test_a_locked_store_in_a_rebalance_callback_keeps_the_member_in_the_group(
    broker: EmbeddedBroker, tmp_path: Path, client_events: ClientEvents
) -> None:
    # the rebalance listener is the first to meet the lock (the loop itself writes only
    # when a window closes); heartbeats every second, evicted after 6 s without one
    run = start_holding(broker, tmp_path / "hang", "rebal-hang")
    daemon, t, msgs, topic, group = run.daemon, run.thread, run.msgs, run.topic, run.group
    n = len(msgs)
    assert 'session_timeout = "6s"' in run.cfg_path.read_text()
    db = tmp_path / "hang" / "state" / "driftwarden.db"
    intruder: Intruder | None = None
    try:
        # three windows stored, the 150 rows after them held in memory: the revoke flushes them
        assert wait_for(lambda: durable_offset(db) >= 900, timeout=30)
        assert wait_for(lambda: sum(daemon.pipeline.positions.values()) >= 1050, timeout=30)
        member = _member(daemon)
        # each store call waits out SQLite's busy timeout (10 s, the default): past the 6 s
        assert daemon.store.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
        with store_away(SqliteTarget(db)):
            intruder = Intruder(broker.bootstrap, topic, group)
            assert wait_for(lambda: daemon.storage_error is not None, timeout=60), "the lock went unseen"
        assert "locked" in (daemon.storage_error or ""), daemon.storage_error
        # heartbeats went on while the revoke listener waited for the store
        waited = client_events.during_the_first_revoke()
        assert waited.count("heartbeat") >= 1, waited
        assert wait_for(lambda: len(daemon.assigned_partitions()) == 1
                        and daemon.assigned_partitions().isdisjoint(intruder.assigned),
                        timeout=60), (daemon.assigned_partitions(), intruder.assigned)
        # the same member, never evicted
        assert _member(daemon) == member
        intruder.leave()
        intruder = None
        assert wait_for(lambda: daemon.assigned_partitions() == {0, 1}, timeout=60), daemon.assigned_partitions()
        produce(broker.bootstrap, topic, msgs[1050:], partition=0)
        assert wait_for(lambda: finished(db, n), timeout=90), durable_offset(db)
        assert daemon.storage_error is None
        assert _member(daemon) == member
    finally:
        if intruder is not None:
            intruder.leave()
        daemon.stop()
        t.join(timeout=60)
    assert not t.is_alive()
    assert 0 < committed(broker, group) <= n
