"""SIGTERM drains, commits and exits 0 within the stop timeout; a second SIGTERM exits at
once and leaves a consistent database from which a restart completes the run."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker
from tests.monitor.daemon_helpers import produce, stream, table_dump, wait_for
from tests.monitor.fault_helpers import (
    committed,
    durable_offset,
    fault_config,
    run_to_completion,
    start_daemon,
    terminate,
    wait_ready,
    with_sentinel,
)
from tests.store_targets import PG_MODE

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_sigterm_drains_and_second_sigterm_exits_at_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"term-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=12, per_window=400, shift_from=6, seed=4))
    n = len(msgs)
    half = n // 2
    produce(broker.bootstrap, topic, msgs[:half])
    group = f"g-term-{topic}"
    cfg = fault_config(
        tmp_path / "run",
        bootstrap=broker.bootstrap,
        topic=topic,
        group=group,
        max_poll_records=200,
        idle_timeout="1h",
        daemon_extra='shutdown_timeout = "10s"',
    )
    # only closing windows and the drain write state: what the drain flushes is visible
    cfg.write_text(cfg.read_text().replace('commit_interval = "1s"', 'commit_interval = "1h"'))
    db = cfg.parent / "state" / "driftwarden.db"
    log = cfg.parent / "daemon.log"

    # 1. one SIGTERM: exit 0 well within the timeout, everything consumed is durable
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg)
        # the 5th window closes with the first row of the 6th (offset 2000): a flush
        assert wait_for(lambda: durable_offset(db) >= 2000, timeout=30)
        time.sleep(1.0)  # the rest of the first half is consumed but not yet flushed
        assert durable_offset(db) < half
    finally:
        t0 = time.monotonic()
        rc = terminate(proc, timeout=15)
    took = time.monotonic() - t0
    assert rc == 0, log.read_text()[-2000:]
    assert took < 10, took
    assert durable_offset(db) == half, "the drain did not flush what it had consumed"
    assert 0 < committed(broker, group) <= half

    # 2. two SIGTERMs in a row: the second exits at once with status 1
    produce(broker.bootstrap, topic, msgs[half:])
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg)
        assert wait_for(lambda: durable_offset(db) > half, timeout=30)
    finally:
        size = log.stat().st_size
        proc.send_signal(signal.SIGTERM)
        # the second signal once the first is handled (two pending SIGTERMs coalesce into one)
        wait_for(lambda: b"draining" in log.read_bytes()[size:], timeout=5, interval=0.005)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = proc.wait(timeout=15)
    assert rc == 1, rc
    assert time.monotonic() - t0 < 2
    if not PG_MODE:  # the SQLite file is intact (PostgreSQL's data is the server's business)
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()

    # 3. a restart completes the run; the tables equal a clean run's
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg)
        assert wait_for(lambda: durable_offset(db) >= n, timeout=60)
    finally:
        assert terminate(proc) == 0
    clean = run_to_completion(
        fault_config(
            tmp_path / "clean", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h"
        ),
        n,
    )
    print(f"\nshutdown: drain took {took:.1f}s; {len(clean['windows'])} windows compared")
    assert table_dump(db) == clean
