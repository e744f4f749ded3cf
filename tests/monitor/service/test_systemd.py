"""systemd's notify protocol over a real unix datagram socket: the messages, the watchdog
kicked only by a turning loop, and a daemon subprocess that is READY once started (with
Kafka away too), consumes, and stops kicking while its loop is stuck."""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.systemd import SystemdNotifier, watchdog_interval
from tests.monitor.daemon_helpers import produce, stream, wait_for
from tests.monitor.fault_helpers import (
    durable_offset,
    fault_config,
    http_get,
    start_daemon,
    terminate,
    wait_ready,
)
from tests.monitor.service.notify_helpers import NotifySocket, max_gap
from tests.monitor.service.test_kafka_unreachable_logs import LateForwarder
from tests.store_targets import PG_MODE, state_target


def test_messages_are_datagrams_of_key_value_lines() -> None:
    with NotifySocket() as ns:
        n = SystemdNotifier(ns.env())
        assert n.enabled and n.watchdog is None
        assert n.ready("consuming")
        assert n.status("consuming: 10 events/s")
        assert not n.status("consuming:   10 events/s")  # same line after whitespace folding
        assert n.reloading("reloading /etc/driftwarden/config.toml")
        assert n.stopping("draining")
        assert wait_for(lambda: len(ns.snapshot()) == 4, timeout=5)
        got = [fields for _, fields in ns.snapshot()]
        n.close()
    assert got[0] == ["READY=1", "STATUS=consuming"]
    assert got[1] == ["STATUS=consuming: 10 events/s"]
    assert got[2][0] == "RELOADING=1" and got[2][2] == "STATUS=reloading /etc/driftwarden/config.toml"
    usec = int(got[2][1].removeprefix("MONOTONIC_USEC="))
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5
    assert got[3] == ["STOPPING=1", "STATUS=draining"]


def test_long_start_up_work_asks_for_more_start_time_until_it_ends() -> None:
    """A migration of a large store outlasted TimeoutStartSec: systemd killed it and every
    restart began it again. While it runs, EXTEND_TIMEOUT_USEC asks for more time."""
    with NotifySocket() as ns:
        n = SystemdNotifier(ns.env())
        with n.extending("starting: migrating", every=0.05):
            time.sleep(0.3)
        after = len(ns.snapshot())
        time.sleep(0.2)
        got = [fields for _, fields in ns.snapshot()]
        n.close()
    assert len(got) == after >= 3  # nothing once the work ended
    assert all(fields == ["EXTEND_TIMEOUT_USEC=90000000", "STATUS=starting: migrating"] for fields in got)
    quiet = SystemdNotifier({})
    with quiet.extending("x"):  # without systemd: nothing, no thread
        pass


def test_status_is_one_bounded_line() -> None:
    with NotifySocket() as ns:
        n = SystemdNotifier(ns.env())
        n.status("line one\nline two " + "x" * 500)
        assert wait_for(lambda: len(ns.snapshot()) == 1, timeout=5)
        (fields,) = [f for _, f in ns.snapshot()]
        n.close()
    assert len(fields) == 1 and fields[0].startswith("STATUS=line one line two xx")
    assert len(fields[0]) == len("STATUS=") + 200 and fields[0].endswith("…")


def test_abstract_namespace_socket() -> None:
    name = f"driftwarden-test-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(1024) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert not n.ready() and not n.heartbeat() and not n.stopping()
    # a socket that went away: reported as not sent, never raised
    gone = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert gone.enabled and not gone.ready() and not gone.ready()
    # not a unix socket path (vsock:, relative): switched off
    assert not SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_interval_from_the_environment() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=42) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 30.0
    # the variables were inherited from a parent that is the one being watched
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=42) is None
    assert watchdog_interval({}, pid=42) is None


