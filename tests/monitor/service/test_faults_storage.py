"""Storage faults: a full disk and a database locked by another process (SQLite), a
PostgreSQL that cuts and refuses connections, and a PostgreSQL lock that holds the loop
up. Each gives a clear error or a wait, pauses consumption (offsets are never committed
past what was stored, /readyz says not ready), and the pause is not taken for an idle
stream: the idle timeout of 2 s is shorter than the faults, yet no window closes early.
The daemon recovers by itself once the fault clears: the tables end equal to a clean
run's."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

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
    http_get,
    http_get_bytes,
    run_to_completion,
    with_sentinel,
)

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.mark.sqlite_only("SQLite's page limit (a full disk) and its file lock; PostgreSQL's outage and lock are tested below")
def test_full_disk_and_locked_database_pause_then_recover(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"storage-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=9, per_window=300, shift_from=5, seed=3))
    n = len(msgs)
    parts = [msgs[:900], msgs[900:1800], msgs[1800:]]
    group = f"g-storage-{topic}"
    cfg_path = fault_config(
        tmp_path / "faulty",
        bootstrap=broker.bootstrap,
        topic=topic,
        group=group,
        max_poll_records=200,
        idle_timeout="2s",
    )
    cfg = load_config(cfg_path)
    events: list[tuple[str, dict[str, Any]]] = []
    daemon = Daemon(cfg, on_event=lambda k, d: events.append((k, d)))
    db = cfg.daemon.state_dir / "driftwarden.db"
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, parts[0])
    t.start()
    try:
        assert wait_for(lambda: durable_offset(db) >= len(parts[0]), timeout=30)

        # 1. disk full: the file may not grow by one page
        pages = daemon.store.execute("PRAGMA page_count").fetchone()[0]
        daemon.store.execute(f"PRAGMA max_page_count = {pages}")
        produce(broker.bootstrap, topic, parts[1])
        assert wait_for(lambda: daemon.storage_error is not None, timeout=30)
        err = daemon.storage_error
        assert "full" in err and str(db) in err, err
        stuck = durable_offset(db)
        assert stuck < len(parts[0]) + len(parts[1])
        status, body = http_get(cfg_path, "/readyz")
        # its kind for anyone, never the text naming the file (see tests/monitor/web/test_storage_error_answers.py)
        assert status == 503 and body["storage_error"] == "StorageError: the store refused a read or a write", body
        held = dict(daemon.pipeline.positions)
        time.sleep(3)
        assert daemon.pipeline.positions == held, "kept consuming while storage fails"
        assert durable_offset(db) == stuck
        assert committed(broker, group) <= stuck
        daemon.store.execute("PRAGMA max_page_count = 1073741823")
        assert wait_for(lambda: durable_offset(db) >= len(parts[0]) + len(parts[1]), timeout=30)
        assert daemon.storage_error is None
        assert wait_for(lambda: http_get(cfg_path, "/readyz")[0] == 200, timeout=60)

        # 2. another process holds the write lock longer than the busy timeout
        daemon.store.execute("PRAGMA busy_timeout = 300")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            produce(broker.bootstrap, topic, parts[2])
            assert wait_for(lambda: daemon.storage_error is not None, timeout=30)
            assert "locked" in daemon.storage_error, daemon.storage_error
            time.sleep(2)
            assert committed(broker, group) <= durable_offset(db) < n
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert wait_for(lambda: finished(db, n, all_closed=True), timeout=30)
        assert daemon.storage_error is None
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    kinds = [k for k, _ in events]
    assert kinds.count("storage_error") >= 2
    assert 0 < committed(broker, group) <= n

    clean = run_to_completion(
        fault_config(
            tmp_path / "clean", bootstrap=broker.bootstrap, topic=topic, idle_timeout="2s"
        ),
        n,
        all_closed=True,
    )
    faulty = table_dump(db)
    print(f"\nstorage: {len(clean['windows'])} windows / {len(clean['metrics'])} metrics compared")
    assert faulty == clean


@pytest.mark.postgres
def test_a_postgresql_outage_pauses_then_recovers(broker: EmbeddedBroker, tmp_path: Path, pg_target: Any) -> None:
    """The shared PostgreSQL goes away mid-stream (its connections cut, new ones refused):
    the daemon says so and pauses, commits nothing past what was stored, and once the
    database is back it reconnects by itself; the tables end equal to a clean SQLite run's."""
    from tests.store_targets import PostgresTarget

    assert isinstance(pg_target, PostgresTarget)
    topic = f"pg-outage-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=6, per_window=300, shift_from=3, seed=3))
    n = len(msgs)
    group = f"g-faulty-{topic}"  # not the clean run's group (write_config's default)
    cfg_path = fault_config(
        tmp_path / "faulty", bootstrap=broker.bootstrap, topic=topic, group=group, max_poll_records=200,
        idle_timeout="2s", extra=pg_target.storage_toml(),
    )
    daemon = Daemon(load_config(cfg_path))
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, msgs[:900])
    t.start()

    try:
        assert wait_for(lambda: _durable(pg_target) >= 900, timeout=30)
        stuck = _durable(pg_target)
        with pg_target.refusing_connections():
            produce(broker.bootstrap, topic, msgs[900:])
            assert wait_for(lambda: daemon.storage_error is not None, timeout=30)
            err = daemon.storage_error
            assert "postgres" in err.lower() and "password" not in err.lower(), err
            status, body = http_get(cfg_path, "/readyz")
            assert status == 503 and body["storage_error"]
            held = dict(daemon.pipeline.positions)
            time.sleep(3)
            assert daemon.pipeline.positions == held, "kept consuming while storage fails"
            assert committed(broker, group) <= stuck
        assert wait_for(lambda: finished(pg_target, n, all_closed=True), timeout=60)
        assert daemon.storage_error is None
        assert wait_for(lambda: http_get(cfg_path, "/readyz")[0] == 200, timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    assert 0 < committed(broker, group) <= n
    clean = run_to_completion(
        fault_config(tmp_path / "clean", bootstrap=broker.bootstrap, topic=topic, idle_timeout="2s"), n, all_closed=True
    )
    assert table_dump(pg_target) == clean


@pytest.mark.postgres
def test_an_idle_daemon_notices_a_postgresql_outage_and_its_end(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """Nothing to write (every row consumed and stored, the window open for an hour): the
    outage still shows, through the reads and keepalives an idle daemon makes, as a
    storage error and /readyz 503 within seconds, and clears by itself once it ends."""
    topic = f"pg-idle-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    cfg_path = fault_config(
        tmp_path / "idle", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h",
        extra=pg_target.storage_toml(),
    )
    daemon = Daemon(load_config(cfg_path))
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, stream(windows=1, per_window=200, shift_from=9, seed=4))
    t.start()

    try:
        assert wait_for(lambda: _durable(pg_target) >= 200, timeout=30)
        assert daemon.storage_error is None
        assert b"driftwarden_store_readable 1.0" in http_get_bytes(cfg_path, "/metrics")[1]
        with pg_target.refusing_connections():
            assert wait_for(lambda: daemon.storage_error is not None, timeout=25)
            assert http_get(cfg_path, "/readyz")[0] == 503
            # what the daemon holds in memory is still shown, at once, without the store
            status, text = http_get_bytes(cfg_path, "/metrics", timeout=5)
            assert status == 200 and b"driftwarden_ready 0.0" in text and b"driftwarden_store_readable 0.0" in text
            assert b"driftwarden_rows_total 200.0" in text
            status, page = http_get_bytes(cfg_path, "/", timeout=5)
            assert status == 200 and b"not ready" in page and b"storage:" in page
            status, body = http_get_bytes(cfg_path, "/api/v1/alerts", timeout=3)  # at once
            assert status == 503 and b"storage unavailable" in body and b"postgres" not in body
            time.sleep(12)  # longer than the pool's first reconnect delays (1 + 2 + 4 + 8 s)
        # back within seconds, not on the pool's backoff schedule (its next try was 16 s on;
        # 12 s leaves room for a loaded machine: 8 s failed once with the suite on 2 cores)
        assert wait_for(lambda: daemon.storage_error is None, timeout=12)
        assert wait_for(lambda: http_get(cfg_path, "/readyz")[0] == 200, timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()


@pytest.mark.postgres
def test_a_database_that_stops_answering_is_a_stall_that_probes_see(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """The database host hangs (a proxy holds the connections open and forwards nothing):
    statement_timeout, a server timer, never fires, and the consumer loop waits in a store
    call. Once it has not turned for ``stall_after`` seconds, /healthz and /readyz say 503
    and /metrics and the dashboard still answer at once; when the host answers again the
    loop goes on and every row is stored."""
    from tests.freeze_proxy import FreezeProxy

    proxy = FreezeProxy(pg_target.url)
    topic = f"pg-frozen-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=2, per_window=150, shift_from=9, seed=6))
    cfg_path = fault_config(
        tmp_path / "frozen", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h",
        extra=f'\n[storage]\nurl = "{proxy.url}"\nstatement_timeout = "2s"\n',
    )
    daemon = Daemon(load_config(cfg_path))
    daemon.stall_after = 3.0  # 60 s by default
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, msgs[:150])
    t.start()
    try:
        assert wait_for(lambda: http_get(cfg_path, "/readyz")[0] == 200 and http_get(cfg_path, "/healthz")[0] == 200,
                        timeout=30)
        proxy.freeze()
        produce(broker.bootstrap, topic, msgs[150:])
        assert wait_for(lambda: http_get(cfg_path, "/healthz")[0] == 503, timeout=30)
        status, body = http_get(cfg_path, "/readyz")
        assert status == 503 and body["stalled_seconds"] >= 3  # rounded to 0.1 s
        status, text = http_get_bytes(cfg_path, "/metrics", timeout=5)
        assert status == 200 and b"driftwarden_ready 0.0" in text and b"driftwarden_store_readable 0.0" in text
        status, page = http_get_bytes(cfg_path, "/", timeout=5)
        assert status == 200 and b"has not turned" in page
        # the sections read from the store say they were not read, not "nothing firing"
        assert b"This is not an empty store." in page and b"Nothing firing or pending." not in page
        proxy.thaw()
        assert wait_for(lambda: finished(pg_target, len(msgs)), timeout=60)
        assert wait_for(lambda: http_get(cfg_path, "/healthz")[0] == 200, timeout=60)
    finally:
        proxy.close()
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()


@pytest.mark.postgres
def test_an_instance_holding_no_partition_is_not_ready_while_the_store_is_away(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances, one partition: the standby has nothing to write or keep alive, yet
    during an outage it says not ready all along (it did not flap back to ready). The
    rebalance when the second joins is routine: no error is logged for it."""
    import logging

    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    topic = f"pg-standby-{time.time_ns() % 10**8}"
    broker.create_topic(topic, partitions=1)
    cfgs = [
        fault_config(tmp_path / n, bootstrap=broker.bootstrap, topic=topic, group=f"g-{topic}", idle_timeout="1h",
                     extra=pg_target.storage_toml())
        for n in ("a", "b")
    ]
    daemons = [Daemon(load_config(c)) for c in cfgs]
    threads = [threading.Thread(target=d.run, daemon=True) for d in daemons]
    produce(broker.bootstrap, topic, stream(windows=1, per_window=100, shift_from=9, seed=4))
    threads[0].start()
    try:
        assert wait_for(lambda: daemons[0].pipeline.claims, timeout=30)
        threads[1].start()
        assert wait_for(lambda: all(http_get(c, "/readyz")[0] == 200 for c in cfgs), timeout=30)
        standby = next(i for i, d in enumerate(daemons) if not d.pipeline.claims)
        kafka_says = [(r.levelname, r.getMessage()) for r in caplog.records if r.getMessage().startswith("kafka:")]
        assert not [m for m in kafka_says if m[0] == "ERROR"], kafka_says
        with pg_target.refusing_connections():
            assert wait_for(lambda: http_get(cfgs[standby], "/readyz")[0] == 503, timeout=25)
            answers = []
            for _ in range(12):
                answers.append(http_get(cfgs[standby], "/readyz")[0])
                time.sleep(0.5)
            assert answers == [503] * 12, answers
        assert wait_for(lambda: http_get(cfgs[standby], "/readyz")[0] == 200, timeout=30)
    finally:
        for d in daemons:
            d.stop()
        for th in threads:
            th.join(timeout=30)


@pytest.mark.postgres
def test_a_store_that_holds_the_loop_up_is_not_an_idle_stream(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """A statement of the consumer loop waits on a lock for longer than ``idle_timeout``
    (2 s) while rows of the open window wait in Kafka. Once the lock goes, those rows
    land in their window: the wait is not taken for a quiet stream, which would close
    the window by the wall clock and count them late. The loop's step here is the tick's
    look at the shared reference registry (the step that stalled in a CI run)."""
    import psycopg

    from tests.store_targets import PostgresTarget

    assert isinstance(pg_target, PostgresTarget)
    topic = f"pg-held-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=1, per_window=600, shift_from=5, seed=5))
    cfg_path = fault_config(
        tmp_path / "held", bootstrap=broker.bootstrap, topic=topic, max_poll_records=100,
        idle_timeout="2s", extra=pg_target.storage_toml(),
    )
    daemon = Daemon(load_config(cfg_path))
    t = threading.Thread(target=daemon.run, daemon=True)
    produce(broker.bootstrap, topic, msgs[:300])
    t.start()

    def waiting_on_lock(conn: Any) -> bool:
        return bool(conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE '%FROM \"references\"%'"
        ).fetchone()[0])

    try:
        assert wait_for(lambda: sum(daemon.pipeline.positions.values()) >= 300, timeout=30)
        with psycopg.connect(pg_target.url, autocommit=True) as watcher, psycopg.connect(pg_target.url) as holder:
            holder.execute('LOCK TABLE "references" IN ACCESS EXCLUSIVE MODE')
            assert wait_for(lambda: waiting_on_lock(watcher), timeout=15), "the loop never reached the lock"
            produce(broker.bootstrap, topic, msgs[300:])
            time.sleep(3.0)  # longer than idle_timeout, with rows waiting
            assert sum(daemon.pipeline.positions.values()) == 300, "consumed while held up"
            holder.rollback()
        assert wait_for(lambda: finished(pg_target, len(msgs), all_closed=True), timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    store = pg_target.open(readonly=True)
    try:
        rows = store.query(
            "SELECT rows, late_rows FROM windows WHERE segment = '' ORDER BY start"
        )
    finally:
        store.close()
    assert [(r["rows"], r["late_rows"]) for r in rows] == [(600, 0), (2, 0)]  # the two sentinels



@pytest.mark.postgres
@pytest.mark.parametrize(
    ("reaches_server", "store_away"),
    [(True, False), (True, True), (False, False), (False, True)],
    ids=["answer-lost", "answer-lost-store-away", "commit-lost", "commit-lost-store-away"],
)
def test_a_flush_whose_commit_answer_is_lost_is_stored_exactly_once(
    tmp_path: Path, pg_target: Any, monkeypatch: pytest.MonkeyPatch, reaches_server: bool, store_away: bool
) -> None:
    """The connection drops at the flush's COMMIT: the server committed it (or never got
    it), the client only sees an error and keeps the work pending. Flushing again must not
    apply it twice (late rows and the label join's counters are added to what is stored)
    nor lose it: every table ends equal to a run without the cut, and each alert
    transition is logged once. The flush looks in the store at once; when the store
    cannot be read then either (``store_away``), the flush raises and the next one, after
    more rows were consumed, finds out first."""
    from storage.postgres import PostgresStore
    from tests.freeze_proxy import CommitLossProxy
    from tests.monitor.service.commit_helpers import commit_loss_run

    clean = commit_loss_run(tmp_path / "clean", pg_target.fresh().open())
    pg_target.open().close()  # creates the tables
    proxy = CommitLossProxy(pg_target.url)
    store = PostgresStore(proxy.url, pool_size=2, statement_timeout_ms=5000, connect_timeout_s=2.0, migrate=False)
    try:
        lossy = commit_loss_run(
            tmp_path / "lossy", store, arm=lambda: proxy.arm(reaches_server=reaches_server),
            store_away=store_away, monkeypatch=monkeypatch,
        )
    finally:
        store.close()
        proxy.close()
    assert proxy.fired.is_set()
    # found out at once, or by the next flush; a flush found committed does not raise
    assert lossy.pop("looked") == ([None] if store_away else []) + [reaches_server]
    assert lossy.pop("raised") == (store_away or not reaches_server)
    assert not clean.pop("raised") and not clean.pop("looked")
    assert [w for w in clean["windows"] if w[3]] and clean["label_counters"] and clean["logged"]
    for table in clean:
        assert lossy[table] == clean[table], table


def _durable(pg_target: Any) -> int:
    """The offsets stored for every partition, summed, read on a fresh connection each
    time (an outage cuts the pooled ones)."""
    s = pg_target.open(readonly=True, pool_size=1)
    try:
        return sum(int(r["offset"] or 0) for r in s.query('SELECT "offset" FROM stream_partitions'))
    finally:
        s.close()
