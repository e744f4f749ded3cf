"""The dead-letter topic on a shared PostgreSQL: instances share the feed through a lease
in the store, hold no pooled connection while they wait on the broker, and each letter
goes out once unless a run outlives its lease (then at least once, with the same key).

Real broker, real PostgreSQL; two ``PostgresStore``s on one database stand for two
instances."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Config, parse_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.ingest.kafka_client import make_producer
from monitor.service.dead_letter_topic import CURSOR, STALL_REPEAT_SECONDS, DeadLetterTopic
from storage.db import Store
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.limits import DeadLetterCap
from storage.state import load_state, save_state
from tests.monitor.daemon_helpers import topic_records

pytestmark = [pytest.mark.broker, pytest.mark.postgres]

SOURCE = "predictions"
N = 30


def _config(tmp_path: Path, bootstrap: str, dlq: str, url: str) -> Config:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    doc = {
        "kafka": {"bootstrap_servers": [bootstrap], "predictions_topic": SOURCE, "dead_letter_topic": dlq},
        "models": [{"name": "m", "reference": "ref.csv", "features": {"numerical": ["a"]}}],
        "storage": {"url": url.replace("postgres:@", "postgres@")},
    }
    return parse_config(doc, base_dir=tmp_path)


def _setup(broker: EmbeddedBroker, tmp_path: Path, pg_target: Any) -> tuple[Config, str, str, list[Store]]:
    """A fresh dead-letter topic, two stores on one database (application name shared, to
    find their sessions in ``pg_stat_activity``) and :data:`N` stored letters."""
    dlq = f"dlt-{uuid.uuid4().hex[:8]}"
    broker.create_topic(dlq)
    app = f"dlt-test-{uuid.uuid4().hex[:8]}"
    stores = [pg_target.open(application_name=app), pg_target.open(application_name=app)]
    # received an hour ago (the previous cut by decode time let these through)
    received = datetime.now(UTC) - timedelta(hours=1)
    letters = [DeadLetter(SOURCE, 0, i, "not_json: test", f"bad {i}".encode(), received) for i in range(N)]
    res = write_dead_letters(stores[0], letters, cap=DeadLetterCap(per_minute=1000, payloads_per_minute=1000))
    assert res.stored == N
    return _config(tmp_path, broker.bootstrap, dlq, pg_target.url), dlq, app, stores


def _last_id(store: Store) -> int:
    return int(store.query("SELECT MAX(id) AS m FROM dead_letters")[0]["m"])


def _keys(records: list[Any]) -> Counter[bytes]:
    return Counter(r.key for r in records)


EXPECTED_KEYS = Counter(f"{SOURCE}/0/{i}".encode() for i in range(N))


def test_two_instances_on_one_postgresql_produce_each_letter_once(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """Two instances run the job over and over at once (small batches, so they contend
    for the lease run after run): every letter reaches the topic exactly once."""
    cfg, dlq, _, stores = _setup(broker, tmp_path, pg_target)
    last = _last_id(stores[0])
    jobs = [DeadLetterTopic(cfg, s, batch=4) for s in stores]
    sent = [0, 0]
    skipped = [0, 0]

    def work(i: int) -> None:
        end = time.monotonic() + 15
        while time.monotonic() < end and jobs[i].cursor()[1] < last:
            n = jobs[i].run_once()
            sent[i] += n
            skipped[i] += n == 0
            time.sleep(0.005 * (i + 1))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert not any(t.is_alive() for t in threads)
    finally:
        for j in jobs:
            j.close()
    assert jobs[0].cursor()[1] == last
    assert sum(sent) == N, (sent, skipped)  # no letter produced by both
    records = topic_records(broker.bootstrap, dlq, N)
    assert _keys(records) == EXPECTED_KEYS
    assert "lease" not in (load_state(stores[0], CURSOR) or {})  # given back


def test_a_broker_away_holds_no_connection_and_the_other_instance_does_not_wait(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """One instance's producer points at a broker that is away: its run waits in a send
    (the metadata wait, ``max_block_ms``) for 4 s. Meanwhile none of our sessions is idle
    in a transaction, and the other instance's run returns at once without producing (the
    lease is held) instead of queueing behind it. When the run fails it gives the lease
    back, and the other instance (its broker is up) produces every letter once."""
    import psycopg
    from kafka import KafkaProducer

    cfg, dlq, app, stores = _setup(broker, tmp_path, pg_target)
    last = _last_id(stores[0])
    dead = f"127.0.0.1:{free_port()}"  # nobody listens
    waiting = threading.Event()

    def away_producer() -> Any:
        # api_version given: built at once; the first send then waits for metadata
        p = KafkaProducer(bootstrap_servers=[dead], api_version=(2, 6), max_block_ms=4000, acks="all")
        waiting.set()
        return p

    away = DeadLetterTopic(cfg, stores[0], producer_factory=away_producer)
    other = DeadLetterTopic(cfg, stores[1])
    result: dict[str, int] = {}
    t = threading.Thread(target=lambda: result.setdefault("sent", away.run_once()))
    started = time.monotonic()
    t.start()
    try:
        assert waiting.wait(timeout=10), "the run never got to its producer"
        time.sleep(0.5)  # inside the send's wait on the broker
        with psycopg.connect(pg_target.url, autocommit=True) as watcher:
            idle_in_tx = watcher.execute(
                "SELECT pid, state, query FROM pg_stat_activity WHERE application_name = %s"
                " AND state LIKE 'idle in transaction%%'",
                (app,),
            ).fetchall()
        assert idle_in_tx == [], "a pooled connection is held in a transaction while waiting on the broker"
        t0 = time.monotonic()
        assert other.run_once() == 0, "produced while the lease was held"
        assert time.monotonic() - t0 < 1.0, "the other instance waited for the first"
        assert t.is_alive(), "the first run no longer waits on the broker: the checks above proved nothing"
        assert (load_state(stores[1], CURSOR) or {}).get("lease", {}).get("owner") == away.owner
    finally:
        t.join(timeout=15)
    assert not t.is_alive()
    assert result["sent"] == 0
    assert time.monotonic() - started >= 3.5  # it did wait on the broker
    assert "lease" not in (load_state(stores[0], CURSOR) or {})  # given back on failure
    assert other.run_once() == N
    assert other.cursor()[1] == last
    assert _keys(topic_records(broker.bootstrap, dlq, N)) == EXPECTED_KEYS
    away.close()
    other.close()


class _Stalled:
    """A real producer whose flush first waits for ``go``: a process that stalls in its
    run (a long GC pause, SIGSTOP) while holding the lease."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.in_flush = threading.Event()
        self.go = threading.Event()

    def send(self, *args: Any, **kw: Any) -> Any:
        return self.inner.send(*args, **kw)

    def flush(self, timeout: float | None = None) -> None:
        self.in_flush.set()
        self.go.wait(timeout=15)
        self.inner.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self.inner.close(timeout=timeout)