def test_watchdog_is_kicked_at_most_every_half_timeout() -> None:
    with NotifySocket() as ns:
        n = SystemdNotifier(ns.env(watchdog_usec=2_000_000))
        assert n.watchdog == 2.0
        sent = [n.heartbeat(now=t) for t in (100.0, 100.5, 100.99, 101.0, 101.4, 102.2)]
        assert sent == [True, False, False, True, False, True]
        assert wait_for(lambda: len(ns.times("WATCHDOG=1")) == 3, timeout=5)
        n.close()
    # no watchdog asked: heartbeats are free no-ops
    with NotifySocket() as ns:
        assert not SystemdNotifier(ns.env()).heartbeat(now=1e9)


@contextmanager
def _write_lock_held(db: Path) -> Iterator[None]:
    """Another process holds the store's write lock: SQLite's file lock, or on PostgreSQL
    (the suite run on it) the lock of the table every flush writes."""
    if PG_MODE:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(state_target(db).url) as holder:  # type: ignore[attr-defined]
            holder.execute("LOCK TABLE stream_partitions IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                holder.rollback()
        return
    lock = sqlite3.connect(db, timeout=5)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        lock.rollback()
        lock.close()


@pytest.mark.broker
@pytest.mark.slow
def test_daemon_is_ready_once_consuming_and_its_watchdog_stops_when_the_loop_stalls(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = f"notify-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    msgs = stream(windows=6, per_window=200, shift_from=99, seed=5)
    produce(broker.bootstrap, topic, msgs[:400])
    cfg = fault_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h")
    db = cfg.parent / "state" / "driftwarden.db"
    log = tmp_path / "daemon.log"
    with NotifySocket() as ns:
        proc = start_daemon(cfg, env=ns.env(watchdog_usec=2_000_000), log=log)
        try:
            assert wait_ready(cfg), log.read_text()[-2000:]
            assert wait_for(lambda: ns.has("READY=1"), timeout=60)
            # READY=1 came at the end of start-up (with the "waiting" status), then "consuming"
            statuses = ns.statuses()
            assert statuses[:3] == ["starting: opening the store (migrating its schema if needed)",
                                    "starting: loading and preparing the references",
                                    "waiting for Kafka partition assignment"], statuses
            assert ns.has("EXTEND_TIMEOUT_USEC=90000000")
            assert "consuming" in statuses
            assert wait_for(lambda: durable_offset(db) >= 400, timeout=30)
            healthy_from = time.monotonic()
            time.sleep(3.0)
            healthy_gap = max_gap(ns.times("WATCHDOG=1"), healthy_from, time.monotonic())
            assert healthy_gap < 1.6, healthy_gap  # kicks every ~1 s (half of WatchdogSec=2s)
            assert wait_for(
                lambda: any(s.startswith("consuming: ") and "open windows, lag" in s for s in ns.statuses()),
                timeout=8,
            ), ns.statuses()

            # stall the loop: another process holds the write lock, so the daemon's flush
            # waits inside the store (SQLite's busy timeout 10 s, PostgreSQL's statement
            # timeout 30 s) and the loop does not turn
            with _write_lock_held(db):
                produce(broker.bootstrap, topic, msgs[400:600])
                stalled_from = time.monotonic()
                time.sleep(6.0)
                stalled_gap = max_gap(ns.times("WATCHDOG=1"), stalled_from, time.monotonic())
            # a systemd watchdog of 2 s would have restarted it
            assert stalled_gap > 3.0, stalled_gap
            # once the loop turns again (the flush retries and succeeds), the kicks resume
            assert wait_for(lambda: durable_offset(db) >= 600, timeout=30), log.read_text()[-2000:]
            resumed_from = time.monotonic()
            time.sleep(2.5)
            assert max_gap(ns.times("WATCHDOG=1"), resumed_from, time.monotonic()) < 1.6
        finally:
            rc = terminate(proc)
        assert rc == 0, log.read_text()[-2000:]
        assert ns.has("STOPPING=1")
        stopping = [f for _, f in ns.snapshot() if "STOPPING=1" in f][0]
        assert stopping[1].startswith("STATUS=draining")



def test_the_label_joins_long_work_counts_as_the_loop_turning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush that builds a large id index (see tests/monitor/labels/test_join.py) reports
    each chunk as progress: the daemon takes it as a turn of its loop, so the watchdog is
    kicked and /healthz stays 200 through it."""
    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from tests.monitor.labels.helpers import label_config

    with NotifySocket() as ns:
        for key, value in ns.env(watchdog_usec=200_000).items():
            monkeypatch.setenv(key, value)
        d = Daemon(load_config(label_config(tmp_path)), http=False)
        try:
            assert d.pipeline.labels is not None
            before = d.loop_turned_at
            time.sleep(0.15)  # past half the watchdog's timeout
            d.pipeline.labels.progress()
            assert d.loop_turned_at > before
            assert wait_for(lambda: ns.has("WATCHDOG=1"), timeout=5)
        finally:
            d.close()


def _status_during(d: Any, ns: NotifySocket, fail: AbstractContextManager[Any]) -> tuple[str, str]:
    """The storage error of daemon ``d`` and the STATUS= line it sends to ``ns`` after a
    flush failed while ``fail`` made the store fail."""
    with fail:
        assert d._flush_and_commit(force=True) is False
    err = d.storage_error
    assert err is not None
    d._status_at = 0.0  # the next turn sends a status line
    d._service_tick()
    assert wait_for(lambda: any(s.startswith("paused: storage failing") for s in ns.statuses()), timeout=5)
    return err, next(s for s in ns.statuses() if s.startswith("paused: storage failing"))


@contextmanager
def _exclusive(db: Path) -> Iterator[None]:
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.sqlite_only("SQLite's file lock and path")
def test_status_names_a_storage_failure_without_the_store_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``systemctl status`` (any user of the host) showed the storage error's text: the
    SQLite path. STATUS= names the failure as /readyz does, the kind and a fixed phrase."""
    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from tests.monitor.daemon_helpers import write_config

    with NotifySocket() as ns:
        for key, value in ns.env().items():
            monkeypatch.setenv(key, value)
        d = Daemon(load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)), http=False)
        try:
            db = Path(d.store.path)
            d.store.execute("PRAGMA busy_timeout = 200")
            err, status = _status_during(d, ns, _exclusive(db))
        finally:
            d.close()
    assert str(db) in err, err
    assert status == "paused: storage failing: StoreBusy: the store is locked or busy"
    assert not any(str(tmp_path) in s or "driftwarden.db" in s for s in ns.statuses()), ns.statuses()


