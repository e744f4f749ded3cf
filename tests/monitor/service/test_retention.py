"""Retention through the daemon: start-up vacuum switch, /metrics counters, and a soak
with tiny retention against the real broker that keeps rows and the file bounded."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.demo.data import events
from monitor.service.daemon import Daemon
from monitor.service.pipeline import Pipeline
from monitor.service.retention import dead_letter_cap
from monitor.web.metrics import DaemonMetrics
from storage.db import Store
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.limits import DeadLetterCap
from storage.retention import RetentionPolicy
from tests.monitor.daemon_helpers import START, stream, table_dump, write_config
from tests.store_targets import PG_MODE, StoreTarget, open_state_store

T0 = datetime(2026, 11, 23, 14, 0, 5, tzinfo=UTC)


def metric_lines(daemon: Daemon) -> dict[str, float]:
    body, _ = DaemonMetrics(daemon).exposition()
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_count_pruned_rows_and_dropped_dead_letters_across_restarts(tmp_path: Path) -> None:
    extra = '[retention]\ndead_letters = "1h"\ndead_letters_per_minute = 3\ndead_letter_payloads_per_minute = 1\n'
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=free_port(), extra=extra))
    now = T0 + timedelta(hours=2)
    daemon = Daemon(cfg, http=False, clock=lambda: now)
    try:
        with daemon.store.transaction():  # what the pipeline's flush does, under the configured cap
            write_dead_letters(daemon.store, [DeadLetter("t", 0, i, "not_json: x", b"{", T0) for i in range(10)])
        m = metric_lines(daemon)
        assert m['driftwarden_dead_letters_dropped_total{reason="not_json"}'] == 7
        assert m['driftwarden_dead_letter_payloads_dropped_total{reason="not_json"}'] == 2
        assert 'driftwarden_pruned_rows_total{table="dead_letters"}' not in m
        daemon.prune()  # the scheduled job: the letters are 2 h old, retention 1 h
        m = metric_lines(daemon)
        assert m['driftwarden_pruned_rows_total{table="dead_letters"}'] == 2  # of 3: the newest stays
        assert m['driftwarden_prune_runs_total{outcome="ok"}'] == 1
        assert m["driftwarden_last_prune_timestamp_seconds"] == now.timestamp()
        assert m['driftwarden_db_size_bytes{file="db"}'] > 0
    finally:
        daemon.close()
    restarted = Daemon(cfg, http=False, clock=lambda: now)
    try:
        m = metric_lines(restarted)
        # durable: the drops survive the restart and the prune of the letters themselves
        assert m['driftwarden_dead_letters_dropped_total{reason="not_json"}'] == 7
        assert m['driftwarden_dead_letter_payloads_dropped_total{reason="not_json"}'] == 2
    finally:
        restarted.close()


def test_every_retention_key_reaches_the_prune_and_the_store(tmp_path: Path) -> None:
    extra = (
        '[retention]\nwindows = "9d"\nmetrics = "8d"\nalerts = "7d"\ndeliveries = "forever"\n'
        'dead_letters = "5h"\nprune_interval = "4m"\ndead_letters_per_minute = 3\n'
        "dead_letter_payloads_per_minute = 2\n[reports]\nsample_windows = 11\n"
    )
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=free_port(), extra=extra))
    daemon = Daemon(cfg, http=False)
    try:
        d = timedelta(days=1)
        assert daemon.prune.pruner.policy == RetentionPolicy(
            windows=9 * d, metrics=8 * d, alerts=7 * d, deliveries=None, dead_letters=timedelta(hours=5),
            references_dir=Path(cfg.daemon.state_dir) / "references", window_samples=11,
        )  # fmt: skip
        assert daemon.prune.interval == timedelta(minutes=4)
        assert daemon.store.dead_letter_cap == DeadLetterCap(per_minute=3, payloads_per_minute=2)
    finally:
        daemon.close()


@pytest.mark.sqlite_only("a SQLite file made before incremental vacuum")
def test_the_daemon_switches_an_old_database_to_incremental_vacuum(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=free_port()))
    db = Path(cfg.daemon.state_dir) / "driftwarden.db"
    db.parent.mkdir(parents=True)
    raw = sqlite3.connect(db, isolation_level=None)  # a database from before the auto-vacuum migration
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("CREATE TABLE windows_before (x)")
    raw.close()
    daemon = Daemon(cfg, http=False)
    try:
        assert daemon.store.auto_vacuum_mode() == "incremental"
        assert daemon.store.schema_version() >= 4
    finally:
        daemon.close()


Rec = namedtuple("Rec", "topic partition offset timestamp value")


def _letters(db: Store) -> dict[str, list[Any]]:
    return {
        "letters": db.query(
            'SELECT topic, partition, "offset", reason, payload, payload_size, received_at'
            ' FROM dead_letters ORDER BY "offset"'
        ),
        "volume": db.query("SELECT * FROM dead_letter_volume ORDER BY reason, minute"),
        "totals": db.query("SELECT * FROM dead_letter_totals ORDER BY reason"),
    }


def test_a_replay_after_a_crash_gives_the_same_dead_letter_tables(tmp_path: Path, store_target: StoreTarget) -> None:
    """The real pipeline, one run straight through and one that loses its last flush and
    re-reads from its durable state: the capped dead-letter tables come out the same."""
    extra = "[retention]\ndead_letters_per_minute = 4\ndead_letter_payloads_per_minute = 2\n"
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=free_port(), extra=extra))
    good = stream(windows=3, per_window=60, shift_from=9)
    payloads = []
    for i, g in enumerate(good):
        payloads.append(g)
        if i % 6 == 0:  # 30 bad ones of two kinds, over the cap of each
            payloads.append(b"not json %d" % i if i % 12 else b'{"model": "nobody", "n": %d}' % i)
    records = [Rec("t", 0, o, None, v) for o, v in enumerate(payloads)]  # no record timestamp: bounded by T0

    def run(db: StoreTarget, cuts: list[int], crash_after: int | None = None) -> None:
        store = db.open(dead_letter_cap=dead_letter_cap(cfg))
        pipe = Pipeline(cfg, store, topic="t", clock=lambda: T0)
        pipe.restore()
        for n, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
            pipe.process_records(records[a:b])
            if crash_after is not None and n == crash_after:
                store.close()  # killed before this batch's flush: nothing of it is durable
                return
            pipe.flush()
        pipe.flush()
        store.close()

    straight, crashed = store_target.fresh(), store_target.fresh()
    run(straight, [0, 50, 100, 150, len(records)])
    run(crashed, [0, 70, 130], crash_after=1)
    state = Pipeline(cfg, crashed.open(), topic="t", clock=lambda: T0)
    resume = state.restore()[0]
    state.store.close()
    assert resume < 70  # the replay re-reads records whose letters are already stored
    run(crashed, [resume, resume + 33, len(records)])
    a, b = straight.open(readonly=True), crashed.open(readonly=True)
    try:
        assert _letters(a) == _letters(b)
        assert sum(r["dropped"] for r in _letters(a)["totals"]) > 0
    finally:
        a.close()
        b.close()
    assert table_dump(straight) == table_dump(crashed)


# -- the soak ---------------------------------------------------------------------------

SOAK_SECONDS = 45
RETENTION_S = 10
PRUNE_S = 2
BAD_PER_S, BAD_BYTES = 8, 32 * 1024
SOAK_RETENTION = f"""
[retention]
windows = "{RETENTION_S}s"
metrics = "{RETENTION_S}s"
dead_letters = "{RETENTION_S}s"
prune_interval = "{PRUNE_S}s"
dead_letters_per_minute = 1000
dead_letter_payloads_per_minute = 1000
"""


def _producer(bootstrap: str, topic: str, stop: threading.Event, sent: dict[str, int]) -> None:
    """Each second: one full minute of event time (so windows close every second) and a few
    large bad messages (so the dead letters weigh on the file)."""
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    k = 0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            for e in events(model="churn", start=START + timedelta(minutes=k), windows=1, per_window=120,
                            window_seconds=60, shift_from=99, seed=k):  # fmt: skip
                e["event_id"] = f"{k}-{e['event_id']}"
                p.send(topic, orjson.dumps(e))
            for i in range(BAD_PER_S):
                p.send(topic, b"<" + str(k * BAD_PER_S + i).encode() + b">" + b"x" * BAD_BYTES)
            p.flush()
            sent["minutes"] = k = k + 1
            sent["bad"] = sent.get("bad", 0) + BAD_PER_S
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))
    finally:
        p.close()


@pytest.mark.broker
@pytest.mark.slow
def test_soak_with_tiny_retention_keeps_rows_and_file_bounded(broker: EmbeddedBroker, topic: str, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(),
                                   extra=SOAK_RETENTION, idle_timeout="30s"))  # fmt: skip
    daemon = Daemon(cfg, http=False)
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    assert daemon.ready.wait(60), "the daemon did not join the group"
    stop, sent = threading.Event(), {}
    producer = threading.Thread(target=_producer, args=(broker.bootstrap, topic, stop, sent), daemon=True)
    producer.start()
    db = Path(cfg.daemon.state_dir) / "driftwarden.db"
    reader = open_state_store(db, readonly=True)
    samples: list[tuple[float, int, int, int]] = []  # (seconds, windows in table, db bytes, wal bytes)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < SOAK_SECONDS:
            time.sleep(1.0)
            n = reader.query("SELECT COUNT(*) AS n FROM windows")[0]["n"]
            size = reader.size_on_disk()
            samples.append((time.monotonic() - t0, n, size["db"], size["wal"]))
        stop.set()
        producer.join(30)
        now = datetime.now(UTC)
        oldest_window = reader.query("SELECT MIN(computed_at) AS t, MAX(computed_at) AS u FROM windows")[0]
        oldest_letter = reader.query("SELECT MIN(received_at) AS t FROM dead_letters")[0]["t"]
        orphans = reader.query(
            "SELECT COUNT(*) AS n FROM metrics WHERE window_id NOT IN (SELECT id FROM windows)"
        )[0]["n"]
        in_table = reader.query("SELECT COUNT(*) AS n FROM windows")[0]["n"]
        letters = reader.query("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"]
        free_pages = reader.freelist_count()
    finally:
        stop.set()
        daemon.stop()
        runner.join(30)
        reader.close()
    assert not runner.is_alive()
    stats, pruned = daemon.pipeline.stats, daemon.retention.pruned()
    written = sent["bad"] * BAD_BYTES
    print(
        f"\nsoak: {sent['minutes']} event-time minutes, {stats.windows_closed} windows stored,"
        f" {in_table} in the table; {sent['bad']} dead letters ({written / 2**20:.1f} MiB), {letters} in the"
        f" table; pruned {pruned}; {daemon.retention.runs} prune runs;"
        f" db/wal MiB over time {[(round(s), round(d / 2**20, 1), round(w / 2**20, 1)) for s, _, d, w in samples[::5]]};"
        f" free pages {free_pages}"
    )
    assert daemon.retention.errors == 0
    # windows kept being stored to the end, while the table stayed small
    assert stats.windows_closed >= 100
    assert now - datetime.fromisoformat(oldest_window["u"]) < timedelta(seconds=10)
    assert in_table <= stats.windows_closed // 2 and pruned["windows"] >= stats.windows_closed // 3
    assert orphans == 0
    # nothing older than retention + one interval + slack for a loaded machine
    bound = timedelta(seconds=RETENTION_S + PRUNE_S + 8)
    assert now - datetime.fromisoformat(oldest_window["t"]) <= bound
    assert now - datetime.fromisoformat(oldest_letter) <= bound
    assert letters <= sent["bad"] // 2 and pruned["dead_letters"] >= sent["bad"] // 3
    # the file: well below what was written, not growing over the second half, few free pages
    # (PostgreSQL: its growth, a new database holds ~10 MiB of catalog)
    last_db = samples[-1][2] - (samples[0][2] if PG_MODE else 0)
    assert last_db < written * 0.5
    half = [d for s, _, d, _ in samples if s >= SOAK_SECONDS / 2]
    first = [d for s, _, d, _ in samples if RETENTION_S + PRUNE_S + 4 <= s < SOAK_SECONDS / 2]
    assert max(half) <= 1.5 * max(first), samples
    assert max(w for *_, w in samples) < 64 * 2**20
    assert free_pages <= 2048
