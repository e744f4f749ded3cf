"""Poison pills through the real broker: hostile event times, thousands of versions and
segment values, overlong strings, a window whose figures raise, NUL characters. The
daemon stays up, every poison lands in ``dead_letters`` or in the ``__other__`` bucket,
the good stream's windows equal a clean run's, and a restart on the same state does not
crash-loop."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.daemon import Daemon
from monitor.windows.caps import OTHER
from storage.db import Store
from tests.monitor.daemon_helpers import produce, stream, wait_for, write_config
from tests.monitor.fault_helpers import durable_offset, fault_config, http_get, open_windows
from tests.store_targets import PostgresTarget, StoreTarget, open_state_store

pytestmark = [pytest.mark.broker, pytest.mark.slow]

HOUR_MS = 3_600_000
GOOD_SEGMENTS = "('', 'region=eu', 'region=us', 'region=apac')"


def poisons(good: list[bytes], now_ms: int) -> tuple[list[dict[str, Any] | bytes], dict[str, int]]:
    """Hostile messages built from good ones, and how many of each kind. Events (dicts)
    get the event time of the good message they are inserted after, so they are in
    order, like a real producer's; raw bytes keep their hostile time."""
    rng = random.Random(3)
    base = [orjson.loads(g) for g in good]
    out: list[dict[str, Any] | bytes] = []
    kinds: dict[str, int] = {}

    def add(kind: str, msg: dict[str, Any] | bytes) -> None:
        out.append(msg)
        kinds[kind] = kinds.get(kind, 0) + 1

    def ev(**over: Any) -> dict[str, Any]:
        e = dict(rng.choice(base))
        e.update(over)
        return e

    for ts in (-100_000_000_000_000, -1, 1e30, 9_223_372_036_854_775_807, "0001-01-01T00:00:00Z",
               "9999-12-31T23:59:59Z", now_ms + 48 * HOUR_MS):
        add("bad_ts", orjson.dumps(ev(ts=ts)))
    add("bad_ts", orjson.dumps(ev())[:-1] + b',"ts":18446744073709551616}')
    for _ in range(20):  # epoch microseconds sent as milliseconds
        e = ev()
        add("bad_ts", orjson.dumps({**e, "ts": int(e["ts"]) * 1000}))
    for i in range(4000):  # a new version per message
        add("version", ev(version=f"release-{i:05d}", event_id=f"ver-{i}"))
    for i in range(300):  # overlong versions and segment values
        e = ev(event_id=f"long-{i}", version="long")
        if i % 2:
            e["version"] = "v" * 10_000
        else:
            e["segment"] = {"region": f"[/]{'r' * 500}{i}"}
        add("long", e)
    for i in range(1000):  # a new segment value per message
        add("segment", ev(segment={"region": f"region-{i}"}, event_id=f"seg-{i}", version="segments"))
    for i in range(5):  # an event id longer than the cap
        add("long_id", ev(event_id="x" * 5000 + str(i)))
    boom = ev(version="boom", event_id="boom")  # its window's figures raise
    boom["features"] = {**boom["features"], "age": 999.0}
    add("boom", boom)
    return out, kinds


def interleave(good: list[bytes], bad: list[dict[str, Any] | bytes], seed: int) -> list[bytes]:
    """``bad`` spread over ``good`` after its first 60 rows (so the good segment values
    hold their slots), each event stamped with the time of the good row before it."""
    rng = random.Random(seed)
    slots: dict[int, list[dict[str, Any] | bytes]] = {}
    for b in bad:
        slots.setdefault(rng.randint(60, len(good) - 1), []).append(b)
    out: list[bytes] = []
    for i, g in enumerate(good):
        out.append(g)
        ts = orjson.loads(g)["ts"]
        for b in slots.get(i, []):
            out.append(b if isinstance(b, bytes) else orjson.dumps({**b, "ts": ts}))
    return out


