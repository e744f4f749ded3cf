"""Opening the SQLite store: pragmas, nested transactions and migrations.

All writes go through :class:`Store.transaction`, which nests (inner blocks are
savepoints), so one window's figures and the alert transitions they cause
commit together. Writes use plain SQL through ``execute``/``executemany``:
sqlite-utils' own insert helpers wrap themselves in ``with conn:`` and would
commit an enclosing transaction early. sqlite-utils serves for reads and
introspection (``store.db``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from storage.records import iso
from storage.schema import MIGRATIONS

DB_FILENAME = "driftwarden.db"


class StorageError(RuntimeError):
    """The store cannot be written (read-only, disk full, locked too long, corrupt).

    The message names the path and SQLite's reason; callers stop consuming until
    a retry succeeds, so Kafka offsets are never committed past what was stored.
    """


class Store:
    """One SQLite database in WAL mode, shared by the daemon's threads.

    ``synchronous`` is ``FULL`` by default: a committed window survives a power
    cut, which matters because Kafka offsets are committed right after.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
        synchronous: str = "FULL",
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        self._depth = 0
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not readonly:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot configure {self.path}: {exc}") from exc
            self.migrate()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **kwargs: Any) -> Store:
        return cls(Path(state_dir) / DB_FILENAME, **kwargs)

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # -- transactions -------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """A transaction; nested calls become savepoints of the outer one.

        Raises :class:`StorageError` (and rolls back) when SQLite refuses the write.
        """
        with self._lock:
            outer = self._depth == 0
            name = f"sp{self._depth}"
            try:
                self.conn.execute("BEGIN IMMEDIATE" if outer else f"SAVEPOINT {name}")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot write {self.path}: {exc}") from exc
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
                    raise StorageError(f"cannot write {self.path}: {exc}") from exc
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
                    raise StorageError(f"cannot write {self.path}: {exc}") from exc

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._lock:
            self.conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts (reads need no transaction)."""
        with self._lock:
            cur = self.conn.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # -- migrations ---------------------------------------------------------------

    def schema_version(self) -> int:
        if not self.db["schema_version"].exists():
            return 0
        row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction. Returns the version."""
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)"
            )
        current = self.schema_version()
        for version, description, statements in MIGRATIONS:
            if version <= current:
                continue
            with self.transaction():
                for sql in statements:
                    self.conn.execute(sql)
                self.conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, iso(datetime.now(UTC))),
                )
            current = version
        return current