@pytest.mark.postgres
def test_status_names_a_storage_failure_without_the_postgresql_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_target: Any
) -> None:
    """As above, on a PostgreSQL store that refuses connections: STATUS= names neither
    its database, role nor socket."""
    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from tests.monitor.daemon_helpers import write_config

    storage = f'\n[storage]\nurl = "{pg_target.config_url}"\npool_size = 2\n'
    with NotifySocket() as ns:
        for key, value in ns.env().items():
            monkeypatch.setenv(key, value)
        path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1, extra=storage)
        d = Daemon(load_config(path), http=False)
        try:
            err, status = _status_during(d, ns, pg_target.refusing_connections())
        finally:
            d.close()
    assert pg_target.database in err, err
    assert status in ("paused: storage failing: StorageError: the store refused a read or a write",
                      "paused: storage failing: StoreUnreachable: the store cannot be reached"), status
    for secret in (pg_target.database, "postgres", ".s.PGSQL"):
        assert not any(secret in s for s in ns.statuses()), (secret, ns.statuses())


@pytest.mark.broker
@pytest.mark.slow
def test_a_daemon_started_while_kafka_is_down_is_ready_and_reports_the_outage(
    broker: EmbeddedBroker, tmp_path: Path, topic: str
) -> None:
    """READY=1 follows the start-up (config, references, store, HTTP API), not the first
    partition assignment: a daemon started while the broker is down is not killed by
    systemd at TimeoutStartSec and restarted in a loop. It runs, answers /healthz, says
    not ready on /readyz and why in STATUS=, and consumes once the broker is there."""
    produce(broker.bootstrap, topic, stream(windows=2, per_window=100, shift_from=99, seed=5))
    late_forwarder = LateForwarder(free_port(), broker.port)
    bootstrap = f"127.0.0.1:{late_forwarder.port}"  # nothing listens there yet
    cfg = fault_config(tmp_path, bootstrap=bootstrap, topic=topic, idle_timeout="1h",
                       extra="[kafka.consumer_options]\nreconnect_backoff_max_ms = 1000\n")
    log = tmp_path / "daemon.log"
    with NotifySocket() as ns:
        proc = start_daemon(cfg, env=ns.env(), log=log)
        try:
            assert wait_for(lambda: ns.has("READY=1"), timeout=30), (ns.statuses(), log.read_text()[-2000:])
            statuses = ns.statuses()
            assert statuses[:3] == ["starting: opening the store (migrating its schema if needed)",
                                    "starting: loading and preparing the references",
                                    "waiting for Kafka partition assignment"], statuses
            ready = next(f for _, f in ns.snapshot() if "READY=1" in f)
            assert ready == ["READY=1", "STATUS=waiting for Kafka partition assignment"]
            assert http_get(cfg, "/healthz") == (200, {"status": "ok"})
            status, body = http_get(cfg, "/readyz")
            assert status == 503 and body["ready"] is False and body["kafka"] is False, body
            # the outage in STATUS=, for `systemctl status`, from the first refused connection
            assert wait_for(lambda: any(s.startswith(f"kafka: cannot connect to {bootstrap}: ")
                                        for s in ns.statuses()), timeout=15), ns.statuses()
            assert proc.poll() is None
            late_forwarder.open()  # the broker comes
            assert wait_ready(cfg, timeout=60), log.read_text()[-2000:]
            assert wait_for(lambda: "consuming" in ns.statuses(), timeout=60), ns.statuses()
            assert sum("READY=1" in f for _, f in ns.snapshot()) == 1  # once, at the start
        finally:
            rc = terminate(proc)
            late_forwarder.close()
        assert rc == 0, log.read_text()[-2000:]