def test_a_run_that_outlives_its_lease_leaves_the_cursor_to_the_next_owner(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances with a 1 s lease each stall in their flush past it: the second takes
    the lapsed lease over and produces the same first letters again (at least once, same
    keys). The first, finishing while the second still holds the lease, leaves the
    cursor and the lease alone; the second then moves the cursor to the end."""
    caplog.set_level(logging.WARNING, logger="driftwarden.dead_letter_topic")
    cfg, dlq, _, stores = _setup(broker, tmp_path, pg_target)
    last = _last_id(stores[0])
    stalls = [_Stalled(make_producer(cfg, acks="all")), _Stalled(make_producer(cfg, acks="all"))]
    first = DeadLetterTopic(cfg, stores[0], batch=10, lease_seconds=1.0, producer_factory=lambda: stalls[0])
    second = DeadLetterTopic(cfg, stores[1], lease_seconds=1.0, producer_factory=lambda: stalls[1])
    results: dict[str, int] = {}
    t1 = threading.Thread(target=lambda: results.setdefault("first", first.run_once()))
    t2 = threading.Thread(target=lambda: results.setdefault("second", second.run_once()))
    try:
        t1.start()
        assert stalls[0].in_flush.wait(timeout=10)
        assert second.run_once() == 0  # the lease still runs
        time.sleep(1.2)  # past it
        t2.start()
        assert stalls[1].in_flush.wait(timeout=10), "the lapsed lease was not taken over"
        stalls[0].go.set()
        t1.join(timeout=15)
        assert results["first"] == 10
        state = load_state(stores[0], CURSOR) or {}
        assert first.cursor() == (0, 0), "the run that lost its lease moved the cursor"
        assert state["lease"]["owner"] == second.owner, "the run that lost its lease touched it"
        stalls[1].go.set()
        t2.join(timeout=15)
    finally:
        for s in stalls:
            s.go.set()
        t1.join(timeout=15)
        t2.join(timeout=15)
        first.close()
        second.close()
    assert results["second"] == N
    state = load_state(stores[0], CURSOR) or {}
    assert state["last_id"] == last and "lease" not in state
    keys = _keys(topic_records(broker.bootstrap, dlq, N + 10))
    assert set(keys) == set(EXPECTED_KEYS)
    assert sorted(k for k, n in keys.items() if n == 2) == sorted(f"{SOURCE}/0/{i}".encode() for i in range(10))
    assert max(keys.values()) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("lapsed" in m and first.owner in m for m in messages), messages
    assert any("outlived its lease" in m for m in messages), messages


def test_an_idle_feed_takes_no_lease_and_writes_nothing(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """An idle feed (every letter produced) takes no lease and writes nothing."""
    cfg, _, _, stores = _setup(broker, tmp_path, pg_target)
    job = DeadLetterTopic(cfg, stores[0])
    try:
        assert job.run_once() == N
        before = stores[0].query("SELECT state, updated_at FROM stream_state WHERE name = ?", (CURSOR,))
        assert job.run_once() == 0
        after = stores[0].query("SELECT state, updated_at FROM stream_state WHERE name = ?", (CURSOR,))
        assert after == before
    finally:
        job.close()


def _drain(job: DeadLetterTopic) -> int:
    """Runs until one produces nothing; the letters produced."""
    sent = 0
    for _ in range(20):
        n = job.run_once()
        if not n:
            break
        sent += n
    return sent


BIG_CAP = DeadLetterCap(per_minute=1000, payloads_per_minute=1000)


def test_a_letter_committed_after_a_later_one_is_produced_once(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any
) -> None:
    """A flush stores letter ``held`` (decoded an hour ago: held through an outage) and its
    transaction stays open; letter ``later``, stored after it with a larger id, commits
    first. The feed runs meanwhile, then again once ``held`` commits: both letters reach
    the topic exactly once. (Cut by decode time, the run in between produced ``later``
    and moved the cursor past ``held``'s id: ``held`` was never produced.)"""
    cfg, dlq, _, stores = _setup(broker, tmp_path, pg_target)
    writer = pg_target.open()  # the slow flush's instance
    job = DeadLetterTopic(cfg, stores[1])
    old = datetime.now(UTC) - timedelta(hours=1)
    try:
        with writer.transaction():
            write_dead_letters(writer, [DeadLetter(SOURCE, 1, 7, "not_json: held", b"held", old)], cap=BIG_CAP)
            write_dead_letters(stores[0], [DeadLetter(SOURCE, 2, 9, "not_json: later", b"later", old)], cap=BIG_CAP)
            [held] = writer.query("SELECT id FROM dead_letters WHERE partition = 1")
            [later] = stores[0].query("SELECT id FROM dead_letters WHERE partition = 2")
            assert held["id"] < later["id"]  # ids in one order, commits in the other
            assert stores[0].query("SELECT id FROM dead_letters WHERE partition = 1") == []
            during = _drain(job)
        after = _drain(job)
    finally:
        job.close()
    assert during + after == N + 2, (during, after)  # neither skipped nor produced twice
    assert during == N  # what committed before the held transaction began; later waits behind it
    expected = EXPECTED_KEYS + Counter([f"{SOURCE}/1/7".encode(), f"{SOURCE}/2/9".encode()])
    assert _keys(topic_records(broker.bootstrap, dlq, N + 2)) == expected
    assert _drain(DeadLetterTopic(cfg, stores[0])) == 0  # another instance: nothing left


@pytest.mark.parametrize("restored", ["another server", "transaction ids behind the cursor"])
def test_after_a_restore_into_another_server_every_letter_goes_out_again(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any, restored: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stored transaction ids compare on one server only. After a restore into another one
    (its ``system_identifier`` differs, or the cursor is at or above its running
    transactions: the old server had counted further), the feed renumbers the stored
    letters and starts again: the letters produced before go out again (same keys) and
    the one stored since, whose transaction id is below the old cursor's, is not skipped."""
    caplog.set_level(logging.WARNING, logger="driftwarden.dead_letter_topic")
    cfg, dlq, _, stores = _setup(broker, tmp_path, pg_target)
    job = DeadLetterTopic(cfg, stores[0])
    try:
        assert _drain(job) == N
        state = load_state(stores[0], CURSOR) or {}
        assert state.get("server")  # PostgreSQL tells its identity
        with stores[0].transaction():
            if restored == "another server":
                state["server"] = "1"
            else:  # the letters and the cursor carry the old server's larger transaction ids
                state["last_xid"] += 2**33
                stores[0].execute("UPDATE dead_letters SET txid = txid + ?", (2**33,))
            save_state(stores[0], CURSOR, state)
        write_dead_letters(stores[0], [DeadLetter(SOURCE, 3, 0, "not_json: new", b"new", datetime.now(UTC))], cap=BIG_CAP)
        assert _drain(job) == N + 1
    finally:
        job.close()
    keys = _keys(topic_records(broker.bootstrap, dlq, 2 * N + 1))
    assert keys == Counter({k: 2 for k in EXPECTED_KEYS}) + Counter([f"{SOURCE}/3/0".encode()])
    assert any("produced again" in r.getMessage() for r in caplog.records)



def test_letters_held_back_by_an_open_transaction_are_logged_once_per_stall(
    broker: EmbeddedBroker, tmp_path: Path, pg_target: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Another session keeps a write transaction open while letters commit: the feed
    cannot produce them. A WARNING once they have waited the bound (60 s on the injected
    clock, not before), naming how many wait, for how long and the transaction holding
    them (as ``pg_stat_activity.backend_xid`` shows it); one only, however long it lasts;
    an INFO when the feed moves again. A second stall soon after is not logged; the next
    one past :data:`STALL_REPEAT_SECONDS` is, and counts the one left out."""
    caplog.set_level(logging.INFO, logger="driftwarden.dead_letter_topic")
    cfg, dlq, _, stores = _setup(broker, tmp_path, pg_target)
    now = [1000.0]
    job = DeadLetterTopic(cfg, stores[1], stall_seconds=60, clock=lambda: now[0])
    holder = pg_target.open()  # a session of another program, left idle in a transaction

    def logged(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    def stall(partition: int, waits: list[float]) -> int:
        """A transaction held open while two letters commit; the feed runs at once, then
        after each of ``waits`` seconds of the clock, producing nothing. Returns the
        transaction's xid (the transaction ends on return)."""
        with holder.transaction():
            [row] = holder.query("SELECT CAST(CAST(pg_current_xact_id() AS TEXT) AS BIGINT) AS xid")
            letters = [DeadLetter(SOURCE, partition, i, "not_json: held", b"held", datetime.now(UTC)) for i in range(2)]
            write_dead_letters(stores[0], letters, cap=BIG_CAP)
            assert job.run_once() == 0
            for wait in waits:
                now[0] += wait
                assert job.run_once() == 0
                if wait == 61:  # the warning, if any, comes now; the other waits check it stays one
                    seen.append(logged(logging.WARNING))
        return int(row["xid"])

    seen: list[list[str]] = []
    try:
        assert _drain(job) == N
        caplog.clear()
        stall(1, [59])
        assert caplog.records == []  # under the bound
        assert job.run_once() == 2  # the transaction ended: both go out
        assert caplog.records == []  # no warning, nothing to end

        xid = stall(2, [61, 100, 100, 100])
        [warning] = seen.pop()
        assert f"{dlq}: 2 stored letter(s) held back for at least 61 s by a transaction" in warning
        assert f"the oldest one running: {xid})" in warning
        assert f"pg_stat_activity (backend_xid = '{xid % 2**32}'" in warning
        assert len(logged(logging.WARNING)) == 1  # one per stall, however long
        assert logged(logging.INFO) == []
        assert job.run_once() == 2
        [info] = logged(logging.INFO)
        assert info == f"dead-letter topic {dlq}: moving again, after 361 s held back by an open transaction"

        caplog.clear()
        stall(3, [61])  # over the bound, but within STALL_REPEAT_SECONDS of the warning
        assert job.run_once() == 2
        assert caplog.records == []
        now[0] += STALL_REPEAT_SECONDS
        stall(4, [61])
        [warning] = logged(logging.WARNING)
        assert "2 stored letter(s) held back for at least 61 s" in warning
        assert warning.endswith(" pg_prepared_xacts. 1 more stall over 60 s since the last warning went unlogged.")
        assert job.run_once() == 2
    finally:
        job.close()
        holder.close()
    held = Counter(f"{SOURCE}/{p}/{i}".encode() for p in range(1, 5) for i in range(2))
    assert _keys(topic_records(broker.bootstrap, dlq, N + 8)) == EXPECTED_KEYS + held  # each once


@pytest.mark.sqlite_only("its letters are seeded in a SQLite state dir")
def test_a_letter_too_large_for_the_topic_goes_out_without_its_payload(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A 1.1 MB payload (kept with daemon.max_payload_bytes = 2 MiB) is over the producer's
    1 MiB max_request_size: it was retried for ever and no later letter went out again."""
    from monitor.service.dead_letter_topic import PAYLOAD_DROPPED

    dlq = f"dlt-{uuid.uuid4().hex[:8]}"
    broker.create_topic(dlq)
    (tmp_path / "ref.csv").write_text("a\n1\n")
    cfg = parse_config({
        "daemon": {"state_dir": str(tmp_path / "state"), "max_payload_bytes": 2 << 20},
        "kafka": {"bootstrap_servers": [broker.bootstrap], "predictions_topic": SOURCE, "dead_letter_topic": dlq},
        "models": [{"name": "m", "reference": "ref.csv", "features": {"numerical": ["a"]}}],
    }, base_dir=tmp_path)
    store = Store.in_state_dir(tmp_path / "state")
    received = datetime.now(UTC) - timedelta(hours=1)
    payloads = [b"small 0", b"X" * 1_100_000, b"small 2", b"small 3"]
    letters = [DeadLetter(SOURCE, 0, i, "not_json: test", p, received) for i, p in enumerate(payloads)]
    cap = DeadLetterCap(per_minute=100, payloads_per_minute=100)
    assert write_dead_letters(store, letters, max_payload_bytes=2 << 20, cap=cap).stored == 4
    feed = DeadLetterTopic(cfg, store)
    try:
        assert feed.run_once() == 4
        assert feed.run_once() == 0  # nothing held back
    finally:
        feed.close()
    records = topic_records(broker.bootstrap, dlq, expect=4, timeout=20)
    by_key = {r.key: r for r in records}
    assert sorted(by_key) == [f"{SOURCE}/0/{i}".encode() for i in range(4)]
    big = by_key[f"{SOURCE}/0/1".encode()]
    assert big.value is None
    assert dict(big.headers)[PAYLOAD_DROPPED] == b"MessageSizeTooLargeError: 1100000 bytes of payload"
    assert [by_key[f"{SOURCE}/0/{i}".encode()].value for i in (0, 2, 3)] == [b"small 0", b"small 2", b"small 3"]
    store.close()
