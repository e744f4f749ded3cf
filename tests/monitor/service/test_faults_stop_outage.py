"""SIGTERM while the store is away: the daemon stops promptly, exit 0, and says in one
ERROR line what it could not store; nothing is lost, because offsets were committed only
up to what is stored: after the store is back a restart reads those rows from Kafka
again and the tables end equal to a clean run's.

Before, each step of the drain (final flush, outbox, dead letters, the revoke listener
on closing the consumer, giving the partitions up) waited for the store in turn, and the
drain was cut by ``daemon.shutdown_timeout`` (30 s, exit 1): as long as Kubernetes'
whole grace period."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker
from tests.monitor.daemon_helpers import produce, stream, table_dump, wait_for
from tests.monitor.fault_helpers import (
    committed,
    durable_offset,
    fault_config,
    finished,
    run_to_completion,
    start_daemon,
    store_away,
    terminate,
    wait_ready,
    with_sentinel,
)
from tests.store_targets import PostgresTarget, SqliteTarget, StoreTarget

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]


def test_sigterm_during_a_store_outage_exits_promptly_and_loses_nothing(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    topic = f"stop-out-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=6, per_window=300, shift_from=3, seed=21))
    n = len(msgs)
    group = f"g-faulty-{topic}"
    cfg = fault_config(
        tmp_path / "faulty", bootstrap=broker.bootstrap, topic=topic, group=group, max_poll_records=100,
        idle_timeout="1h", extra=store_target.storage_toml(),
    )
    if isinstance(store_target, SqliteTarget):
        store_target = SqliteTarget(tmp_path / "faulty" / "state" / "driftwarden.db")
    where: Path | StoreTarget = store_target if isinstance(store_target, PostgresTarget) else store_target.path
    log = tmp_path / "daemon.log"
    produce(broker.bootstrap, topic, msgs[:900])
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg)
        assert wait_for(lambda: durable_offset(where) >= 900, timeout=30)
        stuck = durable_offset(where)
        with store_away(store_target):
            produce(broker.bootstrap, topic, msgs[900:1200])
            assert wait_for(lambda: b"consumption paused" in log.read_bytes(), timeout=40)
            size = log.stat().st_size
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            took = time.monotonic() - t0
            said = log.read_bytes()[size:].decode()
            assert committed(broker, group) <= stuck, "committed past what was stored"
    finally:
        if proc.poll() is None:
            terminate(proc)
    print(f"\nstop during a store outage: {took:.1f}s")
    # exit 0: the drain was not cut by daemon.shutdown_timeout (30 s, exit 1)
    assert rc == 0, said[-3000:]
    assert "stopping with the store unavailable" in said, said[-3000:]
    assert "read from Kafka again at the next start" in said
    assert "drain did not finish" not in said

    # the store is back: a restart completes the run from the stored state (the test's
    # own reading connection was cut by the outage)
    reader = getattr(store_target, "_reader", None)
    if reader is not None:
        reader.close()
        store_target._reader = None
    produce(broker.bootstrap, topic, msgs[1200:])
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg)
        assert wait_for(lambda: finished(where, n), timeout=60), durable_offset(where)
    finally:
        assert terminate(proc) == 0
    clean = run_to_completion(
        fault_config(tmp_path / "clean", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h"), n,
    )
    assert table_dump(where) == clean
