"""Helpers for the fault tests: daemon subprocesses, read-only peeks at the state, window shapes."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from monitor.demo.broker import EmbeddedBroker, free_port
from tests.monitor.daemon_helpers import table_dump, wait_for, write_config
from tests.store_targets import PG_MODE, PostgresTarget, SqliteTarget, StoreTarget, state_target

TUMBLING = 'type = "tumbling"\nsize = "1m"'
#: window shapes under test, replacing the tumbling one of daemon_helpers.BASE_CONFIG
SHAPES = {
    "tumbling": TUMBLING,
    "sliding": 'type = "sliding"\nsize = "2m"\nslide = "30s"',
    "count": 'type = "sliding"\nby = "count"\nsize = 250\nslide = 125',
}


def fault_config(
    folder: Path, *, bootstrap: str, topic: str, shape: str = "tumbling", **kw: Any
) -> Path:
    """``write_config`` with another window shape; a fresh HTTP port each call."""
    path = write_config(folder, bootstrap=bootstrap, topic=topic, http_port=free_port(), **kw)
    path.write_text(shaped(path.read_text(), shape))
    return path


def shaped(config_text: str, shape: str) -> str:
    """A config written by ``write_config`` with its window shape replaced by ``shape``
    (one of :data:`SHAPES`); count windows lose the time windows' lateness and
    idle_timeout, which they refuse."""
    assert TUMBLING in config_text
    text = config_text.replace(TUMBLING, SHAPES[shape])
    if shape == "count":
        text = re.sub(r'\n(lateness|idle_timeout) = "[^"]*"', "", text)
    return text


def peek_state(db: Path | StoreTarget, *, owned_only: bool = False) -> dict[str, Any] | None:
    """The durable stream state of every partition in one piece (``offsets``, ``models``),
    read without writing (no migrations, no locks held); None before any was written.
    ``owned_only``: without the rows of partitions an instance gave up."""
    if PG_MODE and isinstance(db, Path):  # DRIFTWARDEN_TEST_STORE=postgres: the dir's database
        db = state_target(db)
    if isinstance(db, StoreTarget):
        if isinstance(db, SqliteTarget):
            return peek_state(db.path, owned_only=owned_only)
        store = db.reader()
        rows = [
            (r["partition"], r["offset"], r["state"])
            for r in store.query('SELECT partition, "offset", state, owner FROM stream_partitions')
            if r["owner"] or not owned_only
        ]
        return _merge(rows) if rows else None
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(
                'SELECT partition, "offset", state FROM stream_partitions'
                + (" WHERE owner != ''" if owned_only else "")
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    if not rows:
        return None
    return _merge(rows)


def _merge(rows: list[tuple[Any, Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"offsets": {}, "models": {}}
    for partition, offset, state in rows:
        if offset is not None:
            out["offsets"][str(partition)] = int(offset)
        out["models"].update(orjson.loads(state).get("models", {}))
    return out


def durable_offset(db: Path | StoreTarget) -> int:
    """Sum over partitions of the consumed offsets recorded in the durable snapshot."""
    st = peek_state(db)
    return sum(int(o) for o in st.get("offsets", {}).values()) if st else 0


def open_windows(db: Path | StoreTarget) -> int:
    st = peek_state(db)
    return sum(len(m.get("open", [])) for m in st.get("models", {}).values()) if st else -1


def finished(db: Path | StoreTarget, n: int, all_closed: bool = False) -> bool:
    """All ``n`` messages are durably consumed (and, if asked, no window is left open)."""
    if durable_offset(db) < n:
        return False
    return not all_closed or open_windows(db) == 0


def with_sentinel(msgs: list[bytes], after: timedelta = timedelta(minutes=10)) -> list[bytes]:
    """``msgs`` plus two events far later in event time: they move the watermark past every
    earlier time window, so completion does not depend on the wall-clock idle timeout (one
    event alone moves no clock: a second one must vouch for its time, see
    :func:`monitor.ingest.event_time.vouch`)."""
    last = orjson.loads(msgs[-1])
    last["ts"] = int(last["ts"]) + int(after.total_seconds() * 1000)
    return [*msgs, *(orjson.dumps({**last, "event_id": eid}) for eid in ("sentinel", "sentinel-2"))]


def start_daemon(
    cfg: Path, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)],
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def terminate(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def http_port(cfg: Path) -> int:
    import tomllib  # noqa: PLC0415

    return int(tomllib.loads(cfg.read_text())["daemon"]["http_listen"].rsplit(":", 1)[1])


def http_get(cfg: Path, path: str) -> tuple[int, Any]:
    """(status, JSON body) from the daemon's HTTP API; (0, None) when it does not answer."""
    status, body = http_get_bytes(cfg, path)
    try:
        return status, orjson.loads(body or b"null") if status else None
    except ValueError:
        return 0, None


def http_get_bytes(cfg: Path, path: str, timeout: float = 2) -> tuple[int, bytes]:
    """(status, body) from the daemon's HTTP server; (0, b"") when it does not answer in time."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port(cfg)}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_ready(cfg: Path, timeout: float = 90) -> bool:
    """The daemon answers /readyz 200 (signal handlers are installed by then). The default
    bound is generous: on a loaded machine a daemon's start-up alone (imports, references)
    took 26 s, and the group's join comes on top."""
    return wait_for(lambda: http_get(cfg, "/readyz")[0] == 200, timeout=timeout, interval=0.1)


def run_to_completion(
    cfg: Path, n: int, *, all_closed: bool = False, timeout: float = 60, log: Path | None = None,
    target: StoreTarget | None = None,
) -> dict[str, Any]:
    """Run the daemon until all ``n`` messages are durable, SIGTERM it; the tables.
    ``target``: the store of the config's ``[storage]`` (default: its state dir's SQLite)."""
    db: Path | StoreTarget = target if target is not None else cfg.parent / "state" / "driftwarden.db"
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg, timeout=timeout), "daemon not ready"
        assert wait_for(lambda: finished(db, n, all_closed), timeout=timeout), (
            f"not finished: offset {durable_offset(db)}/{n}, open {open_windows(db)}"
        )
    finally:
        rc = terminate(proc)
    assert rc == 0, rc
    return table_dump(db)


def elapsed(t0: float) -> float:
    return round(time.monotonic() - t0, 1)


def committed(broker: EmbeddedBroker, group: str) -> int:
    """Sum of the offsets the consumer group has committed on the broker."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10_000)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return sum(o.offset for o in offsets.values() if o.offset >= 0)
    finally:
        admin.close()


@contextmanager
def store_away(target: StoreTarget) -> Iterator[None]:
    """The store away while inside: SQLite locked by another connection (every write waits
    out the busy timeout, then fails), PostgreSQL refusing connections."""
    if isinstance(target, PostgresTarget):
        with target.refusing_connections():
            yield
        return
    assert isinstance(target, SqliteTarget)
    other = sqlite3.connect(target.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()
