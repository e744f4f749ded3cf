"""An instance whose claim of its assigned partition the store refuses (another instance,
live, holds it at a newer group generation: another consumer group or Kafka cluster on
the same store) consumes nothing from it. It used to look healthy meanwhile: ``/readyz``
200 with nothing more, ``driftwarden_ready 1``, a status line ``consuming: ...``, and one
WARNING that did not say what to do. Now ``/readyz`` lists the partition
(``unclaimed_partitions``), ``/metrics`` has ``driftwarden_unclaimed_partitions``, the
status line names it and its holder, and the WARNING says what to do. Once the holder
goes (its row stale), the claim succeeds and all of it clears.

The real daemon, broker and store (SQLite, or the embedded PostgreSQL with
DRIFTWARDEN_TEST_STORE=postgres); the other instance is its row in ``stream_partitions``,
as it writes it."""

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
from tests.monitor.fault_helpers import fault_config, http_get, http_get_bytes

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HOLDER = "elsewhere:1:0000beef"


def test_an_instance_refused_its_partition_says_so_and_clears_once_it_holds_it(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="driftwarden")
    topic = f"refused-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = stream(windows=1, per_window=100, shift_from=9, seed=5)
    cfg_path = fault_config(tmp_path / "d", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h")
    daemon = Daemon(load_config(cfg_path))
    with daemon.store.transaction():  # the other instance's claim: a newer generation, fresh
        daemon.store.execute(
            'INSERT INTO stream_partitions (topic, partition, owner, generation, epoch, "offset", state, updated_at)'
            " VALUES (?, 0, ?, 1000000, 1, NULL, '{}', '9999-12-31T00:00:00.000Z')", (topic, HOLDER),
        )
    produce(broker.bootstrap, topic, msgs)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: daemon.unclaimed_partitions() == {0}, timeout=30)
        assert daemon.assigned_partitions() == {0} and daemon.pipeline.claims == {}
        time.sleep(1)
        assert daemon.pipeline.positions.get(0, 0) == 0, "consumed a partition it does not hold"
        status, body = http_get(cfg_path, "/readyz")
        assert status == 200 and body["unclaimed_partitions"] == [0], body
        _status, metrics = http_get_bytes(cfg_path, "/metrics")
        assert b"\ndriftwarden_unclaimed_partitions 1.0\n" in metrics
        line = daemon.status_text(0.0)
        assert line.endswith(f"; not consuming assigned partition(s) 0: not claimed in the store (held by {HOLDER})"), line
        [warning] = [r.getMessage() for r in caplog.records if "newer than ours" in r.getMessage()]
        assert f"partition 0: held by {HOLDER} at group generation 1000000" in warning
        assert "give it the same kafka.group_id and bootstrap_servers, or a store of its own, or stop it" in warning

        with daemon.store.transaction():  # the other instance stopped: its claim goes stale
            daemon.store.execute("UPDATE stream_partitions SET updated_at = '2000-01-01T00:00:00.000Z'"
                                 " WHERE topic = ? AND partition = 0", (topic,))
        assert wait_for(lambda: daemon.pipeline.positions.get(0, 0) >= len(msgs), timeout=30)
        assert daemon.unclaimed_partitions() == frozenset() and set(daemon.pipeline.claims) == {0}
        status, body = http_get(cfg_path, "/readyz")
        assert status == 200 and body["unclaimed_partitions"] == [], body
        _status, metrics = http_get_bytes(cfg_path, "/metrics")
        assert b"\ndriftwarden_unclaimed_partitions 0.0\n" in metrics
        assert daemon.status_text(0.0).startswith("consuming:") and "not consuming" not in daemon.status_text(0.0)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
