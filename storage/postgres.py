"""The shared PostgreSQL store: the same tables, migrations and queries as SQLite.

Several daemon instances (one Kafka consumer group) share one database. The
interface is :class:`storage.db.Store`'s, so every query module serves both:

- a pool of connections (psycopg 3 + psycopg_pool); each thread's
  :meth:`PostgresStore.transaction` holds one connection until it ends, and
  nested calls are savepoints on it. Threads no longer wait for each other as
  they do on the single SQLite connection: the outbox lanes, the prune and the
  HTTP readers run beside the consumer's flush.
- ``execute``/``query`` outside a transaction borrow a connection for one
  autocommitted statement.
- statements are translated once (:func:`storage.dialect.to_postgres`), the
  schema too (types, the emulated ``rowid``).
- isolation is PostgreSQL's default, READ COMMITTED: what several instances may
  write at once is guarded explicitly (fencing of partition state, advisory
  locks around alert state, ``SKIP LOCKED`` outbox claims).

Every failure of the server, the network or the pool becomes a
:class:`storage.db.StorageError`, like a failing SQLite file: the daemon stops
consuming and retries, and commits no Kafka offset past what is stored.

PostgreSQL text cannot hold U+0000 (NUL), nor can json/jsonb turn ``\\u0000`` into
text: one such value fails its whole transaction, which the daemon would retry for
ever. Text from the stream is cleaned before it gets here (:mod:`storage.text`); as a
safety net, every parameter is sent with each NUL as U+FFFD, and each ``\\u0000``
escape of a JSON parameter (:class:`storage.dialect.JsonParam`: a batch, a list of
ids) as ``\\ufffd`` (:func:`_sendable`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from itertools import chain
from typing import Any

from storage.db import StorageError, Store, StoreBusy, StoreUnreachable, refuse_newer_schema
from storage.dialect import POSTGRES_DIALECT, JsonParam, mentions_rowid, to_postgres
from storage.limits import DeadLetterCap
from storage.records import iso
from storage.schema import LATEST_VERSION, MIGRATIONS, WRITER_SETTING, SqliteOnly
from storage.text import without_nul

log = logging.getLogger("driftwarden.storage")

#: Advisory lock held while migrating: instances starting together migrate once.
_MIGRATION_LOCK = 0x6472_6966_7477_6172  # "driftwar"


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo  # noqa: PLC0415

        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - not parseable: show nothing of it
        return "<unparseable database url>"
    parts.pop("password", None)
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    db = parts.get("dbname") or ""
    user = parts.get("user") or ""
    _ = make_conninfo
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{db}"


class Result:
    """What ``execute`` returns on PostgreSQL: the rows already fetched (the connection
    went back to the pool), with the ``sqlite3.Cursor`` methods the queries use."""

    __slots__ = ("rows", "rowcount", "description")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int, description: Any) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.description = description

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


#: what a refused connection says when only the config can fix it (libpq reports the
#: server's FATAL message, without a SQLSTATE, for a failed connection)
_CONFIG_FAULTS = (
    "authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
    "no password supplied", "does not support ssl", "certificate",
)


def _transient(exc: Exception) -> bool:
    """Whether a failed connection may succeed later by itself (refused, timed out, the
    server starting up or out of connection slots), as opposed to a wrong password, an
    unknown role or database, a pg_hba rule or TLS settings, which the config must fix.
    A message in another language is taken as transient: a restart loop is the safer
    mistake than a service left down."""
    text = str(exc).lower()
    return not any(fault in text for fault in _CONFIG_FAULTS)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


#: JSON's escape of U+0000 where it is one: after an even run of backslashes (after an
#: odd one, the backslash before ``u0000`` is itself escaped, and ``u0000`` is text)
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_is_str = str.__instancecheck__


def _sendable(params: Sequence[Any]) -> list[Any]:
    """``params`` as PostgreSQL can take them: each NUL in a ``str`` as U+FFFD
    (:func:`storage.text.without_nul`), each ``\\u0000`` escape in a
    :class:`~storage.dialect.JsonParam` as ``\\ufffd`` (json/jsonb refuse it). Bytes
    (``bytea``) are never changed. Cheap when there is nothing to do (the usual case): one
    look at each parameter, a C-level scan for NUL in plain text."""
    out = list(params)
    for value in out:
        if value.__class__ is str:
            if "\x00" in value:
                break
        elif isinstance(value, str):  # a JsonParam
            break
    else:
        return out
    return [_sendable_text(v) if isinstance(v, str) else v for v in out]


def _sendable_text(value: str) -> str:
    json = isinstance(value, JsonParam)
    if "\x00" in value:
        value = without_nul(value)
    if json and "\\u0000" in value:
        value = _JSON_NUL.sub(r"\1\\ufffd", value)
    return value


def _sendable_rows(rows: list[list[Any]]) -> list[list[Any]]:
    """:func:`_sendable` for the rows of an ``executemany``, cheaply (rows may be many):
    C-level passes join their text and look for NUL and ``\\u0000`` in it; the rows are
    only rebuilt when one is found."""
    text = "".join(filter(_is_str, chain.from_iterable(rows)))
    if "\x00" in text or "\\u0000" in text:
        return [_sendable(r) for r in rows]
    return rows


class PostgresStore(Store):
    """A PostgreSQL database shared by several instances.

    ``url``: a libpq URL or DSN (``postgresql://user@host:5432/db?sslmode=require``);
    ``password`` is given apart (from ``storage.password_env``/``_file``), never in
    the URL of a config file. ``pool_size``: connections at most (the consumer, the
    scheduler, one per notifier lane, HTTP readers). ``statement_timeout_ms``: a
    statement (a lock wait included) that takes longer fails with
    :class:`StorageError` instead of hanging the consumer. ``connect_timeout_s``:
    how long a new connection may take. A thread waits for a pooled connection up to
    the statement timeout while the pool is merely busy (every connection in use),
    but only ``connect_timeout_s`` while the pool's attempts to connect fail: a
    database that refuses connections is reported within seconds. ``readonly``:
    every transaction is read-only (the CLI's read commands).
    """

    def __init__(  # noqa: PLR0913 - the options of one store
        self,
        url: str,
        *,
        password: str | None = None,
        pool_size: int = 8,
        statement_timeout_ms: int = 30_000,
        connect_timeout_s: float = 10.0,
        readonly: bool = False,
        dead_letter_cap: DeadLetterCap | None = None,
        application_name: str = "driftwarden",
        migrate: bool = True,
    ) -> None:
        import psycopg  # noqa: PLC0415
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415
        from psycopg.types.numeric import NumericLoader  # noqa: PLC0415
        from psycopg_pool import ConnectionPool  # noqa: PLC0415

        self._psycopg = psycopg
        self.url = url
        self.path = None  # type: ignore[assignment] - no file
        self.dialect = POSTGRES_DIALECT
        self.dead_letter_cap = dead_letter_cap or DeadLetterCap()
        self.readonly = readonly
        self._local = threading.local()
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StorageError(f"storage.url: not a PostgreSQL URL ({exc})") from None
        options = [str(params.pop("options", "") or "")]
        options.append(f"-c statement_timeout={int(statement_timeout_ms)}")
        # tables an older version would corrupt refuse writers that do not say they know
        # this schema (storage.schema.WRITER_SETTING)
        options.append(f"-c {WRITER_SETTING}={LATEST_VERSION}")
        if readonly:
            options.append("-c default_transaction_read_only=on")
        params["options"] = " ".join(o for o in options if o)
        params.setdefault("application_name", application_name)
        params.setdefault("connect_timeout", str(max(1, int(connect_timeout_s))))
        if password is not None:
            params["password"] = password
        self._where = redact(url)

        class Numbers(NumericLoader):
            """``numeric`` (SUM of integers, ...) as int or float, like SQLite."""

            def load(self, data: Any) -> Any:
                return _number(super().load(data))

        def configure(conn: Any) -> None:
            conn.adapters.register_loader("numeric", Numbers)
            # again as a statement: a pooler in front of the server (PgBouncer with
            # ignore_startup_parameters) drops the startup options, and without the writer
            # setting the join's table refuses this session's inserts
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config(%s, %s, false)",
                (str(int(statement_timeout_ms)), WRITER_SETTING, str(LATEST_VERSION)),
            )

        try:
            # one direct attempt first: the pool would only report a timeout, this says why
            psycopg.connect(**params, autocommit=True).close()
        except psycopg.Error as exc:
            error = StoreUnreachable if _transient(exc) else StorageError
            raise error(f"cannot connect to {self._where}: {str(exc).strip()}") from None
        self._connect_wait_s = float(connect_timeout_s)
        self._busy_wait_s = max(float(connect_timeout_s), statement_timeout_ms / 1000)
        self.pool = ConnectionPool(
            kwargs={**params, "autocommit": True},
            min_size=1,
            max_size=max(1, int(pool_size)),
            open=False,
            configure=configure,
            timeout=connect_timeout_s,
            # psycopg_pool retries a lost connection with a backoff that doubles up to this
            # timeout (by default 1, 2, 4 ... 64 s over 5 minutes), and callers wait for
            # that schedule: after a long outage the pool came back up to a minute late.
            # Giving up after connect_timeout_s lets the next caller's demand connect at once.
            reconnect_timeout=max(1.0, float(connect_timeout_s)),
            name="driftwarden",
        )
        try:
            self.pool.open(wait=True, timeout=connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - PoolTimeout, OperationalError
            self.pool.close()
            raise StoreUnreachable(f"cannot connect to {self._where}: {exc}") from exc
        if migrate and not readonly:
            self.migrate()

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return self._where

    def close(self) -> None:
        self.pool.close()

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        """A pooled connection (see the class docstring for how long this waits).

        Raises :class:`psycopg_pool.PoolTimeout` (a :class:`psycopg.OperationalError`).
        """
        from psycopg_pool import PoolTimeout  # noqa: PLC0415

        deadline = time.monotonic() + self._busy_wait_s
        while True:
            errors = self.pool.get_stats().get("connections_errors", 0)
            wait = max(0.001, min(self._connect_wait_s, deadline - time.monotonic()))
            held = ExitStack()
            try:
                conn = held.enter_context(self.pool.connection(timeout=wait))
            except PoolTimeout:
                refused = self.pool.get_stats().get("connections_errors", 0) > errors
                if refused or time.monotonic() >= deadline:
                    raise
                continue  # every connection busy, none refused: keep waiting
            with held:  # the pool's own exit: commit or roll back, give the connection back
                yield conn
            return

    def _wrap(self, exc: Exception) -> StorageError:
        # a lock wait or statement cut by statement_timeout (57014), a lock not available
        # (55P03): another session held what this one needed, for now
        busy = getattr(exc, "sqlstate", None) in ("57014", "55P03")
        return (StoreBusy if busy else StorageError)(f"cannot write {self._where}: {type(exc).__name__}: {exc}".strip())

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """A transaction on this thread's connection; nested calls are savepoints.

        Raises :class:`StorageError` (and rolls back) when the server refuses.
        """
        psycopg = self._psycopg
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                with conn.transaction():
                    yield self
            except psycopg.Error as exc:
                raise self._wrap(exc) from exc
            return
        try:
            ctx = self._borrow()
            conn = ctx.__enter__()
        except psycopg.Error as exc:
            raise self._wrap(exc) from exc
        self._local.conn = conn
        failed: BaseException | None = None
        try:
            with conn.transaction():
                yield self
        except BaseException as exc:
            failed = exc
            if isinstance(exc, psycopg.Error):
                raise self._wrap(exc) from exc
            raise
        finally:
            self._local.conn = None
            try:
                if failed is None:
                    ctx.__exit__(None, None, None)
                else:
                    ctx.__exit__(type(failed), failed, failed.__traceback__)
            except psycopg.Error:
                pass

    @property
    def shared(self) -> bool:
        return True

    @property
    def in_transaction(self) -> bool:
        return getattr(self._local, "conn", None) is not None

    def _run(self, fn: Any) -> Any:
        """``fn(connection)`` on this thread's transaction, or on a borrowed connection."""
        psycopg = self._psycopg
        conn = getattr(self._local, "conn", None)
        try:
            if conn is not None:
                return fn(conn)
            with self._borrow() as c:
                return fn(c)
        except psycopg.Error as exc:
            raise self._wrap(exc) from exc

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Result:  # type: ignore[override]
        """Run one statement; text parameters are sent without NUL (:func:`_sendable`)."""
        q = to_postgres(sql, bool(params))
        args = _sendable(params) if params else None  # type: ignore[arg-type]

        def run(conn: Any) -> Result:
            with conn.cursor() as cur:
                cur.execute(q, args)
                rows = cur.fetchall() if cur.description is not None else []
                return Result([tuple(r) for r in rows], cur.rowcount, cur.description)

        return self._run(run)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` once per row (psycopg pipelines them); returns the rows changed in all.
        Text parameters are sent without NUL (:func:`_sendable_rows`)."""
        params = _sendable_rows([list(r) for r in rows])
        if not params:
            return 0
        q = to_postgres(sql, True)

        def run(conn: Any) -> int:
            with conn.cursor() as cur:
                cur.executemany(q, params)
                return max(int(cur.rowcount), 0)

        return int(self._run(run))

    def execute_batch(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One set-based statement, the rows as one JSON parameter (``dialect.batch_params``):
        about half the cost a row of the pipelined :meth:`executemany`."""
        return max(int(self.execute(sql, (self.dialect.batch_params(rows),)).rowcount), 0)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts; the emulated ``rowid`` only when the query names it."""
        res = self.execute(sql, params)
        names = [d[0] for d in res.description or ()]
        out = [dict(zip(names, row, strict=True)) for row in res.rows]
        if "rowid" in names and not mentions_rowid(sql):
            for r in out:
                r.pop("rowid", None)
        return out

    def table_exists(self, name: str) -> bool:
        rows = self.query("SELECT to_regclass(?) IS NOT NULL AS present", (f'"{name}"',))
        return bool(rows and rows[0]["present"])

    def columns(self, table: str) -> list[str]:
        """The columns of ``table``, in order, without the emulated ``rowid``."""
        rows = self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [r["column_name"] for r in rows if r["column_name"] != "rowid"]

    def page_cache(self, kib: int) -> None:
        """The server's shared buffers serve every connection: nothing to set per connection."""

    def lock(self, *keys: str) -> None:
        """Transaction-scoped advisory locks on ``keys`` (sorted, so two callers never
        wait for each other in a circle); released at commit or rollback."""
        if not self.in_transaction:
            raise StorageError("store.lock() needs a transaction")
        for key in sorted(set(keys)):
            self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))

    # -- migrations ---------------------------------------------------------------

    def schema_version(self) -> int:
        rows = self.query("SELECT to_regclass('schema_version') IS NOT NULL AS present")
        if not rows or not rows[0]["present"]:
            return 0
        return int(self.query("SELECT MAX(version) AS v FROM schema_version")[0]["v"] or 0)

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction, under an advisory lock
        so that instances starting at once do not race (the second finds them applied)."""
        with self.transaction():
            self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            self.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)"
            )
        current = self.schema_version()
        refuse_newer_schema(current, self._where)
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():
                self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
                if self.query("SELECT 1 FROM schema_version WHERE version = ?", (version,)):
                    current = version
                    continue
                for sql in statements:  # PostgresOnly ones too
                    if not isinstance(sql, SqliteOnly):
                        self.execute(sql)
                self.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, iso(datetime.now(UTC))),
                )
            current = version
        return current

    # -- what a file has and a server does not ------------------------------------------

    def auto_vacuum_mode(self) -> str:
        """The server vacuums by itself (autovacuum): nothing for the prune to do."""
        return "server"

    def ensure_incremental_vacuum(self) -> bool:
        return False

    def freelist_count(self) -> int:
        return 0

    def incremental_vacuum(self, pages: int) -> int:
        return 0

    def checkpoint(self, *, wait_ms: int = 200) -> bool:
        return True

    def size_on_disk(self) -> dict[str, int]:
        """Bytes of the database on the server (``db``; ``wal`` is the server's business: 0)."""
        try:
            rows = self.query("SELECT pg_database_size(current_database()) AS n")
        except StorageError:
            return {"db": 0, "wal": 0}
        return {"db": int(rows[0]["n"]), "wal": 0}