def run_daemon(
    cfg_path: Path, n: int, timeout: float = 120, target: StoreTarget | None = None
) -> tuple[Path | StoreTarget, dict[str, Any]]:
    """Run until ``n`` messages are durably consumed and no window is open; returns where it
    stored (its state dir's SQLite file, or ``target``, the test PostgreSQL, when given)."""
    cfg = load_config(cfg_path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    db: Path | StoreTarget = target if target is not None else cfg.daemon.state_dir / "driftwarden.db"
    try:
        assert wait_for(lambda: durable_offset(db) >= n and open_windows(db) == 0, timeout=timeout), (
            f"offset {durable_offset(db)}/{n}, open {open_windows(db)}"
        )
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive(), "daemon did not stop"
    caps = {m: rt.windows.capped_rows() for m, rt in daemon.pipeline.models.items()}
    return db, {"caps": caps, "stats": daemon.pipeline.stats}


def _open(db: Path | StoreTarget) -> Store:
    return open_state_store(db) if isinstance(db, Path) else db.open()


def v1_tables(db: Path | StoreTarget) -> dict[str, list[tuple[Any, ...]]]:
    s = _open(db)
    try:
        w = [tuple(r.values()) for r in s.query(
            f"SELECT id, rows, status, late_rows FROM windows WHERE version = 'v1' AND segment IN {GOOD_SEGMENTS}"
            " ORDER BY id")]
        m = [tuple(r.values()) for r in s.query(
            'SELECT m.window_id, m."column", m.metric, m.value, m.threshold, m.drifted FROM metrics m '
            f"JOIN windows w ON w.id = m.window_id WHERE w.version = 'v1' AND w.segment IN {GOOD_SEGMENTS} "
            'ORDER BY m.window_id, m."column", m.metric')]
        return {"windows": w, "metrics": m}
    finally:
        s.close()


def test_poison_pills_neither_stop_nor_blind_the_daemon(
    broker: EmbeddedBroker, tmp_path: Path, exploding_test: str, store_target: StoreTarget
) -> None:
    """The dirty stream on each store (SQLite, or the shared PostgreSQL, where keys have
    bounds SQLite lacks), compared with one clean run on SQLite."""
    import time

    pg = store_target if isinstance(store_target, PostgresTarget) else None

    good = stream(windows=6, per_window=300, shift_from=3)
    bad, kinds = poisons(good, now_ms=int(time.time() * 1000))
    dirty = interleave(good, bad, seed=11)

    def config(name: str, topic: str, extra: str = "") -> Path:
        c = write_config(tmp_path / name, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(), extra=extra)
        c.write_text(c.read_text().replace(
            'idle_timeout = "2s"', f'idle_timeout = "2s"\n[models.drift.columns.age]\nmethod = "{exploding_test}"'))
        return c

    topics = {}
    for name, msgs in (("clean", good), ("dirty", dirty)):
        topics[name] = f"poison-{name}-{free_port()}"
        broker.create_topic(topics[name])
        produce(broker.bootstrap, topics[name], msgs)
    db_clean, _ = run_daemon(config("clean", topics["clean"]), len(good))
    cfg_dirty = config("dirty", topics["dirty"], pg.storage_toml() if pg else "")
    db_dirty, run = run_daemon(cfg_dirty, len(dirty), target=pg)

    # the good stream's windows and figures are exactly the clean run's
    clean, got = v1_tables(db_clean), v1_tables(db_dirty)
    assert len(clean["windows"]) >= 6 * 4
    assert sorted(set(got["windows"]) ^ set(clean["windows"])) == []
    assert got == clean

    s = _open(db_dirty)
    try:
        letters = s.query('SELECT reason FROM dead_letters')
        reasons = [r["reason"] for r in letters]
        ts_letters = [r for r in reasons if r.startswith("bad_type: ts ")]
        assert len(ts_letters) == kinds["bad_ts"], reasons[:5]
        assert sum(r.startswith("bad_type: event_id longer than") for r in reasons) == kinds["long_id"]
        assert len(letters) == kinds["bad_ts"] + kinds["long_id"]

        # at any one time at most the cap (16 versions, 64 values per segment key) plus
        # the __other__ bucket have windows; idle values free their slots as time goes on
        per_start = s.query("SELECT start, COUNT(DISTINCT version) AS v, COUNT(DISTINCT segment) AS g"
                            " FROM windows GROUP BY start")
        assert len(per_start) >= 6
        assert max(r["v"] for r in per_start) <= 16 + 1
        assert max(r["g"] for r in per_start) <= 1 + 64 + 1
        versions = {r["version"] for r in s.query("SELECT DISTINCT version FROM windows")}
        regions = {r["segment"] for r in s.query("SELECT DISTINCT segment FROM windows WHERE segment != ''")}
        assert {"v1", OTHER} <= versions
        assert {"region=eu", "region=us", "region=apac", f"region={OTHER}"} <= regions
        # the counters say exactly how many rows went to the bucket
        other_rows = s.query("SELECT SUM(rows) AS n FROM windows WHERE version = ? AND segment = ''", (OTHER,))[0]["n"]
        other_regions = s.query("SELECT SUM(rows) AS n FROM windows WHERE segment = ?", (f"region={OTHER}",))[0]["n"]
        # every row of every kept message is in some all-rows window
        total = s.query("SELECT SUM(rows) AS n FROM windows WHERE segment = ''")[0]["n"]
        assert total == len(dirty) - len(letters)

        # the window holding the "boom" row (its version may have gone to __other__) is stored as error
        boom = s.query("SELECT status, error FROM windows WHERE status = 'error' AND segment = ''")
        assert [(b["status"], b["error"]) for b in boom] == [("error", "internal: FloatingPointError: cannot score this window")]
    finally:
        s.close()
    capped = run["caps"]["churn"]
    assert capped["version"] == other_rows >= kinds["long"] // 2 + kinds["version"] // 2
    assert capped["segment:region"] == other_regions >= kinds["long"] // 2 + kinds["segment"] // 2

    # a restart on the same state comes up, reads nothing new, changes nothing
    before = v1_tables(db_dirty)
    _, again = run_daemon(cfg_dirty, len(dirty), timeout=60, target=pg)
    assert v1_tables(db_dirty) == before
    assert again["stats"].rows == 0


def test_a_nul_character_neither_stalls_the_daemon_nor_reaches_the_store(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    """One record whose model name holds U+0000 (JSON ``\\u0000``) used to stop a daemon on
    PostgreSQL for good: text there cannot hold it, every flush failed and was retried,
    consumption stayed paused (and a restart re-read the record). Now it is a dead letter
    on both stores, and a NUL in a stored field (a version here) is stored as U+FFFD."""
    import time

    pg = store_target if isinstance(store_target, PostgresTarget) else None
    topic = f"nul-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = stream(windows=2, per_window=100, shift_from=9, seed=4)
    nul_version = orjson.loads(msgs[60])
    nul_version.update(version="v\u00002", event_id="nul-version")
    dirty = [*msgs[:50], b'{"model": "evil\\u0000", "event_id": "x"}', *msgs[50:60], orjson.dumps(nul_version),
             *msgs[60:]]
    produce(broker.bootstrap, topic, dirty)
    cfg_path = fault_config(tmp_path / "d", bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h",
                            extra=pg.storage_toml() if pg else "")
    cfg = load_config(cfg_path)
    db: Path | StoreTarget = pg if pg else cfg.daemon.state_dir / "driftwarden.db"
    daemon = Daemon(cfg)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        consumed = wait_for(lambda: durable_offset(db) >= len(dirty), timeout=30)
        assert consumed, f"{durable_offset(db)}/{len(dirty)} consumed; storage: {daemon.storage_error}"
        assert daemon.storage_error is None
        assert http_get(cfg_path, "/readyz")[0] == 200
    finally:
        daemon.stop()
        t.join(timeout=30)
    s = _open(db)
    try:
        letters = s.query('SELECT "offset", reason, payload FROM dead_letters')
        assert [(r["offset"], r["reason"], bytes(r["payload"])) for r in letters] == [
            (50, "unknown_model: evil\\x00", dirty[50])
        ]
        versions = s.query("SELECT DISTINCT version FROM windows ORDER BY version")
        assert [r["version"] for r in versions] == ["v1", "v\ufffd2"]
    finally:
        s.close()
