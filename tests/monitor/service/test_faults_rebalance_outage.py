"""A consumer-group rebalance while the store is away.

When partitions are revoked and assigned, the daemon's rebalance listener flushes what it
holds, commits, gives partitions up and claims them again: all of it needs the store. With
the store away (SQLite locked by another process; PostgreSQL refusing connections) each of
those fails. None of that may escape into kafka-python (which would turn it into a
``KafkaError`` out of ``poll()``, the consumer torn down and the group rebalanced once
more), commit an offset past what was stored, lose the rows held in memory or count them
twice once the store is back: the tables end equal to a clean run's.

The rebalances are real: another member (a bare kafka-python consumer that commits
nothing) joins the group during the outage and leaves it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, table_dump, wait_for
from tests.monitor.fault_helpers import (
    committed,
    durable_offset,
    fault_config,
    finished,
    run_to_completion,
    store_away,
    with_sentinel,
)
from tests.store_targets import PostgresTarget, SqliteTarget, StoreTarget

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]


class Intruder:
    """Another member of the group: joins (a rebalance), holds what it is given without
    committing anything, and leaves on :meth:`leave` (another rebalance)."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            session_timeout_ms=6000, heartbeat_interval_ms=1000, auto_offset_reset="earliest",
        )
        self.assigned: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.consumer.poll(timeout_ms=200)
            self.assigned = {tp.partition for tp in self.consumer.assignment()}

    def leave(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        self.consumer.close(autocommit=False)


@dataclass
class Holding:
    """A daemon of :func:`start_holding`, running on :attr:`thread`."""

    daemon: Daemon
    thread: threading.Thread
    #: every message of the stream, the sentinel last; the first 1,050 are produced
    msgs: list[bytes]
    topic: str
    group: str
    cfg_path: Path


def start_holding(broker: EmbeddedBroker, folder: Path, prefix: str, extra: str = "") -> Holding:
    """A daemon on a new 2-partition topic, started on a thread once the first 1,050 of 6
    300-row windows' messages are in partition 0: the 3rd window closes with the first row
    of the 4th (offset 900) and is stored, the 150 rows after it are held in memory only.
    Commits and ticks are hourly, so the loop touches the store only when a window closes
    and the rebalance listener is the first to meet a store that is away or locked (with
    1 s, the next flush would meet it first, and the paused loop would take no part in a
    rebalance until the store is back)."""
    topic = f"{prefix}-{time.time_ns() % 10**8}"
    broker.create_topic(topic, partitions=2)
    msgs = with_sentinel(stream(windows=6, per_window=300, shift_from=3, seed=12))
    group = f"g-holding-{topic}"  # not fault_config's default: a clean run of the topic uses that
    cfg_path = fault_config(
        folder, bootstrap=broker.bootstrap, topic=topic, group=group, max_poll_records=100,
        idle_timeout="1h", extra=extra,
    )
    text = cfg_path.read_text().replace('commit_interval = "1s"', 'commit_interval = "1h"')
    cfg_path.write_text(text.replace('tick_interval = "1s"', 'tick_interval = "1h"'))
    daemon = Daemon(load_config(cfg_path))
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, msgs[:1050], partition=0)
    t.start()
    return Holding(daemon, t, msgs, topic, group, cfg_path)


@contextmanager
def Outage(target: StoreTarget, daemon: Daemon) -> Iterator[None]:  # noqa: N802 - reads as the thing it is
    """The store away (:func:`store_away`); on SQLite the daemon's writes wait 0.3 s, not 10 s."""
    if isinstance(target, SqliteTarget):
        daemon.store.execute("PRAGMA busy_timeout = 300")
    with store_away(target):
        yield


def test_a_rebalance_during_a_store_outage_loses_nothing_and_counts_nothing_twice(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run = start_holding(broker, tmp_path / "faulty", "rebal-out", extra=store_target.storage_toml())
    daemon, t, msgs, topic, group = run.daemon, run.thread, run.msgs, run.topic, run.group
    n = len(msgs)
    if isinstance(store_target, SqliteTarget):
        store_target = SqliteTarget(tmp_path / "faulty" / "state" / "driftwarden.db")
    where: Path | StoreTarget = store_target if isinstance(store_target, PostgresTarget) else store_target.path
    intruder: Intruder | None = None
    try:
        assert wait_for(lambda: durable_offset(where) >= 900, timeout=30)
        assert wait_for(lambda: sum(daemon.pipeline.positions.values()) >= 1050, timeout=30)
        stuck = durable_offset(where)
        assert stuck < 1050
        with Outage(store_target, daemon):
            intruder = Intruder(broker.bootstrap, topic, group)
            assert wait_for(lambda: bool(intruder.assigned), timeout=30), "the intruder never joined"
            assert wait_for(lambda: daemon.storage_error is not None, timeout=30)
            # the daemon took part: the group settled with each member holding one partition
            assert wait_for(lambda: len(daemon.assigned_partitions()) == 1
                            and daemon.assigned_partitions().isdisjoint(intruder.assigned),
                            timeout=60), (daemon.assigned_partitions(), intruder.assigned)
            time.sleep(2)
            intruder.leave()
            intruder = None
            assert wait_for(lambda: daemon.assigned_partitions() == {0, 1}, timeout=60), daemon.assigned_partitions()
            time.sleep(2)
            assert t.is_alive(), "the daemon died during the outage"
            assert committed(broker, group) <= stuck, "committed past what was stored"
        reader = getattr(store_target, "_reader", None)  # the test's own connection: cut by the outage
        if reader is not None:
            reader.close()
            store_target._reader = None
        produce(broker.bootstrap, topic, msgs[1050:], partition=0)
        assert wait_for(lambda: finished(where, n), timeout=90), durable_offset(where)
        assert daemon.storage_error is None
    finally:
        if intruder is not None:
            intruder.leave()
        daemon.stop()
        t.join(timeout=60)
    assert not t.is_alive()
    assert 0 < committed(broker, group) <= n
    said = [r.getMessage() for r in caplog.records]
    assert not [m for m in said if "rebalance callback" in m or "User provided" in m], said
    assert not [m for m in said if m.startswith("kafka:") and "reconnecting" in m], said
    clean = run_to_completion(
        fault_config(tmp_path / "clean", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h"),
        n,
    )
    assert table_dump(where) == clean
