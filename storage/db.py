"""The store's interface, and its SQLite implementation: pragmas, nested transactions, migrations.

:class:`Store` is what every query module in ``storage/`` talks to, on SQLite (this
module, the embedded default) or PostgreSQL (:class:`storage.postgres.PostgresStore`,
shared by several instances); :mod:`storage.dialect` says how one copy of the SQL
serves both.

All writes go through :class:`Store.transaction`, which nests (inner blocks are
savepoints), so one window's figures and the alert transitions they cause
commit together. Writes use plain SQL through ``execute``/``executemany``.
Plain ``sqlite3`` throughout: opening a store imports nothing heavy, so read
commands answer at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.dialect import SQLITE_DIALECT, Dialect
from storage.limits import DeadLetterCap
from storage.records import iso
from storage.schema import LATEST_VERSION, MIGRATIONS, PostgresOnly

DB_FILENAME = "driftwarden.db"

#: After a checkpoint the WAL file is cut back to this size (bytes): a burst of
#: writes (a big prune, a flood) must not leave a large WAL behind for good.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


class StorageError(RuntimeError):
    """The store cannot be written (read-only, disk full, locked too long, corrupt).

    The message names the path and SQLite's reason; callers stop consuming until
    a retry succeeds, so Kafka offsets are never committed past what was stored.
    """


class StoreUnreachable(StorageError):
    """The shared database cannot be reached now (refused, timed out, starting up, out
    of connection slots): it may come back by itself, unlike a wrong password or a
    database that does not exist (a plain :class:`StorageError`)."""


class StoreBusy(StorageError):
    """Another process held the store longer than this one waited (SQLite's busy
    timeout; on PostgreSQL a lock wait or statement cut by ``statement_timeout``): it
    passes by itself, e.g. a migration another instance runs, a backup, a long query."""


def _uri(path: Path, query: str = "") -> str:
    """``path`` as an SQLite ``file:`` URI (with ``query``, e.g. ``mode=ro``): its ``%``,
    ``?`` and ``#`` escaped, which a URI otherwise reads as an escape, the query and the
    fragment (a state dir ``run#2`` opened the file ``run``)."""
    return "file:" + urllib.parse.quote(str(path), safe="/") + (f"?{query}" if query else "")


def _identity(path: Path) -> tuple[int, int]:
    """``path``'s file as (device, inode); raises :class:`OSError` (e.g. not there)."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _sqlite_error(exc: sqlite3.Error, message: str) -> StorageError:
    """``message`` as a :class:`StoreBusy` when SQLite says the database is busy or
    locked, else as a plain :class:`StorageError`."""
    busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return (StoreBusy if busy else StorageError)(message)


class SchemaTooNew(StorageError):
    """The store was migrated by a newer driftwarden than this one: writing it could break
    what the newer version relies on, so this version refuses to open it for writing."""


#: what each kind of storage failure is called where its message may not be shown
_BRIEFLY: dict[type[StorageError], str] = {
    StoreUnreachable: "the store cannot be reached",
    StoreBusy: "the store is locked or busy",
    SchemaTooNew: "the store was migrated by a newer version",
    StorageError: "the store refused a read or a write",
}


def brief_reason(exc: StorageError) -> str:
    """``exc`` for an answer to a client that may not see where the store is: the name of
    its kind (the nearest of the classes above) and a fixed phrase, at most ~60
    characters. Never the message: that names the SQLite path or the PostgreSQL host,
    role and database, and quotes the driver's text (which may quote stored values)."""
    kind = next(k for k in type(exc).__mro__ if k in _BRIEFLY)
    return f"{kind.__name__}: {_BRIEFLY[kind]}"


def refuse_newer_schema(version: int, where: str) -> None:
    """Raise :class:`SchemaTooNew` when ``version`` (the store's) is past this code's newest."""
    if version > LATEST_VERSION:
        raise SchemaTooNew(
            f"{where} is at schema version {version}, newer than this driftwarden knows (up to"
            f" {LATEST_VERSION}): a newer version migrated it. Run that version (or a later one);"
            " an older version must not write a store a newer one migrated"
        )


class Store:
    """One SQLite database in WAL mode, shared by the daemon's threads.

    ``synchronous`` is ``FULL`` by default: a committed window survives a power
    cut, which matters because Kafka offsets are committed right after.

    A new database is created with ``auto_vacuum = INCREMENTAL`` (pages freed by
    the retention prune can be given back to the file system); one created
    before that switches once, by :meth:`ensure_incremental_vacuum`.
    ``dead_letter_cap`` is the volume cap :func:`storage.dead_letters.write_dead_letters`
    applies (defaults from :mod:`storage.limits`).

    A write transaction (``BEGIN IMMEDIATE``) excludes every other writer of the
    file, so :meth:`lock` has nothing to do and ``dialect.for_update`` /
    ``dialect.skip_locked`` are empty here.
    """

    dialect: Dialect = SQLITE_DIALECT

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        synchronous: str = "FULL",
        readonly: bool = False,
        dead_letter_cap: DeadLetterCap | None = None,
        migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self.dead_letter_cap = dead_letter_cap or DeadLetterCap()
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = _uri(self.path, "mode=ro" if readonly else "")
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        #: the file this connection writes, as (device, inode); None: read-only
        self._file: tuple[int, int] | None = None
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if readonly:
            try:  # the first read of the file: not a database (or damaged) says so here
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as exc:
                conn.close()
                conn = self.conn = self._immutable(exc, busy_timeout_ms)
        if not readonly:
            deadline = time.monotonic() + busy_timeout_ms / 1000
            while True:
                try:
                    _configure(conn, synchronous)
                    break
                except sqlite3.OperationalError as exc:
                    # a new file another process is setting up at the same moment: switching
                    # it to WAL answers "database is locked" at once, without the busy wait
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise _sqlite_error(exc, f"cannot configure {self.path}: {exc}") from exc
                    time.sleep(0.02)
                except sqlite3.Error as exc:
                    raise _sqlite_error(exc, f"cannot configure {self.path}: {exc}") from exc
            self._file = _identity(self.path)
            if migrate:  # False: a writer (the CLI's silences) that must not upgrade the schema
                self.migrate()

    def _immutable(self, first: sqlite3.Error, busy_timeout_ms: int) -> sqlite3.Connection:
        """A read of a copy SQLite cannot open read-only as it is: in WAL mode it must create
        its ``-shm`` file beside it, which a read-only filesystem or a folder this user may not
        write refuses. A copy (no ``-shm`` file: no process has it open; no ``-wal`` file
        holding commits) is all in its database file, which SQLite then reads as immutable
        (no ``-shm``, no locks); otherwise ``first``."""
        wal = self.path.with_name(self.path.name + "-wal")
        shm = self.path.with_name(self.path.name + "-shm")
        try:
            a_copy = not shm.exists() and (not wal.exists() or wal.stat().st_size == 0)
        except OSError:
            a_copy = False
        if a_copy and self.path.is_file():
            try:
                conn = sqlite3.connect(_uri(self.path, "mode=ro&immutable=1"), uri=True, isolation_level=None,
                                       check_same_thread=False, timeout=busy_timeout_ms / 1000)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.Error:
                pass
        raise _sqlite_error(first, f"cannot read {self.path}: {first}") from first

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **kwargs: Any) -> Store:
        return cls(Path(state_dir) / DB_FILENAME, **kwargs)

    def close(self, timeout: float | None = None) -> None:
        """Close the connection once no other thread uses it; ``timeout``: wait for that
        at most this long, then leave it open (a stop while a scheduler job waits on a
        locked database: the process is ending, the lock goes with it)."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return
        try:
            self.conn.close()
        finally:
            self._lock.release()

    @property
    def where(self) -> str:
        """The database, for messages."""
        return str(self.path)

    @property
    def shared(self) -> bool:
        """Whether other live instances may use this store at the same time (not SQLite:
        one instance per file)."""
        return False

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (on SQLite: by any thread; they share one connection)."""
        return self._depth > 0

    def table_exists(self, name: str) -> bool:
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
        return row is not None

    def columns(self, table: str) -> list[str]:
        """The column names of ``table`` (empty when there is no such table)."""
        with self._lock:
            return [r[1] for r in self.conn.execute("SELECT * FROM pragma_table_info(?)", (table,))]

    def page_cache(self, kib: int) -> None:
        """Let this connection cache up to ``kib`` KiB of database pages (SQLite's default
        is 2 MiB; the label join's random updates want its index's inner pages kept)."""
        with self._lock:
            self.conn.execute(f"PRAGMA cache_size = -{int(kib)}")

    def lock(self, *keys: str) -> None:
        """Serialize read-modify-write sections between instances sharing the store
        (see :mod:`storage.dialect`). One SQLite writer excludes all others: nothing to do."""
        if not self._depth:
            raise StorageError("store.lock() needs a transaction")

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """A transaction; nested calls become savepoints of the outer one.

        Raises :class:`StorageError` (and rolls back) when SQLite refuses the write.
        """
        with self._lock:
            outer = self._depth == 0
            name = f"sp{self._depth}"
            if outer:
                self._check_file()
            try:
                self.conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
            except sqlite3.Error as exc:
                raise _sqlite_error(exc, f"cannot write {self.path}: {exc}") from exc
            self._depth += 1
            try:
                yield self
            except BaseException as exc:
                self._depth -= 1
                try:
                    if outer:
                        self.conn.execute("ROLLBACK")
                    else:
                        self.conn.execute(f"ROLLBACK TO {name}")
                        self.conn.execute(f"RELEASE {name}")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise _sqlite_error(exc, f"cannot write {self.path}: {exc}") from exc
                raise
            else:
                self._depth -= 1
                try:
                    self.conn.execute("COMMIT" if outer else f"RELEASE {name}")
                except sqlite3.Error as exc:
                    if outer:
                        try:
                            self.conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    raise _sqlite_error(exc, f"cannot write {self.path}: {exc}") from exc

    def _check_file(self) -> None:
        """Raise :class:`StorageError` when the file at :attr:`path` is no longer the one
        this connection writes: deleted (the state dir removed under a running daemon) or
        replaced (another file copied or moved there). SQLite goes on writing into the file
        it has open, unlinked or not, and says nothing: the daemon looked healthy and
        committed Kafka offsets for what only that file held, which the next start (opening
        the path) never sees. One ``stat`` per write transaction."""
        if self._file is None:
            return
        try:
            now: tuple[int, int] | None = _identity(self.path)
        except FileNotFoundError:
            now = None
        except OSError:  # cannot tell (a permission taken away): the write itself says
            return
        if now != self._file:
            raise StorageError(
                f"cannot write {self.path}: the database file was deleted or replaced while this"
                f" process had it open ({'no file there now' if now is None else 'another file there now'});"
                " what is written to the open one would be lost at the next start. Restart"
                " driftwarden (Kafka offsets were committed only up to what that file holds)"
            )

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run ``sql`` once per row; returns the rows it changed in all (an insert
        skipped by ``ON CONFLICT DO NOTHING`` changes none)."""
        with self._lock:
            return self.conn.executemany(sql, rows).rowcount

    def execute_batch(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run a batch statement built with :meth:`Dialect.batch_rows
        <storage.dialect.Dialect.batch_rows>` or ``batch_update`` over ``rows``: here once
        per row (SQLite reads parameters faster than JSON); :class:`PostgresStore` runs it
        once with the rows as one JSON parameter. Returns the rows changed."""
        return self.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts (reads need no transaction). A read that fails (a lock held past the
        busy timeout, a damaged file) raises :class:`StorageError`, as a write does: the
        HTTP layer answers 503 and /metrics says the store is unreadable, not a 500."""
        with self._lock:
            try:
                cur = self.conn.execute(sql, params)
                names = [d[0] for d in cur.description or ()]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            except sqlite3.Error as exc:
                raise _sqlite_error(exc, f"cannot read {self.path}: {exc}") from exc

    # -- migrations ---------------------------------------------------------------

    def schema_version(self) -> int:
        if not self.table_exists("schema_version"):
            return 0
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction. Returns the version.

        Processes opening one new file at once do not race: each migration's transaction
        holds the write lock and skips a version another process applied meanwhile
        (before, the second died on ``UNIQUE constraint failed: schema_version.version``)."""
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)"
            )
        current = self.schema_version()
        refuse_newer_schema(current, str(self.path))
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():  # BEGIN IMMEDIATE: one process migrates at a time
                # another process opening the same new file (a CLI command while the daemon
                # starts) may have applied it since ``current`` was read
                if self.conn.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,)).fetchone():
                    current = version
                    continue
                for sql in statements:
                    if not isinstance(sql, PostgresOnly):
                        self.conn.execute(sql)
                self.conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, iso(datetime.now(UTC))),
                )
            current = version
        return current

    # -- file size: vacuum and checkpoints ---------------------------------------------

    def auto_vacuum_mode(self) -> str:
        """``none``, ``full`` or ``incremental`` (SQLite's ``PRAGMA auto_vacuum``)."""
        with self._lock:
            mode = int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        return {0: "none", 1: "full", 2: "incremental"}.get(mode, str(mode))

    def ensure_incremental_vacuum(self) -> bool:
        """Switch a database created without incremental auto-vacuum, once.

        SQLite can only change the mode by rebuilding the file (``VACUUM``), which
        cannot run inside a transaction and needs free disk space about the size of
        the database: call it at start-up, before other threads use the store.
        Returns True when the file was rebuilt; on failure (disk full, locked) it
        logs nothing itself, raises :class:`StorageError`, and the database stays
        as it was (pruned rows' pages are then reused, not given back).
        """
        with self._lock:
            if self._depth:
                raise StorageError(f"cannot vacuum {self.path} inside a transaction")
            if int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
                return False
            try:
                self.conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self.conn.execute("VACUUM")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot vacuum {self.path}: {exc}") from exc
            return int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2

    def freelist_count(self) -> int:
        """Unused pages inside the database file."""
        with self._lock:
            return int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])

    def incremental_vacuum(self, pages: int) -> int:
        """Give up to ``pages`` free pages back to the file system; returns how many.

        One short write of its own (not inside a transaction); a no-op unless the
        database is in incremental auto-vacuum mode. The file shrinks on disk at the
        next checkpoint (the freed pages are written through the WAL first).
        """
        with self._lock:
            if self._depth:
                raise StorageError(f"cannot vacuum {self.path} inside a transaction")
            before = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
            try:
                # executescript steps the pragma to the end; execute() frees one page only
                self.conn.executescript(f"PRAGMA incremental_vacuum({max(int(pages), 1)});")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot vacuum {self.path}: {exc}") from exc
            after = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        return max(before - after, 0)

    def checkpoint(self, *, wait_ms: int = 200) -> bool:
        """Copy the WAL into the database and truncate the WAL file to zero bytes.

        Waits at most ``wait_ms`` for readers of other connections (a CLI command)
        to let go; returns False when it could not finish (the WAL is then cut back
        at a later checkpoint, see :data:`JOURNAL_SIZE_LIMIT`).
        """
        with self._lock:
            if self._depth:
                raise StorageError(f"cannot checkpoint {self.path} inside a transaction")
            timeout = int(self.conn.execute("PRAGMA busy_timeout").fetchone()[0])
            try:
                self.conn.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
                busy, _log, _done = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot checkpoint {self.path}: {exc}") from exc
            finally:
                self.conn.execute(f"PRAGMA busy_timeout = {timeout}")
        return not busy

    def size_on_disk(self) -> dict[str, int]:
        """Bytes of the database file and its WAL (``db``, ``wal``; 0 when absent)."""
        out = {}
        for name, suffix in (("db", ""), ("wal", "-wal")):
            try:
                out[name] = (self.path.parent / (self.path.name + suffix)).stat().st_size
            except OSError:
                out[name] = 0
        return out


def _configure(conn: sqlite3.Connection, synchronous: str) -> None:
    """A writer's settings: incremental auto-vacuum (a new file only: it takes effect before
    the first table exists), WAL, the journal size limit, ``synchronous``, foreign keys."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
