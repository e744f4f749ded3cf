"""Where a test's store lives: a SQLite file or a database on the test PostgreSQL server.

The ``store_target`` fixture (tests/conftest.py) is parametrized over both kinds,
so every test that takes it runs against SQLite and PostgreSQL. A target can be
opened several times (a restart), gives the ``[storage]`` table a daemon's config
needs to use it, and can hand out more fresh stores (one per hypothesis example).

``DRIFTWARDEN_TEST_STORE=postgres`` runs the whole suite with PostgreSQL as the store
(README "Development"): ``store_target`` is then PostgreSQL only, and each state dir a
test uses gets a database of its own on the session's server, standing in for the
state dir's SQLite file: :func:`state_target`, :func:`open_state_store` and
:func:`state_storage_toml` say where a state dir's store is in either mode, so a
test written for the default store runs unchanged on PostgreSQL. Tests about SQLite
itself carry ``@pytest.mark.sqlite_only("why")`` and are skipped in that mode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage.db import DB_FILENAME, Store

SQLITE_ONLY = ("synchronous", "busy_timeout_ms")

#: the store of the tests that do not choose one: "sqlite" (default) or "postgres"
TEST_STORE = os.environ.get("DRIFTWARDEN_TEST_STORE", "") or "sqlite"
PG_MODE = TEST_STORE == "postgres"


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

    @property
    def config_url(self) -> str:
        """The url as ``[storage] url`` (or ``DRIFTWARDEN_STORAGE__URL``) takes it: no empty password."""
        return self.url.replace("postgres:@", "postgres@")

    def storage_toml(self) -> str:
        return f'\n[storage]\nurl = "{self.config_url}"\npool_size = 4\n'

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


# -- DRIFTWARDEN_TEST_STORE=postgres: each state dir's store on the test PostgreSQL ---------


class StateDirStores:
    """The database standing in for each state dir's SQLite file (PostgreSQL mode): one
    fresh database per state dir, the same one every time the dir is named again (the
    daemon's config, the test's reads, a restart)."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._targets: dict[Path, PostgresTarget] = {}

    def target(self, db_file: Path) -> PostgresTarget:
        key = Path(db_file).resolve()
        if key not in self._targets:
            self._targets[key] = PostgresTarget(
                self._server.create_database, self._server.url, self._server.recycle_database
            )
        return self._targets[key]

    def mark(self) -> set[Path]:
        return set(self._targets)

    def release(self, keep: set[Path]) -> None:
        """Close the databases of the state dirs named since ``keep`` was taken."""
        for key in [k for k in self._targets if k not in keep]:
            self._targets.pop(key).close()


_state_dirs: StateDirStores | None = None


def install_state_dir_stores(stores: StateDirStores | None) -> None:
    """Set (PostgreSQL mode, by the session fixture in tests/conftest.py) or clear the registry."""
    global _state_dirs  # noqa: PLW0603 - one registry per test process
    _state_dirs = stores


def _db_file(where: Path) -> Path:
    """The SQLite file of ``where``: a state dir, or a database file (``….db``) itself."""
    where = Path(where)
    return where if where.suffix == ".db" else where / DB_FILENAME


def state_target(where: Path) -> StoreTarget:
    """The store of a state dir (``where``: the dir or its ``driftwarden.db``): its SQLite
    file, or in PostgreSQL mode the database standing in for it."""
    if PG_MODE:
        if _state_dirs is None:
            raise RuntimeError("DRIFTWARDEN_TEST_STORE=postgres but no PostgreSQL server was started")
        return _state_dirs.target(_db_file(where))
    return SqliteTarget(_db_file(where))


def open_state_store(where: Path, **kw: Any) -> Store:
    """``Store(where)`` of the default store: the state dir's SQLite file, or its database
    in PostgreSQL mode (SQLite-only options dropped there)."""
    return state_target(where).open(**kw)


def state_has_store(where: Path) -> bool:
    """Whether the state dir's store exists yet (a PostgreSQL stand-in always does)."""
    target = state_target(where)
    return not isinstance(target, SqliteTarget) or target.path.exists()


#: ``[storage]`` naming SQLite explicitly (``url = ""``): for the SQLite side of a test that
#: compares both stores, SQLite in either mode
SQLITE_STORAGE_TOML = '\n[storage]\nurl = ""\n'


def state_storage_toml(state_dir: Path) -> str:
    """The ``[storage]`` table a daemon config using ``state_dir`` needs: "" (SQLite), or in
    PostgreSQL mode the url of the database standing in for the dir."""
    return state_target(state_dir).storage_toml() if PG_MODE else ""


def state_cli_args(state_dir: Path, folder: Path) -> tuple[str, str]:
    """How the command line reads a state dir's store: ``--state-dir DIR``, or in PostgreSQL
    mode ``-c FILE`` (a config written into ``folder`` naming the dir's database)."""
    return state_target(state_dir).cli_args(folder) if PG_MODE else ("--state-dir", str(state_dir))


def state_env(state_dir: Path) -> dict[str, str]:
    """The environment that points a daemon of the default store at ``state_dir``'s store:
    nothing (SQLite), or in PostgreSQL mode ``DRIFTWARDEN_STORAGE__URL`` (for a config the
    test does not write, as ``docker run -e`` would)."""
    if not PG_MODE:
        return {}
    target = state_target(state_dir)
    assert isinstance(target, PostgresTarget)
    return {"DRIFTWARDEN_STORAGE__URL": target.config_url}


def age_instance(store: Store, instance: str, by: timedelta, now: datetime) -> None:
    """Make ``instance``'s announcement (storage.instances) ``by`` older than the store's
    time (the server's on PostgreSQL, ``now`` on SQLite): an instance that stopped
    announcing that long ago."""
    from storage.instances import PREFIX, store_time  # noqa: PLC0415
    from storage.records import iso  # noqa: PLC0415

    with store.transaction():
        store.execute("UPDATE stream_state SET updated_at = ? WHERE name = ?",
                      (iso(store_time(store, now) - by), PREFIX + instance))