@pytest.mark.slow
def test_a_reload_that_calibrates_keeps_the_watchdog_kicked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGHUP with new drift settings prepares the models again on the consumer loop:
    ``thresholds = "calibrated"`` calibrates on the reference (46 s for a 100,000-row one,
    see the README), and meanwhile no ``WATCHDOG=1`` went out: with the unit's
    ``WatchdogSec=60`` systemd killed the daemon in the middle of the reload. The
    preparation is bounded work, not a stuck loop: the watchdog is kicked through it."""
    from monitor.config import load_config
    from monitor.service.daemon import Daemon
    from tests.monitor.daemon_helpers import write_config

    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    with NotifySocket() as ns:
        for key, value in ns.env(watchdog_usec=200_000).items():
            monkeypatch.setenv(key, value)
        d = Daemon(load_config(cfg), http=False, config_path=cfg)
        try:
            cfg.write_text(cfg.read_text().replace(
                "[models.window]", '[models.drift]\nthresholds = "calibrated"\n[models.window]'))
            d.request_reload()
            d._service_tick()
            assert d.pipeline.models["churn"].config.drift.thresholds == "calibrated"
            reloading = ns.times("RELOADING=1")[0]
            assert wait_for(lambda: bool(ns.times("READY=1", since=reloading)), timeout=5)
            fields = [f for _, message in ns.snapshot() for f in message]
            start = fields.index("RELOADING=1")
            end = next(i for i, f in enumerate(fields) if i > start and f == "READY=1")
            assert "WATCHDOG=1" in fields[start:end]
        finally:
            d.close()
