"""Where a test's store lives: a SQLite file or a database on the test PostgreSQL server.

The ``store_target`` fixture (tests/conftest.py) is parametrized over both kinds,
so every test that takes it runs against SQLite and PostgreSQL. A target can be
opened several times (a restart), gives the ``[storage]`` table a daemon's config
needs to use it, and can hand out more fresh stores (one per hypothesis example).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.db import Store

SQLITE_ONLY = ("synchronous", "busy_timeout_ms")


class StoreTarget:
    kind: str = ""

    def open(self, **kw: Any) -> Store:
        raise NotImplementedError

    def storage_toml(self) -> str:
        """The ``[storage]`` table a daemon config needs for this store ("" for SQLite)."""
        return ""

    def fresh(self) -> StoreTarget:
        """Another, empty target of the same kind."""
        raise NotImplementedError

    def cli_args(self, folder: Path) -> tuple[str, str]:
        """How the command line is pointed at this store: ``--state-dir DIR`` (SQLite) or
        ``-c FILE``, a config (written into ``folder``) whose ``[storage] url`` is this
        database on the test PostgreSQL."""
        raise NotImplementedError

    def reader(self) -> Store:
        """One store kept open for repeated reads while daemons write (closed by close())."""
        if getattr(self, "_reader", None) is None:
            self._reader = self.open(readonly=True)
        return self._reader

    def close(self) -> None:
        """Drop what the target created (databases on the server)."""
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()
            self._reader = None


class SqliteTarget(StoreTarget):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._n = 0

    def open(self, **kw: Any) -> Store:
        return Store(self.path, **kw)

    def fresh(self) -> SqliteTarget:
        self._n += 1
        return SqliteTarget(self.path.parent / f"fresh-{self._n}" / self.path.name)

    def cli_args(self, folder: Path) -> tuple[str, str]:
        return ("--state-dir", str(self.path.parent))

    def __repr__(self) -> str:
        return f"SqliteTarget({self.path})"


class PostgresTarget(StoreTarget):
    kind = "postgres"

    def __init__(self, create: Callable[[], str], url: Callable[[str], str], drop: Callable[[str], None]) -> None:
        self._create, self._url, self._drop = create, url, drop
        self.database = create()
        self._children: list[PostgresTarget] = []
        self._opened: list[Store] = []

    @property
    def url(self) -> str:
        return self._url(self.database)

    def open(self, **kw: Any) -> Store:
        from storage.postgres import PostgresStore  # noqa: PLC0415

        for key in SQLITE_ONLY:
            kw.pop(key, None)
        kw.setdefault("pool_size", 4)
        store = PostgresStore(self.url, **kw)
        self._opened.append(store)
        return store

    def admin(self, sql: str) -> None:
        """``sql`` as the superuser on the server's maintenance database."""
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self._url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    @contextmanager
    def refusing_connections(self) -> Iterator[None]:
        """An outage of this database: its connections are cut and new ones refused
        until the block ends (the server itself stays up for the other tests)."""
        db = self.database
        self.admin(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        try:
            self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
            yield
        finally:
            self.admin(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')

    def storage_toml(self) -> str:
        url = self.url.replace("postgres:@", "postgres@")
        return f'\n[storage]\nurl = "{url}"\npool_size = 4\n'

    def cli_args(self, folder: Path) -> tuple[str, str]:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ref.csv").write_text("age,prediction\n1,0.5\n")
        cfg = folder / "pg.toml"
        cfg.write_text(
            self.storage_toml()
            + '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
        )
        return ("-c", str(cfg))

    def fresh(self) -> PostgresTarget:
        child = PostgresTarget(self._create, self._url, self._drop)
        self._children.append(child)
        return child

    def close(self) -> None:
        super().close()
        for child in self._children:
            child.close()
        for store in self._opened:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closed by the test already
                pass
        self._drop(self.database)

    def __repr__(self) -> str:
        return f"PostgresTarget({self.database})"
